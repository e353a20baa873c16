"""A view-only filter for the viewer->server half of an RFB (VNC) connection.

Why in the gateway: the desktop's VNC server runs with ``SecurityTypes None`` behind a 0600 socket, so
whatever reaches the socket may type. A view-only link must therefore be enforced where the bytes pass,
not by a flag in the viewer's browser (anyone can send their own websocket frames). The filter parses
the client's messages (RFC 6143 and the extensions noVNC sends) and:

* forces the ClientInit "shared" flag on (a viewer never disconnects the owner);
* drops input: KeyEvent, PointerEvent, ClientCutText, QEMU extended key events, SetDesktopSize, XVP;
* passes what only affects the viewer's own stream (pixel format, encodings, update requests, fences,
  continuous updates);
* refuses anything it does not know (fail closed): the connection is ended.
"""
from __future__ import annotations

import struct


class ViewOnlyViolation(Exception):
    """The viewer sent something the filter cannot prove harmless; the bridge closes the connection."""


#: message types that only change what the viewer receives
_PASS = {0, 2, 3, 150, 248}
#: input and control messages a view-only viewer may not send (dropped, connection kept)
_DROP = {4, 5, 6, 250, 251, 255}


class ViewOnlyFilter:
    """Feed viewer->server bytes with ``feed``; it returns the bytes that may go on to the server."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._phase = "version"
        self.dropped = 0  # input messages dropped (tests read it)

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while True:
            step = self._next()
            if step is None:
                return bytes(out)
            chunk, keep = step
            if keep:
                out += chunk

    def _take(self, n: int) -> bytes | None:
        if len(self._buf) < n:
            return None
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return chunk

    def _next(self) -> tuple[bytes, bool] | None:
        """One complete unit (handshake piece or message) and whether it passes; None: need more bytes."""
        if self._phase == "version":
            chunk = self._take(12)
            if chunk is None:
                return None
            if not chunk.startswith(b"RFB 003."):
                raise ViewOnlyViolation("not an RFB protocol version")
            self._phase = "init" if chunk == b"RFB 003.003\n" else "security"
            return chunk, True
        if self._phase == "security":
            chunk = self._take(1)
            if chunk is None:
                return None
            if chunk != b"\x01":  # the desktop offers only "None": anything else is not ours to relay
                raise ViewOnlyViolation("unexpected security type")
            self._phase = "init"
            return chunk, True
        if self._phase == "init":
            chunk = self._take(1)
            if chunk is None:
                return None
            self._phase = "messages"
            return b"\x01", True  # shared: never kick the owner off
        return self._message()

    def _message(self) -> tuple[bytes, bool] | None:
        if not self._buf:
            return None
        kind = self._buf[0]
        size = self._size(kind)
        if size is None:
            return None
        chunk = self._take(size)
        if chunk is None:
            return None
        if kind in _DROP:
            self.dropped += 1
            return chunk, False
        return chunk, True

    def _size(self, kind: int) -> int | None:
        """Length of the message starting the buffer (None: header incomplete)."""
        buf = self._buf
        fixed = {0: 20, 3: 10, 4: 8, 5: 6, 150: 10, 250: 4}
        if kind in fixed:
            return fixed[kind]
        if kind == 2:  # SetEncodings: u16 count at 2
            return None if len(buf) < 4 else 4 + 4 * struct.unpack(">H", buf[2:4])[0]
        if kind == 6:  # ClientCutText: s32 length at 4 (negative: extended clipboard, |length| bytes)
            return None if len(buf) < 8 else 8 + abs(struct.unpack(">i", buf[4:8])[0])
        if kind == 248:  # Fence: u8 payload length at 8
            return None if len(buf) < 9 else 9 + buf[8]
        if kind == 251:  # SetDesktopSize: u8 screen count at 6, 16 bytes per screen
            return None if len(buf) < 8 else 8 + 16 * buf[6]
        if kind == 255:  # QEMU client message: only the extended key event (subtype 0, 12 bytes) is known
            if len(buf) < 2:
                return None
            if buf[1] != 0:
                raise ViewOnlyViolation("unknown QEMU client message")
            return 12
        raise ViewOnlyViolation(f"unknown client message type {kind}")
