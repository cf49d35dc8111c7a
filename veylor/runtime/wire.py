"""Wire formats, pure: WebSocket data frames (server to client), Unix framings.

Veylor builds each outgoing frame once per message and writes the same bytes to
every client (see :mod:`veylor.runtime.fanout`). websockets' own ``broadcast()``
builds a frame per connection; for a relay that is the dominant cost, so the
frames for downstream clients are built here.

Each framing is a :class:`Wire`: a name and a function from a message to its frame
(``None`` when the framing cannot carry the message). An endpoint names its wire;
the fan-out frames each message once per wire, whatever the endpoint's kind.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_U16 = struct.Struct("!BBH")
_U64 = struct.Struct("!BBQ")
_LEN = struct.Struct("!I")


RSV1 = 0x40  # a frame's first byte: its payload is compressed (permessage-deflate, RFC 7692)


def ws_frame(payload: bytes, is_text: bool) -> bytes:
    """One unfragmented, unmasked (server-to-client) WebSocket data frame (RFC 6455 5.2).
    (A compressed one: runtime/deflate.py sets :data:`RSV1` in its first byte.)"""
    first = 0x81 if is_text else 0x82  # FIN + opcode text/binary, RSV bits 0: uncompressed
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _U16.pack(first, 126, n) + payload
    return _U64.pack(first, 127, n) + payload


def length_prefixed_frame(payload: bytes) -> bytes:
    """The Veylor 1.x Unix socket framing: 4-byte big-endian length, then the payload."""
    return _LEN.pack(len(payload)) + payload


def line_frame(payload: bytes, is_text: bool) -> bytes | None:
    """A newline-terminated line, or ``None`` when the message cannot be one
    (binary, or containing a newline): such messages are skipped and counted."""
    if not is_text or b"\n" in payload:
        return None
    return payload + b"\n"


@dataclass(frozen=True, slots=True)
class Wire:
    """A framing: ``frame(payload, is_text)`` is the bytes every client of an endpoint
    with this wire gets for the message, or ``None`` when the framing cannot carry it."""

    name: str
    frame: Callable[[bytes, bool], bytes | None]


WS = Wire("websocket", ws_frame)
LENGTH_PREFIXED = Wire("length-prefixed", lambda payload, _is_text: length_prefixed_frame(payload))
LINES = Wire("lines", line_frame)
WIRES = {w.name: w for w in (WS, LENGTH_PREFIXED, LINES)}


class FrameError(ValueError):
    """A client sent a frame that breaks the framing; the client is closed."""


class LengthPrefixedDecoder:
    """Incremental decoder of length-prefixed frames from a byte stream.

    A frame split across reads, or several frames in one read, decode the same as
    one frame per read. A length of 0 or above ``max_size`` raises
    :class:`FrameError` before the payload is buffered.
    """

    __slots__ = ("buffer", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        buf = self.buffer
        buf += data
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 4:
                (n,) = _LEN.unpack_from(buf, pos)
                if n == 0 or n > self.max_size:
                    why = (
                        "empty frame (length 0)" if n == 0 else f"frame of {n} bytes exceeds {self.max_size}"
                    )
                    raise FrameError(why)
                if end - pos - 4 < n:
                    break
                yield bytes(buf[pos + 4 : pos + 4 + n])
                pos += 4 + n
        finally:
            del buf[:pos]


class LineDecoder:
    """Incremental decoder of newline-delimited text lines (``\\r\\n`` accepted)."""

    __slots__ = ("buffer", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        buf = self.buffer
        buf += data
        start = 0
        try:
            while (nl := buf.find(b"\n", start)) >= 0:
                line = bytes(buf[start:nl]).removesuffix(b"\r")
                start = nl + 1
                if len(line) > self.max_size:
                    raise FrameError(f"line of {len(line)} bytes exceeds {self.max_size}")
                if line:
                    yield line
            if len(buf) - start > self.max_size:
                raise FrameError(f"line longer than {self.max_size} bytes")
        finally:
            del buf[:start]
