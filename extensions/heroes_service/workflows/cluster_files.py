"""Files of an instance on the cluster: its folders and energy collector (one SSH command, usually the step's
own ``sbatch``), log tails and the collector's output (SFTP, no shell).

Pure I/O helpers of the workflow engine; nothing here knows the database.
"""
from __future__ import annotations

import hashlib
import io
import stat
import threading
import zipfile
from functools import lru_cache
from pathlib import Path

from ..clusters.connector import ClusterConnector

#: Fixed shell text of ours (no value is ever part of it; values arrive as its positional parameters, which
#: the connector quotes): make the instance folders - every component missing, 0750 - hard-link (else copy)
#: the account's collector into the instance (containers see only the instance dir), then run the rest of
#: the argv (``sbatch ...``). The folders come as ONE parameter, one per line, split by the shell's field
#: splitting on newlines only with globbing off (no subshell, no process but mkdir). Exits 97 when the
#: account's collector is gone (the caller uploads it again: ``sbatch`` has not run), 96 when a folder
#: cannot be made.
PREPARE_TEXT = (
    'c=$1 t=$2 dirs=$3; shift 3; '
    "IFS='\n'; set -f; mkdir -p -m 0750 -- $dirs || exit 96; set +f; unset IFS; "
    'if [ -n "$c" ]; then '
    '[ -f "$c" ] || { echo "heroes: the energy collector $c is missing" >&2; exit 97; }; '
    'ln -f -- "$c" "$t" 2>/dev/null || cp -f -- "$c" "$t" || exit 96; fi; '
    'if [ "$#" -gt 0 ]; then exec "$@"; fi'
)
COLLECTOR_MISSING = 97

_known_collectors: set[tuple[str, str, str]] = set()   # (cluster id, login, path) uploaded by this process
_collector_lock = threading.Lock()


@lru_cache(maxsize=1)
def collector_zipapp() -> bytes:
    """heroes_energy as an executable zip (``python3 heroes_energy.pyz --out DIR -- CMD``): only the
    standard library is needed on the cluster, and the step's own PYTHONPATH is left alone."""
    import heroes_energy

    package = Path(heroes_energy.__file__).parent
    members = {"__main__.py": b"import sys\nfrom heroes_energy.collect import main\nsys.exit(main())\n"}
    members.update({f"heroes_energy/{source.name}": source.read_bytes() for source in sorted(package.glob("*.py"))})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():  # fixed dates: the same sources give the same bytes (and name)
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
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


def instance_folders(workdir: str) -> list[str]:
    """Every path component of the instance dir (so each one ``mkdir`` makes is 0750), then its folders."""
    parts = workdir.rstrip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1) if parts[i - 1] not in ("", ".")]
    return prefixes + [f"{workdir}/outputs", f"{workdir}/logs", f"{workdir}/.heroes"]


def prepare_argv(workdir: str, collector: str = "", collector_target: str = "") -> list[str]:
    """The argv that makes the instance folders (and links the collector from ``collector``, the account's
    copy, to ``collector_target``) before running whatever argv is appended to it."""
    folders = instance_folders(workdir)
    if any("\n" in folder for folder in folders):
        raise ValueError(f"a work dir with a line break cannot be prepared: {workdir!r}")
    return ["sh", "-c", PREPARE_TEXT, "sh", collector, collector_target if collector else "", "\n".join(folders)]


def mkdirs(conn: ClusterConnector, folders: list[str]) -> None:
    """``mkdir -p`` of ``folders`` (each 0750) in one command."""
    if folders:
        conn.run(["mkdir", "-p", "-m", "0750", "--", *folders], timeout=60).check()


@lru_cache(maxsize=1)
def collector_name() -> str:
    """The account's copy of the collector, content-addressed (a new heroes_energy gets a new name), relative
    to the account's home."""
    return f".heroes/collector-{hashlib.sha256(collector_zipapp()).hexdigest()[:16]}.pyz"


def known_collector(conn: ClusterConnector, cluster_id: str) -> str | None:
    """The account's collector when this process uploaded it already (no I/O), else None."""
    path = collector_name()
    with _collector_lock:
        return path if (cluster_id, conn.login, path) in _known_collectors else None


def account_collector(conn: ClusterConnector, cluster_id: str, *, again: bool = False) -> str:
    """The path of the account's collector, uploaded once per account by this process (``again``: the
    command using it found it gone, so forget and upload it again)."""
    path = collector_name()
    key = (cluster_id, conn.login, path)
    with _collector_lock:
        if again:
            _known_collectors.discard(key)
        elif key in _known_collectors:
            return path
    conn.run(["mkdir", "-p", "-m", "0700", "--", ".heroes"], timeout=60).check()
    conn.put_stream(io.BytesIO(collector_zipapp()), path)   # written aside, renamed into place: never half a file
    with _collector_lock:
        _known_collectors.add(key)
    return path


def read_tail(conn: ClusterConnector, path: str, size: int) -> str:
    with conn.sftp() as sftp:
        try:
            with sftp.open(path, "rb") as handle:
                total = handle.stat().st_size or 0
                handle.seek(max(0, total - size))
                return handle.read(size).decode(errors="replace")
        except FileNotFoundError:
            return ""

