"""Files of an instance on the cluster, over SFTP (no shell): folders, log tails, the energy collector's output.

Pure I/O helpers of the workflow engine, each a single SFTP conversation; nothing here knows the database.
"""
from __future__ import annotations

import io
import stat
import zipfile
from functools import lru_cache
from pathlib import Path

from ..clusters.connector import ClusterConnector


@lru_cache(maxsize=1)
def collector_zipapp() -> bytes:
    """heroes_energy as an executable zip (``python3 heroes_energy.pyz --out DIR -- CMD``): only the
    standard library is needed on the cluster, and the step's own PYTHONPATH is left alone."""
    import heroes_energy

    package = Path(heroes_energy.__file__).parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__main__.py", "import sys\nfrom heroes_energy.collect import main\nsys.exit(main())\n")
        for source in sorted(package.glob("*.py")):
            archive.write(source, f"heroes_energy/{source.name}")
    return buffer.getvalue()


def fetch_energy_files(conn: ClusterConnector, folder: str, max_bytes: int, max_files: int = 100) -> dict[str, bytes]:
    """The regular ``*.csv`` files of a step's energy folder (name -> content; symlinks are not followed); {}
    when the folder is absent. The step writes that folder, so ValueError when the files exceed ``max_bytes``
    in all or ``max_files`` in number: everything is held in memory for the ingestion."""
    with conn.sftp() as sftp:
        try:
            entries = sftp.listdir_attr(folder)
        except FileNotFoundError:
            return {}
        chosen = sorted((e for e in entries if e.filename.endswith(".csv") and stat.S_ISREG(e.st_mode or 0)),
                        key=lambda e: e.filename)
        total = sum(e.st_size or 0 for e in chosen)
        if len(chosen) > max_files or total > max_bytes:
            raise ValueError(f"{len(chosen)} file(s) of {total} bytes in all, more than the {max_files} files or "
                             f"{max_bytes} bytes fetched for ingestion")
        files: dict[str, bytes] = {}
        for entry in chosen:
            with sftp.open(f"{folder}/{entry.filename}", "rb") as handle:
                handle.prefetch(entry.st_size)
                data = handle.read(max_bytes + 1)
            max_bytes -= len(data)
            if max_bytes < 0:
                raise ValueError(f"{entry.filename} grew past the {total} bytes listed while it was read")
            files[entry.filename] = data
    return files


def mkdirs(conn: ClusterConnector, folders: list[str]) -> None:
    """``mkdir -p`` over SFTP (no shell): each missing component is created in order."""
    with conn.sftp() as sftp:
        made: set[str] = set()
        for folder in folders:
            parts = folder.split("/")
            for i in range(1, len(parts) + 1):
                path = "/".join(parts[:i])
                if not path or path in made:
                    continue
                try:
                    sftp.stat(path)
                except FileNotFoundError:
                    try:
                        sftp.mkdir(path, 0o750)
                    except OSError:
                        sftp.stat(path)  # created concurrently by another instance: fine
                made.add(path)


def read_tail(conn: ClusterConnector, path: str, size: int) -> str:
    with conn.sftp() as sftp:
        try:
            with sftp.open(path, "rb") as handle:
                total = handle.stat().st_size or 0
                handle.seek(max(0, total - size))
                return handle.read(size).decode(errors="replace")
        except FileNotFoundError:
            return ""

