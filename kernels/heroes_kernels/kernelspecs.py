"""Kernelspecs per cluster profile, and publishing this package to the single-user servers.

The single-user venv is built separately (dev/heroes_dev/components/jupyterhub.py), so the hub
publishes ``heroes_kernels`` into a world-readable directory that goes on the servers' PYTHONPATH,
with a ``.dist-info`` whose ``entry_points.txt`` registers the provisioner (jupyter_client finds
provisioners by entry point, and importlib.metadata reads dist-infos from any sys.path entry).
Kernelspecs are written per organization (its enrolled clusters x the profiles below) into a directory
the server gets as ``JUPYTER_PATH``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

PROVISIONER = "heroes-slurm-provisioner"
ENTRY_POINT = "heroes_kernels.provisioner:SlurmKernelProvisioner"
VERSION = "0.1.0"
#: name -> (what the user reads, resources of the job)
PROFILES = {
    "small": ("1 core, 1 GB, 1 h", {"cores": 1, "memory_mb": 1024, "minutes": 60}),
    "large": ("2 cores, 2 GB, 4 h", {"cores": 2, "memory_mb": 2048, "minutes": 240}),
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def kernelspec(cluster: str, profile: str) -> dict:
    """kernel.json of 'Python 3 on <cluster> (<profile>)'."""
    label, resources = PROFILES[profile]
    return {
        "argv": ["remote-ipykernel", "-f", "{connection_file}"],  # not run: the provisioner starts the job
        "display_name": f"Python 3 on {cluster} (Slurm, {label})",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"kernel_provisioner": {"provisioner_name": PROVISIONER,
                                            "config": {"cluster": cluster, **resources}}},
    }


def spec_name(cluster: str, profile: str) -> str:
    return f"heroes-{cluster.lower()}-{profile}"


def _replace_dir(target: Path, fill) -> None:
    """Build a directory next to ``target`` and swap it in (readers never see half of it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(tmp)
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        old = target.with_name(f".{target.name}-old")
        if target.exists():
            os.replace(target, old) if not old.exists() else shutil.rmtree(target)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_kernelspecs(root: Path, clusters: list[str]) -> list[str]:
    """``root/kernels/<spec>/kernel.json`` for every cluster x profile; returns the spec names."""
    names = []

    def fill(tmp: Path) -> None:
        for cluster in sorted(set(clusters)):
            if not _NAME.match(cluster):
                continue
            for profile in PROFILES:
                folder = tmp / spec_name(cluster, profile)
                folder.mkdir(parents=True)
                (folder / "kernel.json").write_text(json.dumps(kernelspec(cluster, profile), indent=1))
                names.append(folder.name)

    _replace_dir(Path(root) / "kernels", fill)
    return names


def publish(lib: Path) -> Path:
    """Copy this package and its entry-point metadata into ``lib`` (a PYTHONPATH entry)."""
    source = Path(__file__).resolve().parent

    def fill(tmp: Path) -> None:
        shutil.copytree(source, tmp / "heroes_kernels", ignore=shutil.ignore_patterns("__pycache__"))
        info = tmp / f"heroes_kernels-{VERSION}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: heroes-kernels\nVersion: {VERSION}\n")
        (info / "entry_points.txt").write_text(
            f"[jupyter_client.kernel_provisioners]\n{PROVISIONER} = {ENTRY_POINT}\n")
        (info / "top_level.txt").write_text("heroes_kernels\n")

    _replace_dir(Path(lib), fill)
    return Path(lib)
