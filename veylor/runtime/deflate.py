"""``compression: shared``: permessage-deflate at fan-out cost, each message compressed once
for every client of an endpoint that negotiated it.

RFC 7692 lets a server answer ``server_no_context_takeover`` whatever the client
offered (section 7.1.1.1): each message is then compressed on its own, and the
compressed frame of a message is the same bytes for every such client. Veylor
compresses with one raw-deflate stream per endpoint, flushed with ``Z_FULL_FLUSH``
after each message: the flush ends the message's bytes on a byte boundary with the
empty stored block that RFC 7692 strips (``00 00 ff ff``), and resets the stream, so
that no message refers to an earlier one (as a new compressor for each message would,
at twice the cost: a compressor's setup is most of the work on a small message).

Which clients get the shared frame (:func:`kind_of`): those whose negotiated extension
is permessage-deflate without context takeover on Veylor's side and with a window of 15
bits (a client may ask Veylor for a smaller window, ``server_max_window_bits``: a frame
made with 32 KiB of back references is not one it must accept). The others get the
plain frame, which a client that negotiated deflate accepts too (RSV1 unset). A message
under ``compression_min_size`` goes plain to everyone: its deflate stream can be larger
than the message; so does one over :data:`MAX_COMPRESSED` (256 KiB): compressing it
would hold the event loop for milliseconds.
"""

from __future__ import annotations

import zlib
from typing import Any

from websockets.extensions.permessage_deflate import PerMessageDeflate

from .wire import RSV1, ws_frame

LEVEL = 6  # zlib's default: the usual balance
WINDOW_BITS = 15  # the largest window: what a client that asks for no smaller accepts
EMPTY_BLOCK = b"\x00\x00\xff\xff"  # the tail of a flushed deflate stream; RFC 7692 strips it
# Larger messages go plain: compressing holds the event loop (zlib level 6 on JSON: 4 ms
# for 256 KiB, 15 ms for 1 MiB, 227 ms for a hostile upstream's 16 MiB).
MAX_COMPRESSED = 256 * 1024

KINDS = ("shared", "none", "params")  # how a client of such an endpoint is served (counted)


class SharedDeflate:
    """An endpoint's one compressor (see the module docstring)."""

    __slots__ = ("compressor", "min_size")

    def __init__(self, min_size: int) -> None:
        self.min_size = min_size
        self.compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -WINDOW_BITS)

    def frame(self, data: bytes, is_text: bool, plain: bytes) -> bytes:
        """The frame of one message for the clients that take the shared frame: compressed
        (RSV1 set), or ``plain`` for a message under ``min_size``."""
        if not self.min_size <= len(data) <= MAX_COMPRESSED:
            return plain
        body = self.compressor.compress(data) + self.compressor.flush(zlib.Z_FULL_FLUSH)
        if body.endswith(EMPTY_BLOCK):
            body = body[:-4]
        frame = ws_frame(body, is_text)  # (the hot path's, untouched: RSV1 set on a copy here)
        return bytes((frame[0] | RSV1,)) + frame[1:]


def kind_of(extensions: list[Any]) -> str:
    """How a client that completed its handshake is served: ``shared`` (it negotiated
    permessage-deflate that takes the shared frame), ``none`` (no deflate: it offered
    none), ``params`` (deflate with a smaller window for Veylor's messages)."""
    for ext in extensions:
        if isinstance(ext, PerMessageDeflate):
            if ext.local_no_context_takeover and ext.local_max_window_bits >= WINDOW_BITS:
                return "shared"
            return "params"
    return "none"
