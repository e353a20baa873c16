"""A workflow step's folders, energy collector and sbatch in ONE SSH command: the fixed preparation text of
``workflows.cluster_files`` run by a real shell the way the login node runs it (the connector's quoting, then
``bash -c``), with a stand-in ``sbatch`` on PATH. Values (a hostile instance dir, sbatch options) arrive as
positional parameters and never become shell text; the account's collector is uploaded once and linked into
each instance; when it is gone the preparation stops before sbatch (exit 97) and the driver uploads it again.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from heroes_service.clusterjobs.submit import sbatch_once
from heroes_service.clusters.connector import CommandResult, build_command
from heroes_service.clusters.errors import CommandFailed
from heroes_service.workflows import cluster_files
from heroes_service.workflows.cluster_files import (COLLECTOR_MISSING, account_collector, collector_name,
                                                    collector_zipapp, prepare_argv)
from heroes_service.workflows.actions import Run

SBATCH = """#!/bin/sh
# stand-in for sbatch --parsable: keeps its argv (one per line) and its stdin, prints a job id
printf '%s\\n' "$@" > "$HOME/sbatch.args"
cat > "$HOME/sbatch.stdin"
echo "4242;alpha"
"""
HOSTILE = "heroes-work/bob/workflows/w x'$(touch pwned)';touch pwned2 *"


class LocalConnector:
    """Runs each argv as the login node would: ``build_command`` (every element quoted), then a shell."""

    cluster, login = "local", "bob"

    def __init__(self, home, bin_dir):
        self.home, self.bin_dir = home, bin_dir
        self.commands: list[list[str]] = []
        self.uploads: list[str] = []

    def run(self, argv, *, stdin=None, timeout=60) -> CommandResult:
        command = build_command(argv)
        self.commands.append(list(argv))
        env = {"PATH": f"{self.bin_dir}:{os.environ['PATH']}", "HOME": str(self.home)}
        done = subprocess.run(["bash", "-c", command], cwd=self.home, input=stdin, capture_output=True, text=True,
                              env=env, timeout=timeout)
        return CommandResult(rc=done.returncode, stdout=done.stdout, stderr=done.stderr, command=command)

    def put_stream(self, fileobj, remote_path, **_) -> int:
        self.uploads.append(remote_path)
        data = fileobj.read()
        (self.home / remote_path).write_bytes(data)
        return len(data)


@pytest.fixture
def conn(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    cluster_files._known_collectors.clear()
    return LocalConnector(home, bin_dir)


def test_one_command_makes_the_folders_links_the_collector_and_submits(conn):
    collector = account_collector(conn, "cluster-1")
    assert collector == collector_name() and conn.uploads == [collector]
    target = f"{HOSTILE}/.heroes/heroes_energy.pyz"
    options = ["--job-name=heroes.x.run", "--comment=$(touch pwned3) `touch pwned4`"]
    job_id = sbatch_once(conn, "#!/bin/sh\ntrue\n", options, prepared_by=prepare_argv(HOSTILE, collector, target))
    assert job_id == "4242" and len(conn.commands) == 2   # mkdir of ~/.heroes once, then ONE command
    home = conn.home
    for folder in ("heroes-work", "heroes-work/bob", "heroes-work/bob/workflows", *(f"{HOSTILE}{sub}" for sub in
                                                                                 ("", "/outputs", "/logs", "/.heroes"))):
        assert oct((home / folder).stat().st_mode & 0o777) == "0o750", folder
    assert (home / target).stat().st_ino == (home / collector).stat().st_ino   # a hard link, not a copy
    assert (home / "sbatch.args").read_text().splitlines() == ["--parsable", *options]
    assert (home / "sbatch.stdin").read_text() == "#!/bin/sh\ntrue\n"
    assert not [p for p in home.rglob("pwned*")], "a value became shell text"
    assert cluster_files.PREPARE_TEXT in conn.commands[1] and HOSTILE not in cluster_files.PREPARE_TEXT


def test_folders_are_never_globbed(conn):
    (conn.home / "g/wZ").mkdir(parents=True)   # what g/w* would match if the shell globbed it
    sbatch_once(conn, "#!/bin/sh\ntrue\n", [], prepared_by=prepare_argv("g/w*"))
    assert (conn.home / "g/w*/logs").is_dir() and not (conn.home / "g/wZ/logs").exists()


def test_a_work_dir_with_a_line_break_is_refused():
    with pytest.raises(ValueError):
        prepare_argv("heroes-work/bob/workflows/a\nb")


def test_the_collector_is_uploaded_once_per_account(conn):
    assert account_collector(conn, "cluster-1") == account_collector(conn, "cluster-1")
    assert len(conn.uploads) == 1
    conn.login = "carol"
    account_collector(conn, "cluster-1")
    account_collector(conn, "cluster-1", again=True)
    assert len(conn.uploads) == 3
    assert (conn.home / collector_name()).read_bytes() == collector_zipapp()
    assert collector_zipapp() == collector_zipapp.__wrapped__()   # the same sources give the same name


def test_a_missing_collector_stops_before_sbatch(conn):
    argv = prepare_argv("w", ".heroes/collector-gone.pyz", "w/.heroes/heroes_energy.pyz")
    with pytest.raises(CommandFailed) as failed:
        sbatch_once(conn, "#!/bin/sh\ntrue\n", [], prepared_by=argv)
    assert failed.value.rc == COLLECTOR_MISSING and "collector" in failed.value.stderr
    assert not (conn.home / "sbatch.args").exists()
    assert failed.value.command.startswith("sbatch --parsable")   # the error names the sbatch, not our text


def test_without_energy_no_collector_is_linked(conn):
    sbatch_once(conn, "#!/bin/sh\ntrue\n", [], prepared_by=prepare_argv("w", ""))
    assert (conn.home / "w/logs").is_dir() and not (conn.home / "w/.heroes/heroes_energy.pyz").exists()
    assert conn.uploads == []


def test_the_driver_uploads_a_vanished_collector_again_and_submits_once(conn):
    class Cluster:
        id = "cluster-1"

    class Ctx:
        workdir = "heroes-work/bob/workflows/abc"

    run = Run(cluster=Cluster(), ctx=Ctx(), template=None, conn=conn, uploads=False, needs_collector=True)
    first = run.prepared(lambda prepare: sbatch_once(conn, "#!/bin/sh\n", [], prepared_by=prepare))
    (conn.home / collector_name()).unlink()   # someone cleaned the account's ~/.heroes
    (conn.home / "sbatch.args").unlink()
    again = run.prepared(lambda prepare: sbatch_once(conn, "#!/bin/sh\n", [], prepared_by=prepare))
    assert first == again == "4242" and len(conn.uploads) == 2
    assert (conn.home / "sbatch.args").exists() and (conn.home / collector_name()).exists()
    submitted = [c for c in conn.commands if "sbatch" in c]
    assert len(submitted) == 3   # first, the refused one (stopped before sbatch: exit 97), the one after upload


def test_input_folders_in_one_mkdir(conn):
    cluster_files.mkdirs(conn, ["w/inputs", "w/inputs/data"])
    assert conn.commands == [["mkdir", "-p", "-m", "0750", "--", "w/inputs", "w/inputs/data"]]
    assert oct((conn.home / "w/inputs/data").stat().st_mode & 0o777) == "0o750"
