"""A viewer of the RFB (VNC) protocol for the desktop benchmark: speaks as noVNC does, decodes nothing.

It reads exactly what the server sends (Tight rectangles are skipped by their lengths), answers fences and
switches continuous updates on, so what it counts - updates and bytes per second, round trips - is what a
browser's noVNC would get over the same path, without a browser's CPU in the measurement.
"""
from __future__ import annotations

import statistics
import struct
import time

TIGHT, COPYRECT, RAW, LAST_RECT, DESKTOP_SIZE = 7, 1, 0, -224, -223
#: what noVNC asks for by default (Tight, quality 6, compression 2, fences, continuous updates)
NOVNC_ENCODINGS = (TIGHT, COPYRECT, RAW, -32 + 6, -256 + 2, DESKTOP_SIZE, LAST_RECT, -312, -313)


class Stream:
    """Bytes in, bytes out over a websocket or a socket, with exact reads; counts what it received."""

    def __init__(self, send, recv):
        self.send, self._recv, self.buf, self.received = send, recv, bytearray(), 0

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self._recv()
            if not data:
                raise ConnectionError("the VNC connection closed (was the desktop ended under the benchmark?)")
            self.received += len(data)
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def u8(self) -> int:
        return self.read(1)[0]


def handshake(s: Stream) -> tuple[int, int, int]:
    s.read(12)
    s.send(b"RFB 003.008\n")
    s.read(s.u8())
    s.send(b"\x01")
    s.read(4)
    s.send(b"\x01")
    width, height = struct.unpack(">HH", s.read(4))
    bpp = s.read(16)[0]
    s.read(struct.unpack(">I", s.read(4))[0])
    return width, height, bpp


def full_frame(s: Stream, width: int, height: int, bpp: int) -> int:
    s.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
    while (kind := s.u8()) != 0:
        if kind == 3:
            s.read(3)
            s.read(struct.unpack(">I", s.read(4))[0])
    s.read(1)
    total = 0
    for _ in range(struct.unpack(">H", s.read(2))[0]):
        _x, _y, w, h, _enc = struct.unpack(">HHHHi", s.read(12))
        total += len(s.read(w * h * bpp // 8))
    return total


def _compact_length(s: Stream) -> int:
    """Tight's 1-3 byte length (7 bits a byte, high bit: another byte follows)."""
    length, shift = 0, 0
    for _ in range(3):
        byte = s.u8()
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return length


def skip_tight(s: Stream, w: int, h: int) -> None:
    """Read past one Tight rectangle (24-bit true colour: a pixel is 3 bytes on the wire)."""
    control = s.u8()
    kind = control >> 4
    if kind == 8:  # fill
        s.read(3)
        return
    if kind == 9:  # JPEG
        s.read(_compact_length(s))
        return
    if kind & 0x8:
        raise SystemExit(f"unexpected Tight compression {kind}")
    size = w * h * 3
    if control & 0x40:  # an explicit filter
        filter_id = s.u8()
        if filter_id == 1:  # palette
            colours = s.u8() + 1
            s.read(colours * 3)
            size = (w + 7) // 8 * h if colours == 2 else w * h
    if size < 12:
        s.read(size)
    else:
        s.read(_compact_length(s))


def _server_message(s: Stream, kind: int, width: int, height: int) -> None:
    """Everything but a framebuffer update: switch continuous updates on, answer fences, skip the rest."""
    if kind == 150:  # EndOfContinuousUpdates: the server supports them; on for the whole screen, as noVNC
        s.send(struct.pack(">BBHHHH", 150, 1, 0, 0, width, height))
    elif kind == 248:  # Fence: answer a request with its flags (request bit cleared), as a viewer must
        s.read(3)
        flags = struct.unpack(">I", s.read(4))[0]
        payload = s.read(s.u8())
        if flags & (1 << 31):
            s.send(struct.pack(">BxxxIB", 248, flags & 0x7, len(payload)) + payload)
    elif kind == 3:
        s.read(3)
        s.read(struct.unpack(">I", s.read(4))[0])
    elif kind != 2:  # 2 is a bell
        raise SystemExit(f"unexpected server message {kind}")


def _update(s: Stream) -> None:
    """The rest of one FramebufferUpdate (its type byte already read)."""
    s.read(1)
    for _ in range(struct.unpack(">H", s.read(2))[0]):
        _x, _y, w, h, enc = struct.unpack(">HHHHi", s.read(12))
        if enc == LAST_RECT:
            return
        if enc == TIGHT:
            skip_tight(s, w, h)
        elif enc == COPYRECT:
            s.read(4)
        elif enc == RAW:
            s.read(w * h * 4)
        elif enc != DESKTOP_SIZE:
            raise SystemExit(f"unexpected encoding {enc}")


def viewer_rate(stream: Stream, seconds: float, warmup: float = 1.0) -> tuple[float, float]:
    """(framebuffer updates per second, kB/s) seen by a noVNC-like viewer over ``seconds`` after a warm-up
    (the first full screen and the server's congestion control settling are not counted)."""
    width, height, _bpp = handshake(stream)
    stream.send(struct.pack(">BxH", 2, len(NOVNC_ENCODINGS)) + struct.pack(f">{len(NOVNC_ENCODINGS)}i",
                                                                          *NOVNC_ENCODINGS))
    stream.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
    start = time.monotonic()
    t0, updates, bytes0 = None, 0, 0
    while True:
        now = time.monotonic()
        if t0 is None and now - start >= warmup:
            t0, updates, bytes0 = now, 0, stream.received - len(stream.buf)
        if t0 is not None and now - t0 >= seconds:
            break
        kind = stream.u8()
        if kind == 0:
            _update(stream)
            updates += 1
        else:
            _server_message(stream, kind, width, height)
    elapsed = time.monotonic() - t0
    return updates / elapsed, (stream.received - len(stream.buf) - bytes0) / elapsed / 1e3


def round_trip_ms(stream: Stream, count: int = 30) -> float:
    """Median time for a Fence to go to the VNC server and back (what a key press waits for before the
    server has it, and its echo comes back): the path's latency, with no screen updates in the way."""
    width, height, _bpp = handshake(stream)
    stream.send(struct.pack(">BxHi", 2, 1, -312))  # fences only: no updates are asked for
    times = []
    for i in range(count):
        payload = struct.pack(">I", i)
        t0 = time.monotonic()
        stream.send(struct.pack(">BxxxIB", 248, 1 << 31, len(payload)) + payload)
        while True:
            kind = stream.u8()
            if kind != 248:
                _server_message(stream, kind, width, height)
                continue
            stream.read(3)
            flags = struct.unpack(">I", stream.read(4))[0]
            got = stream.read(stream.u8())
            if not flags & (1 << 31) and got == payload:
                break
            if flags & (1 << 31):  # the server's own request: answer it
                stream.send(struct.pack(">BxxxIB", 248, flags & 0x7, len(got)) + got)
        times.append(time.monotonic() - t0)
    return statistics.median(times) * 1e3


def raw_ceiling(stream: Stream, frames: int) -> float:
    width, height, bpp = handshake(stream)
    full_frame(stream, width, height, bpp)  # warm
    t0 = time.monotonic()
    total = sum(full_frame(stream, width, height, bpp) for _ in range(frames))
    return total / (time.monotonic() - t0) / 1e6
