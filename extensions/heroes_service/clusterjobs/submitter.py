"""``sbatch`` in two halves: the login node starts it while the service writes the intent.

Over an open SSH connection ``sbatch --parsable`` costs a channel, a shell, sbatch's own start (it reads
``slurm.conf`` and loads its plugins) and then the submission RPC; only the last part needs the script. So
every submission starts ``SUBMIT_TEXT`` on the login node first - before the service commits its intent -
and sends the job's preparation and options as soon as they are known. The shell makes the folders, links the
energy collector and ``exec``s ``sbatch``, which then waits for the script on its standard input. The script is
written only after the intent is committed, so the "intent before sbatch" rule (``submit.py``) holds: until
the script arrives, no job can exist. Whatever ends the conversation before that - an abandoned submission,
a failed commit, the service dying - gives the shell or sbatch an empty input, and neither submits anything.

The protocol on standard input (one value per line, so a value never holds a line break; counts in decimal):
``<n>``, n folders to make, the account's collector (or an empty line), where to link it, ``<m>``, m options
of sbatch, then the script up to EOF. ``read`` takes a pipe one byte at a time, so sbatch reads exactly the
script. Exit statuses of ours (sbatch never ran): 95 the input stopped early, 96 a folder or the link could
not be made, 97 the collector is gone (``workflows.cluster_files.COLLECTOR_MISSING``).
"""
from __future__ import annotations

import time

import paramiko

from ..clusters.connector import ClusterConnector, build_command, read_output
from ..clusters.errors import ClusterUnreachable, CommandFailed, CommandTimeout, InvalidArgument
from ..clusters.slurm import parse_job_id

#: Reads a count, then that many lines, into the positional parameters (sh has no arrays; a function's
#: ``set --`` would set its own, so this text is used inline, twice).
_READ_VALUES = ('count; set --; '
                'while [ "$n" -gt 0 ]; do IFS= read -r v || exit 95; set -- "$@" "$v"; n=$((n - 1)); done; ')
#: Fixed shell text of ours: no value is ever part of it, every value arrives on standard input.
SUBMIT_TEXT = (
    'count() { IFS= read -r n || exit 95; case $n in ""|*[!0-9]*) exit 95;; esac; }; '
    + _READ_VALUES +
    'if [ "$#" -gt 0 ]; then mkdir -p -m 0750 -- "$@" || exit 96; fi; '
    'IFS= read -r c || exit 95; IFS= read -r t || exit 95; '
    'if [ -n "$c" ]; then '
    '[ -f "$c" ] || { echo "heroes: the energy collector $c is missing" >&2; exit 97; }; '
    'ln -f -- "$c" "$t" 2>/dev/null || cp -f -- "$c" "$t" || exit 96; fi; '
    + _READ_VALUES +
    'exec sbatch --parsable "$@"'
)
SUBMIT_ARGV = ("sh", "-c", SUBMIT_TEXT, "sh")
OUTPUT_LIMIT = 1 << 20   # sbatch prints a line, or a refusal's few lines


def _has_job_id(out: bytes) -> bool:
    return b"\n" in out and out.split(b"\n")[0].split(b";")[0].strip().isdigit()


def _one_line(value: str) -> bytes:
    """One value of the protocol (a line break or NUL in it is refused here, before anything is sent)."""
    value = str(value)
    if "\n" in value or "\r" in value or "\x00" in value:
        raise InvalidArgument(f"a value sent to the submitter holds a line break or NUL: {value[:80]!r}")
    return f"{value}\n".encode()


def _lines(values) -> bytes:
    """``values`` as the protocol's count, then one line each."""
    values = list(values)
    return _one_line(str(len(values))) + b"".join(_one_line(v) for v in values)


class StartedSubmission:
    """One ``SUBMIT_TEXT`` running on the login node, fed in order: ``prepare`` (optional), ``options``
    (once), then - after the intent's commit - ``send`` and ``job_id`` (or ``submit``, both at once), or
    ``abandon``. Not thread-safe: one caller feeds it at a time."""

    def __init__(self, conn: ClusterConnector, channel: paramiko.Channel):
        self.conn, self.channel = conn, channel
        self._prepared = False
        self._options: list[str] | None = None

    def prepare(self, folders=(), collector: str = "", target: str = "") -> None:
        """Folders to make (each 0750, ``mkdir -p``) and the collector to link; sent at once, so the login
        node does it while the caller works on."""
        if self._prepared:
            raise RuntimeError("the preparation was sent already")
        self._send(_lines(folders) + _one_line(collector) + _one_line(target if collector else ""))
        self._prepared = True

    def options(self, options=()) -> None:
        """sbatch's options (its argv after ``--parsable``); sbatch starts as soon as they arrive."""
        if not self._prepared:
            self.prepare()
        if self._options is not None:
            raise RuntimeError("the options were sent already")
        self._send(_lines(options))
        self._options = list(options)

    def submit(self, script: str, timeout: float = 60) -> str:
        """``send`` the script, then its ``job_id``."""
        self.send(script)
        return self.job_id(timeout)

    def send(self, script: str) -> None:
        """Send the script and end the input (call only after the intent's commit): sbatch submits it now, and
        the caller may work on until it asks for the ``job_id``."""
        if self._options is None:
            self.options()
        try:
            self._send(script.encode())
            self.channel.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.channel.close()
            raise ClusterUnreachable(f"cluster {self.conn.cluster!r}: connection lost while sbatch ran: {exc}") from exc

    def job_id(self, timeout: float = 60) -> str:
        """The job id once sbatch prints it. ``CommandFailed`` when sbatch (or the preparation: exit 95-97)
        refused; ``ClusterUnreachable``/``CommandTimeout`` when the conversation broke off - then the job may
        exist, and the caller adopts it by name. The channel is closed either way."""
        command = build_command(["sbatch", "--parsable", *(self._options or [])])
        deadline = time.monotonic() + timeout
        try:
            # sbatch prints the id, then exits: the first full line is enough
            out, err, _ = read_output(self.channel, command, deadline, timeout, OUTPUT_LIMIT, until=_has_job_id)
            try:
                return parse_job_id(out.decode(errors="replace"))
            except ValueError:
                pass
            if not self.channel.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise CommandTimeout(command, timeout)
            rc = self.channel.exit_status
            text = err.decode(errors="replace") or out.decode(errors="replace")
            if rc == 0:  # a success that printed no job id: nothing we may adopt without asking Slurm
                raise ClusterUnreachable(f"cluster {self.conn.cluster!r}: sbatch printed no job id: {text[:200]!r}")
            raise CommandFailed(command, rc, text)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ClusterUnreachable(f"cluster {self.conn.cluster!r}: connection lost while sbatch ran: {exc}") from exc
        finally:
            self.channel.close()

    def abandon(self) -> None:
        """End the conversation without a script: the shell or sbatch reads an empty input and submits nothing."""
        try:
            self.channel.close()
        except Exception:  # noqa: BLE001 - closing a broken channel: it is gone either way
            pass

    def _send(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ClusterUnreachable(f"cluster {self.conn.cluster!r}: cannot write to the submitter: {exc}") from exc


#: what a submission without folders, collector or options sends before its script
_NOTHING_TO_PREPARE = _lines(()) + _one_line("") + _one_line("")
_NO_OPTIONS = _lines(())


def start_submission(conn: ClusterConnector, *, options_in_script: bool = False, timeout: float = 20,
                     connect: bool = True) -> StartedSubmission:
    """The submitter started on the connector's login node, usually taken ready from a spare
    (``ClusterConnector.open_started``). ``options_in_script``: the job needs no folders, no collector and no
    option on sbatch's argv (every ``#SBATCH`` line is in its script), so the spare has sent that already and
    sbatch itself is up and waiting for the script. ``connect=False``: only on a connection that is up already
    (``ClusterUnreachable`` at once otherwise), for a start before the intent's commit: a login node that is
    down must not hold the caller, who then submits the sequential way after its commit."""
    if options_in_script:
        started = StartedSubmission(conn, conn.open_started(list(SUBMIT_ARGV), _NOTHING_TO_PREPARE + _NO_OPTIONS,
                                                            timeout=timeout, connect=connect))
        started._prepared, started._options = True, []
        return started
    return StartedSubmission(conn, conn.open_started(list(SUBMIT_ARGV), timeout=timeout, connect=connect))
