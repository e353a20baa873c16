"""``clusters/warm.py``: spare commands started ahead of need, with stand-in channels (the real login node is
in ``tests/integration/test_cluster_submitter.py``).

A spare is made only once the channel in use has closed, only on a connection that is up (the opener says
None otherwise), at most one per (command, bytes written); it is handed out once, never when it died meanwhile;
it is closed unused after its idle time; closing the pool closes it; ``idle_s = 0`` makes none; it starts a
moment (``REFILL_PAUSE_S``) after the close, not with it.
"""
from __future__ import annotations

import threading
import time

from heroes_service.clusters import warm
from heroes_service.clusters.warm import Spares


class Transport:
    def __init__(self):
        self.active = True

    def is_active(self):
        return self.active


class Channel:
    def __init__(self, transport=None):
        self.closed = self.eof_received = False
        self.status_event = threading.Event()
        self.sent = b""
        self.transport = transport or Transport()

    def get_transport(self):
        return self.transport

    def exit_status_ready(self):
        return False

    def sendall(self, data):
        self.sent += data

    def close(self):
        self.closed = True
        self.status_event.set()


class Opener:
    def __init__(self, up=True):
        self.up, self.opened = up, []

    def __call__(self, command):
        if not self.up:
            return None
        channel = Channel()
        self.opened.append((command, channel))
        return channel


def closed_channel() -> Channel:
    """A call's channel that is done: the next spare may start."""
    channel = Channel()
    channel.close()
    return channel


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.01)
    return predicate()


def test_the_next_spare_starts_only_after_the_channel_in_use_closed_and_is_taken_once():
    opener = Opener()
    spares = Spares(opener, idle_s=30)
    assert spares.take("cmd", b"head") is None
    in_use = Channel()
    spares.refill_after("cmd", b"head", in_use)
    time.sleep(0.2)
    assert opener.opened == [] and len(spares) == 0, "a spare started while the call's own command ran"
    in_use.close()
    assert wait_for(lambda: len(spares) == 1)
    command, spare = opener.opened[0]
    assert command == "cmd" and spare.sent == b"head"
    assert spares.take("cmd", b"other") is None          # another preamble: another key
    assert spares.take("cmd", b"head") is spare
    assert spares.take("cmd", b"head") is None           # handed out once
    spares.refill_after("cmd", b"head", spare)
    spares.refill_after("cmd", b"head", spare)           # asked twice: still one
    spare.close()
    assert wait_for(lambda: len(spares) == 1)
    time.sleep(0.1)
    assert len(opener.opened) == 2
    spares.close()


def test_the_next_spare_waits_a_moment_after_the_close_so_the_caller_records_its_answer_alone(monkeypatch):
    monkeypatch.setattr(warm, "REFILL_PAUSE_S", 0.4)   # long enough to look inside the pause on a busy host
    opener = Opener()
    spares = Spares(opener, idle_s=30)
    in_use = Channel()
    spares.refill_after("cmd", b"", in_use)
    in_use.close()
    time.sleep(0.1)
    assert opener.opened == [], "the next spare started while the caller was still recording its job id"
    assert wait_for(lambda: len(spares) == 1)
    spares.close()


def test_a_spare_that_died_is_not_handed_out():
    opener = Opener()
    spares = Spares(opener, idle_s=30)
    spares.refill_after("cmd", b"", closed_channel())
    assert wait_for(lambda: len(spares) == 1)
    opener.opened[0][1].transport.active = False           # its connection went away
    assert spares.take("cmd", b"") is None
    assert opener.opened[0][1].closed
    spares.close()


def test_no_spare_without_a_live_connection_and_none_when_turned_off():
    down = Opener(up=False)
    spares = Spares(down, idle_s=30)
    used = closed_channel()
    spares.refill_after("cmd", b"", used)
    time.sleep(0.2)
    assert len(spares) == 0
    off_opener = Opener()
    off = Spares(off_opener, idle_s=0)
    off.refill_after("cmd", b"", used)
    time.sleep(0.2)
    assert len(off) == 0 and off_opener.opened == []


def test_an_unused_spare_is_closed_after_its_idle_time_and_closing_the_pool_closes_it():
    opener = Opener()
    spares = Spares(opener, idle_s=0.3)
    used = closed_channel()
    spares.refill_after("cmd", b"", used)
    assert wait_for(lambda: len(spares) == 1)
    spare = opener.opened[0][1]
    assert wait_for(lambda: len(spares) == 0, timeout=3) and spare.closed

    kept = Spares(opener, idle_s=30)
    kept.refill_after("cmd", b"", used)
    assert wait_for(lambda: len(kept) == 1)
    second = opener.opened[-1][1]
    kept.close()
    assert second.closed and len(kept) == 0
    kept.refill_after("cmd", b"", used)                  # a closed pool's spares never come back
    time.sleep(0.2)
    assert len(kept) == 0
