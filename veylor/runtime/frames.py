"""Reassembly of incoming WebSocket data frames into messages, for our connection classes."""

from __future__ import annotations

from typing import Any

from websockets.frames import Frame, Opcode

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT


class DataFrames:
    """Mixin for Veylor's WebSocket connections (:mod:`veylor.runtime.wsconn`): data
    frames from the sans-I/O protocol's events, reassembled into messages (payload
    bytes and frame type; text is not decoded).

    The protocol layer has already enforced the size limit and the frame sequence.
    """

    _fragments: list[bytes] | None = None
    _fragments_text = False

    def message_of(self, event: Any) -> tuple[bytes, bool] | None:
        """``(payload, is_text)`` when ``event`` completes a message; ``None`` otherwise."""
        if not isinstance(event, Frame):
            raise RuntimeError("invariant broken: isinstance(event, Frame)")
        if event.opcode is CONT:
            if self._fragments is None:  # pragma: no cover - the protocol layer rejects this
                return None
            self._fragments.append(bytes(event.data))
            if not event.fin:
                return None
            message = b"".join(self._fragments), self._fragments_text
            self._fragments = None
            return message
        if not event.fin:
            self._fragments, self._fragments_text = [bytes(event.data)], event.opcode is TEXT
            return None
        return bytes(event.data), event.opcode is TEXT


def valid_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8 (what a text frame must carry, RFC 6455 8.1);
    ASCII, the common case, is checked without decoding."""
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def is_data(event: Any) -> bool:
    return isinstance(event, Frame) and event.opcode in (TEXT, BINARY, CONT)
