"""heroes-sdk stands on its own (a laptop, a CI runner): its wheel holds only heroes_sdk with a ``heroes``
command, and its modules import nothing of the gateway (service, stack, apps) nor anything undeclared."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "heroes_sdk"
#: what sdk/pyproject.toml declares (requests, tqdm, pyyaml; pandas and plotly in the notebook extra)
DECLARED = {"requests", "urllib3", "tqdm", "yaml", "pandas", "plotly", "IPython"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_sdk_imports_only_the_standard_library_and_its_declared_dependencies():
    for path in SDK.glob("*.py"):
        foreign = {r for r in imported_roots(path) - DECLARED - {"__future__"} if r not in sys.stdlib_module_names}
        assert not foreign, f"{path.name} imports {sorted(foreign)}"
    text = (ROOT / "sdk" / "pyproject.toml").read_text()
    for requirement in ("requests", "tqdm", "pyyaml", "pandas", "plotly"):
        assert f'"{requirement}>=' in text


def test_the_wheel_holds_the_sdk_and_its_command(tmp_path):
    source = tmp_path / "src"  # a copy: setuptools leaves build/ and *.egg-info next to what it builds
    shutil.copytree(ROOT / "sdk", source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    # no build isolation: the test venv's setuptools and wheel build it, nothing is downloaded mid-test
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            str(source), "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = tmp_path.glob("heroes_sdk-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"heroes_sdk"} and "heroes_sdk/cli.py" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "heroes = heroes_sdk.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
