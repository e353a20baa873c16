"""Commands started ahead of need on a pooled connection, so the login node's process start is off the path.

Opening a channel, the login shell and the command's own start cost several milliseconds on every call of a
command such as sbatch's submitter (``clusterjobs/submitter.py``), whose useful part only begins when its input
arrives. ``Spares`` keeps at most one such command per (command, bytes already written) started on a connection
that is up anyway, waiting on its standard input: a call takes it, and the next one starts in the background
once that call's channel has closed (and ``REFILL_PAUSE_S`` more). A spare is closed unused after
``ClustersSettings.warm_exec_idle_s``: its command then reads an empty input, which for the submitter means it
does nothing. Spares never open a connection (no certificate is used for them), and they go with their pool
when it is closed - a disabled user's included.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import paramiko

log = logging.getLogger("heroes_service.clusters")

_MAKER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ssh-spare")

#: how long after the taken channel closes the next spare starts. The channel closes as its command ends - for the
#: submitter, the moment the caller gets its job id and records it. Starting the next spare then (a channel, an
#: exec, paramiko's packet work under the GIL, a process start on the login node) ran alongside that recording;
#: on the 2-core CI machine it added about 1.5 ms to every submission (the submit benchmark, issue 15).
REFILL_PAUSE_S = 0.02


def alive(channel: paramiko.Channel) -> bool:
    """Still waiting for its input: open, its command running, its connection up."""
    transport = channel.get_transport()
    return not channel.closed and not channel.eof_received and not channel.exit_status_ready() \
        and transport is not None and transport.is_active()


class Spares:
    """The spares of one pool. ``open_started(command)`` opens a channel on a live connection and ``exec``s the
    command there (None when the pool has no live connection)."""

    def __init__(self, open_started: Callable[[str], paramiko.Channel | None], idle_s: float):
        self._open_started = open_started
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._spares: dict[tuple[str, bytes], paramiko.Channel] = {}
        self._making: set[tuple[str, bytes]] = set()
        self._closed = False

    def take(self, command: str, written: bytes) -> paramiko.Channel | None:
        """The spare of ``command`` with ``written`` already on its input, if one is ready."""
        with self._lock:
            channel = self._spares.pop((command, written), None)
        if channel is not None and not alive(channel):
            channel.close()
            channel = None
        return channel

    def refill_after(self, command: str, written: bytes, in_use: paramiko.Channel) -> None:
        """Start the next spare once ``in_use`` (the channel just taken or opened) has closed: its command's
        own work is not slowed by the next one's start on the login node."""
        if self.idle_s <= 0:
            return
        key = (command, written)
        with self._lock:
            if self._closed or key in self._making or key in self._spares:
                return
            self._making.add(key)
        _MAKER.submit(self._make, key, in_use)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            channels = list(self._spares.values())
            self._spares.clear()
        for channel in channels:
            channel.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._spares)

    def _make(self, key: tuple[str, bytes], after: paramiko.Channel) -> None:
        channel = None
        try:
            after.status_event.wait(self.idle_s)   # set when the channel closes (or its command exits)
            time.sleep(REFILL_PAUSE_S)
            channel = self._open_started(key[0])
            if channel is not None and key[1]:
                channel.sendall(key[1])
        except Exception:  # noqa: BLE001 - a spare is an optimisation: the next call starts its own
            log.debug("could not start a spare of %s", key[0][:60], exc_info=True)
            if channel is not None:
                channel.close()
            channel = None
        with self._lock:
            self._making.discard(key)
            if channel is None:
                return
            if self._closed or key in self._spares:
                channel.close()
                return
            self._spares[key] = channel
        timer = threading.Timer(self.idle_s, self._expire, args=(key, channel))
        timer.daemon = True
        timer.start()

    def _expire(self, key: tuple[str, bytes], channel: paramiko.Channel) -> None:
        with self._lock:
            if self._spares.get(key) is channel:
                del self._spares[key]
            else:
                return
        channel.close()
