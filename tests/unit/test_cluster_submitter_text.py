"""The submitter's fixed shell text (``clusterjobs/submitter.py``) run by a real shell the way the login node
runs it (the connector's quoting, then ``bash -c``), with a stand-in ``sbatch`` on PATH that keeps its argv and
its input and leaves a mark when it runs.

Values arrive on standard input only and never become shell text; the script reaches sbatch byte for byte;
an input cut short anywhere before the script stops the shell before sbatch ever starts (exit 95); a folder
that cannot be made (96) or a missing collector (97) stop it too; a value with a line break is refused before
anything is sent.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from heroes_service.clusterjobs.submitter import SUBMIT_ARGV, _lines, _one_line
from heroes_service.clusters.connector import build_command
from heroes_service.clusters.errors import InvalidArgument

SBATCH = """#!/bin/sh
# stand-in for sbatch --parsable: keeps its argv (one per line) and its stdin, prints a job id
touch "$HOME/sbatch.ran"
printf '%s\\n' "$@" > "$HOME/sbatch.args"
cat > "$HOME/sbatch.stdin"
echo "4242;alpha"
"""
HOSTILE_FOLDER = "heroes-work/bob/w x'$(touch pwned)';touch pwned2 * `touch pwned3`"
HOSTILE_OPTION = "--comment=a b; $(touch pwned4) `touch pwned5` 'q\" *"
SCRIPT = "#!/bin/bash\n#SBATCH --job-name=x\necho \"$HOME\" '$(not run here)'\n\x01\xff-free tail\n"


@pytest.fixture
def home(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    (tmp_path / "home").mkdir()
    return tmp_path


def run(home, data: bytes) -> subprocess.CompletedProcess:
    env = {"PATH": f"{home / 'bin'}:{os.environ['PATH']}", "HOME": str(home / "home")}
    return subprocess.run(["bash", "-c", build_command(list(SUBMIT_ARGV))], cwd=home / "home", input=data,
                          capture_output=True, env=env, timeout=30)


def header(folders=(), collector="", target="", options=()) -> bytes:
    return _lines(folders) + _one_line(collector) + _one_line(target if collector else "") + _lines(options)


def test_values_arrive_verbatim_and_the_script_reaches_sbatch_byte_for_byte(home):
    done = run(home, header([HOSTILE_FOLDER, f"{HOSTILE_FOLDER}/logs"], options=[HOSTILE_OPTION, "-J", "n"])
               + SCRIPT.encode())
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"4242;alpha\n"
    made = home / "home" / HOSTILE_FOLDER
    assert made.is_dir() and (made / "logs").is_dir()
    assert oct(made.stat().st_mode & 0o777) == "0o750"
    assert (home / "home" / "sbatch.args").read_text().splitlines() == ["--parsable", HOSTILE_OPTION, "-J", "n"]
    assert (home / "home" / "sbatch.stdin").read_bytes() == SCRIPT.encode()
    assert not [p for p in (home / "home").rglob("pwned*")], "a value ran as shell text"


def test_an_input_cut_short_anywhere_before_the_script_never_starts_sbatch(home):
    full = header(["a", "a/b"], options=["--time=5", "-J", "x"])
    for cut in range(len(full)):
        done = run(home, full[:cut])
        assert done.returncode == 95, (cut, done.returncode, done.stderr)
        assert not (home / "home" / "sbatch.ran").exists(), f"sbatch started with {cut} bytes of the header"


def test_a_count_that_is_no_number_stops_the_shell(home):
    for bad in (b"x\n", b"-1\n", b"1 2\n", b"$(touch pwned)\n"):
        done = run(home, bad + b"\n\n0\n" + SCRIPT.encode())
        assert done.returncode == 95, (bad, done.stderr)
    assert not (home / "home" / "sbatch.ran").exists()
    assert not (home / "home" / "pwned").exists()


def test_a_folder_that_cannot_be_made_or_a_missing_collector_stops_before_sbatch(home):
    (home / "home" / "file").write_text("in the way")
    done = run(home, header(["file/sub"]) + SCRIPT.encode())
    assert done.returncode == 96
    done = run(home, header(["w"], collector=".heroes/collector-gone.pyz", target="w/c.pyz") + SCRIPT.encode())
    assert done.returncode == 97 and b"collector" in done.stderr
    assert not (home / "home" / "sbatch.ran").exists()


def test_the_collector_is_linked_into_the_instance(home):
    (home / "home" / ".heroes").mkdir()
    (home / "home" / ".heroes" / "collector-1.pyz").write_bytes(b"zip")
    done = run(home, header(["w"], collector=".heroes/collector-1.pyz", target="w/c.pyz") + SCRIPT.encode())
    assert done.returncode == 0, done.stderr
    assert (home / "home" / "w" / "c.pyz").read_bytes() == b"zip"
    assert os.path.samefile(home / "home" / "w" / "c.pyz", home / "home" / ".heroes" / "collector-1.pyz")


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b"])
def test_a_value_with_a_line_break_or_nul_is_refused_before_anything_is_sent(value):
    with pytest.raises(InvalidArgument):
        _lines(["ok", value])
    with pytest.raises(InvalidArgument):
        _one_line(value)
