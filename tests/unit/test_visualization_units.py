"""Desktop pieces without a cluster: the view-only RFB filter, the ready file, the bridge argv (the batch script:
test_desktop_script.py)."""
from __future__ import annotations

import struct

import pytest

from heroes_service.visualization.rfb import ViewOnlyFilter, ViewOnlyViolation
from heroes_service.visualization.script import bridge_argv, parse_ready

HANDSHAKE = b"RFB 003.008\n" + b"\x01" + b"\x00"
ENCODINGS = struct.pack(">BxH", 2, 2) + struct.pack(">ii", 0, 7)
UPDATE = struct.pack(">BBHHHH", 3, 0, 0, 0, 10, 10)
KEY = struct.pack(">BBxxI", 4, 1, 0x61)
POINTER = struct.pack(">BBHH", 5, 1, 3, 4)
CUT = struct.pack(">BxxxI", 6, 3) + b"abc"
RESIZE = struct.pack(">BxHHBx", 251, 800, 600, 1) + bytes(16)
QEMU_KEY = struct.pack(">BBHII", 255, 0, 1, 0x61, 30)


def test_view_only_drops_input_keeps_the_stream_in_any_chunking():
    stream = HANDSHAKE + ENCODINGS + KEY + POINTER + UPDATE + CUT + RESIZE + QEMU_KEY + UPDATE
    for size in (1, 3, 7, len(stream)):
        f = ViewOnlyFilter()
        out = b"".join(f.feed(stream[i:i + size]) for i in range(0, len(stream), size))
        assert out == b"RFB 003.008\n\x01\x01" + ENCODINGS + UPDATE + UPDATE
        assert f.dropped == 5


def test_view_only_forces_shared_and_refuses_the_unknown():
    assert ViewOnlyFilter().feed(HANDSHAKE).endswith(b"\x01")  # ClientInit shared=0 becomes 1
    for bad in (HANDSHAKE + b"\x07", HANDSHAKE + struct.pack(">BB", 255, 9) + bytes(10), b"GET / HTTP/1.1\r\n",
                b"RFB 003.008\n\x02"):
        with pytest.raises(ViewOnlyViolation):
            ViewOnlyFilter().feed(bad)


def test_ready_file_and_bridge_accept_only_what_the_script_writes():
    good = parse_ready("socket=/tmp/heroes-desktop.AbC123xy/vnc.sock\nnode=alpha-n1\ndisplay=3\n")
    assert good == {"socket": "/tmp/heroes-desktop.AbC123xy/vnc.sock", "node": "alpha-n1", "display": 3}
    for bad in ("socket=/tmp/x,fork/vnc.sock\nnode=n\ndisplay=1", "socket=/tmp/../etc/vnc.sock\nnode=n\ndisplay=1",
                "socket=/tmp/a/vnc.sock\nnode=n;x\ndisplay=1", "", "socket=relative/vnc.sock\nnode=n\ndisplay=1"):
        assert parse_ready(bad) is None
    argv = bridge_argv("1234", good["socket"])
    assert argv[:3] == ["srun", "--jobid=1234", "--overlap"] and argv[-1] == f"UNIX-CONNECT:{good['socket']}"
    assert bridge_argv("1234", good["socket"], via="direct")[0] == "socat"
    with pytest.raises(ValueError):
        bridge_argv("12;3", good["socket"])
