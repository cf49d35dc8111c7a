"""Shared pieces of the benchmark: the message format and its fixed offsets.

Every benchmark message is a text frame holding exactly ``SIZE`` bytes of JSON::

    {"seq":          42,"ts":1764100000123456789,"s":"BTCUSDT","p":"xxxx..."}

Fixed width means fixed offsets: the load client reads the sequence number and the
send timestamp of any frame without parsing JSON, and every frame on the wire has
the same length (``FRAME``), so a client can account for a whole read at once.
"""

from __future__ import annotations

import os
import struct

SIZE = 200  # payload bytes, as in the performance issue (200-byte JSON text messages)
SYMBOLS = (b"BTCUSDT", b"ETHUSDT")

_HEAD = b'{"seq":'
SEQ_AT = len(_HEAD)  # 7
SEQ_LEN = 12
TS_AT = SEQ_AT + SEQ_LEN + len(b',"ts":')  # 25
TS_LEN = 19
_PREFIX_LEN = TS_AT + TS_LEN + len(b',"s":"BTCUSDT","p":"')
PAD = SIZE - _PREFIX_LEN - len(b'"}')

# Server-to-client text frame header for a SIZE-byte payload (126 <= SIZE < 65536).
WS_HEADER = struct.pack("!BBH", 0x81, 126, SIZE)
UNIX_HEADER = struct.pack("!I", SIZE)
HEADER = len(WS_HEADER)  # 4 for both wire formats
FRAME = HEADER + SIZE
assert len(UNIX_HEADER) == HEADER


def message(seq: int, ts_ns: int, symbol: bytes = SYMBOLS[0]) -> bytes:
    """One benchmark payload (exactly SIZE bytes)."""
    # Padded with spaces, not zeros: JSON allows whitespace, not leading zeros.
    out = b'{"seq":%12d,"ts":%19d,"s":"%s","p":"%s"}' % (seq, ts_ns, symbol, b"x" * PAD)
    assert len(out) == SIZE
    return out


def seq_of(payload: bytes | memoryview, at: int = 0) -> int:
    return int(payload[at + SEQ_AT : at + SEQ_AT + SEQ_LEN])


def ts_of(payload: bytes | memoryview, at: int = 0) -> int:
    return int(payload[at + TS_AT : at + TS_AT + TS_LEN])


def frame_head(buf: bytes, pos: int, ws: bool) -> tuple[int, int, int] | None:
    """The header of the frame at ``pos`` in ``buf`` as (opcode, payload start, payload
    length): a WebSocket frame from a server (unmasked) with ``ws``, else a Unix one (a
    4-byte length; text). None while the header is incomplete."""
    end = len(buf)
    if not ws:
        if end - pos < 4:
            return None
        (length,) = struct.unpack_from("!I", buf, pos)
        return 1, pos + 4, length
    if end - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    opcode, length, start = b0 & 0x0F, b1 & 0x7F, pos + 2
    if length == 126:
        if end - pos < 4:
            return None
        (length,) = struct.unpack_from("!H", buf, pos + 2)
        start = pos + 4
    elif length == 127:
        if end - pos < 10:
            return None
        (length,) = struct.unpack_from("!Q", buf, pos + 2)
        start = pos + 10
    return opcode, start, length


def masked(opcode: int, body: bytes) -> bytes:
    """A client-to-server frame (masked), for pongs and close frames (< 126 bytes)."""
    mask = os.urandom(4)
    return (
        bytes((0x80 | opcode, 0x80 | len(body))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(body))
    )
