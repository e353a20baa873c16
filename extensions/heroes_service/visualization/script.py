"""The desktop's batch script and the commands that reach its VNC socket: pure functions, no I/O.

The script comes from the one renderer (``clusterjobs.script.render_script``): ``#SBATCH`` options, two fixed
lines of ours, ``export`` lines whose values are ``shlex.quote``d (the session folder, the working directory,
the screen size, the title), then ``exec``: the energy collector (``heroes_energy``, staged into the session
folder as a zipapp) around ``bash -c <DESKTOP_BODY>``, or the body alone where the collector is off. The body
is fixed text: it reads every value from those variables, always inside double quotes, so no value is
ever parsed as shell.

What the body does on the node (as the user's own cluster login, or the service account):

1. ``mktemp -d`` a private runtime folder (0700, unpredictable name) on the node's local /tmp;
2. write a one-time X cookie (``xauth source -``: the cookie never appears in a process's argv) and start
   ``Xvnc`` with ``-auth`` (no other node user can open the X display), ``-rfbport -1`` (no TCP port at all),
   ``-rfbunixpath <runtime>/vnc.sock`` mode 0600 and ``-SecurityTypes None``: the socket's owner is the
   only one who can connect, so the socket's permissions are the password. ``-displayfd`` lets the X server
   pick a free display, so several desktops share a node without guessing numbers;
3. start openbox and a terminal (and, for "Visualize", a second terminal listing the outputs) in the job's
   working directory;
4. write ``ready`` (socket path, node, display) into the session folder, where the service reads it over
   SSH; then wait for Xvnc. ``scancel`` or the time limit ends everything (and the trap removes the folder).

The collector samples the node every ``SAMPLE_S`` seconds: ``energy/progress.json`` (the totals so far, read
by the tracker while the desktop runs) and, when the desktop ends (it forwards Slurm's SIGTERM and writes
before it exits), the EAR CSV and samples the service ingests as the session's energy record.

The working directory is entered with ``cd`` in the body, not ``--chdir``: it may be a folder the user named,
and an ``#SBATCH`` line is split at blanks by sbatch, so a path there could smuggle in options. The other
options hold no user text; the log path must be plain (``PLAIN_PATH``) or the desktop is refused. The script
crosses SSH on stdin, never on a command line.
"""
from __future__ import annotations

import re

from ..clusterjobs.script import Resources, ScriptError, render_script

#: what ``ready`` may say about the socket: a plain absolute path (it is also a socat address, where ``,``
#: and ``:`` would be option syntax)
SOCKET_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,100}/vnc\.sock$")
NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
GEOMETRY_RE = re.compile(r"^(\d{3,4})x(\d{3,4})$")
#: a path that may stand in an ``#SBATCH`` line (no blanks, quotes or backslashes: sbatch would split it)
PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._/+@=-]{1,1000}$")
READY_FILE = "ready"
LOG_FILE = "desktop.log"
#: the staged collector, its output folder and its running totals, relative to the session folder
COLLECTOR_FILE = "heroes_energy.pyz"
ENERGY_DIR = "energy"
PROGRESS_FILE = "energy/progress.json"
#: seconds between two samples of the collector (a desktop lives for hours: 1 s would be a large timeline)
SAMPLE_S = 5

#: the desktop itself, run by ``bash -c``; fixed text: every value comes from the HEROES_DESKTOP_* variables
DESKTOP_BODY = r"""set -u
umask 077
session_dir=$HEROES_DESKTOP_SESSION_DIR
cd -- "$HEROES_DESKTOP_WORK_DIR" || { echo "cannot enter the working directory" >&2; exit 1; }
runtime=$(mktemp -d "${TMPDIR:-/tmp}/heroes-desktop.XXXXXXXX") || exit 1
trap 'rm -rf "$runtime"' EXIT
cookie=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
: > "$runtime/server.auth"; : > "$runtime/Xauthority"
echo "add :0 MIT-MAGIC-COOKIE-1 $cookie" | xauth -q -f "$runtime/server.auth" source -
exec 3>"$runtime/display"
Xvnc -displayfd 3 -rfbport -1 -rfbunixpath "$runtime/vnc.sock" -rfbunixmode 0600 -SecurityTypes None \
     -AlwaysShared -nolisten tcp -auth "$runtime/server.auth" -geometry "$HEROES_DESKTOP_GEOMETRY" -depth 24 \
     -desktop "$HEROES_DESKTOP_TITLE" &
xvnc=$!
exec 3>&-
for _ in $(seq 300); do
  [ -s "$runtime/display" ] && break
  kill -0 "$xvnc" 2>/dev/null || { echo "Xvnc exited before it was ready" >&2; exit 1; }
  sleep 0.1
done
display=$(tr -dc 0-9 < "$runtime/display")
[ -n "$display" ] || { echo "Xvnc reported no display" >&2; exit 1; }
export DISPLAY=":$display" XAUTHORITY="$runtime/Xauthority"
echo "add :$display MIT-MAGIC-COOKIE-1 $cookie" | xauth -q source -
unset cookie
# the terminals start once openbox is up (--startup), so it manages and focuses them; started before,
# a window can map while openbox initialises and stay unmanaged, unfocused: typing would go nowhere
# (openbox changes to $HOME; the terminals go back to the job's working directory)
export HEROES_DESKTOP_DIR="$PWD"
cat > "$runtime/apps" <<'HEROES_APPS'
cd "$HEROES_DESKTOP_DIR" || exit 1
( xterm -T "terminal: $PWD" -geometry 100x30+0+0; echo "terminal exited ($?)" >&2 ) &
if [ "${HEROES_DESKTOP_LIST_OUTPUTS:-0}" = 1 ]; then
  # a second terminal with the instance's files listed (its outputs are right here, no copy)
  xterm -T "outputs: $PWD" -geometry 90x45+620+0 -e bash -c 'ls -la --color=never; if [ -d outputs ]; then
    echo; echo "outputs/:"; ls -la --color=never outputs; fi; echo
    echo "(this run'"'"'s folder; the shell stays open)"; exec bash -i' &
fi
HEROES_APPS
openbox --startup "bash $runtime/apps" >/dev/null &
node=${SLURMD_NODENAME:-$(hostname -s)}
printf 'socket=%s\nnode=%s\ndisplay=%s\n' "$runtime/vnc.sock" "$node" "$display" > "$session_dir/ready.part" \
  && mv "$session_dir/ready.part" "$session_dir/ready"
echo "desktop ready on $node display :$display"
wait "$xvnc"
"""


def check_geometry(geometry: str) -> str:
    match = GEOMETRY_RE.match(geometry)
    if not match or not (640 <= int(match.group(1)) <= 4096 and 480 <= int(match.group(2)) <= 4096):
        raise ValueError("geometry must be WIDTHxHEIGHT between 640x480 and 4096x4096")
    return geometry


def collector_argv(session_dir: str) -> list[str]:
    """The collector around the body: samples every ``SAMPLE_S`` s, totals so far in ``PROGRESS_FILE``."""
    return ["python3", f"{session_dir}/{COLLECTOR_FILE}", "--out", f"{session_dir}/{ENERGY_DIR}",
            "--interval", str(SAMPLE_S), "--progress", f"{session_dir}/{PROGRESS_FILE}", "--"]


def desktop_script(session_dir: str, work_dir: str, job_name: str, resources: Resources, *,
                   geometry: str = "1280x800", title: str = "HEROES desktop", list_outputs: bool = False,
                   energy: bool = True) -> str:
    """The whole batch script of one desktop (``#SBATCH`` options included: sbatch needs none on its argv).
    ``energy``: run under the staged collector (``COLLECTOR_FILE`` must be in the session folder)."""
    check_geometry(geometry)
    if not PLAIN_PATH.match(session_dir) or ".." in session_dir.split("/"):
        raise ScriptError(f"the session folder {session_dir[:80]!r} is not a plain absolute path")
    options = resources.sbatch_options(job_name, f"{session_dir}/{LOG_FILE}")
    env = {"HEROES_DESKTOP_SESSION_DIR": session_dir, "HEROES_DESKTOP_WORK_DIR": work_dir,
           "HEROES_DESKTOP_GEOMETRY": geometry, "HEROES_DESKTOP_TITLE": title,
           "HEROES_DESKTOP_LIST_OUTPUTS": "1" if list_outputs else "0"}
    body = ["bash", "-c", DESKTOP_BODY, "heroes-desktop"]
    return render_script(options, env, (collector_argv(session_dir) if energy else []) + body,
                         preamble=("# HEROES desktop session: Xvnc on a private Unix socket; written by the heroes "
                                   "service", "set -u", "umask 077"))


def parse_ready(text: str) -> dict | None:
    """``ready`` -> {socket, node, display}; None when absent or malformed (never a path we did not expect)."""
    values = dict(line.split("=", 1) for line in (text or "").splitlines() if "=" in line)
    socket_path, node, display = values.get("socket", ""), values.get("node", ""), values.get("display", "")
    if not SOCKET_RE.match(socket_path) or ".." in socket_path or not NODE_RE.match(node) or not display.isdigit():
        return None
    return {"socket": socket_path, "node": node, "display": int(display)}


def bridge_argv(job_id: str, socket_path: str, *, via: str = "srun") -> list[str]:
    """The login-node command whose stdin/stdout are the VNC socket on the job's node.

    ``srun``: Slurm carries the bytes to the node (``--overlap`` joins the running desktop without taking
    its CPUs), so the login node needs no network route to nodes and nothing listens anywhere. ``direct``:
    the login node shares the node's /tmp (a single-host site, benchmarks)."""
    if not job_id.isdigit() or not SOCKET_RE.match(socket_path) or ".." in socket_path:
        raise ValueError("refusing a bridge to an unexpected job id or socket path")
    target = ["socat", "STDIO", f"UNIX-CONNECT:{socket_path}"]
    if via == "direct":
        return target
    # --unbuffered: slurmstepd otherwise forwards the task's output line by line, and RFB is binary (the
    # server's 2-byte security list would wait for a newline forever); it stays a pipe, not a pty (checked:
    # every byte value round-trips)
    return ["srun", f"--jobid={job_id}", "--overlap", "--nodes=1", "--ntasks=1", "--mem=0", "--quiet",
            "--unbuffered", "--", *target]
