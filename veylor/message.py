"""One upstream message as the fan-out sees it: raw bytes, decoded at most once, lazily."""

from __future__ import annotations

import contextlib
import json
from typing import Any


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NOT_JSON: Any = _Sentinel("NOT_JSON")
"""The value of :attr:`Message.json` for a payload that is not a JSON document."""

_UNSET: Any = _Sentinel("UNSET")


class Message:
    """An upstream frame's payload. ``text`` and ``json`` decode on first use and are cached,
    so however many routes filter one message, it is decoded once."""

    __slots__ = ("_json", "_text", "data", "is_text")

    def __init__(self, data: bytes, is_text: bool) -> None:
        self.data = data
        self.is_text = is_text
        self._text: Any = _UNSET
        self._json: Any = _UNSET

    @classmethod
    def of(cls, payload: str | bytes) -> Message:
        """Build from a websockets-style payload: ``str`` is a text frame, ``bytes`` binary."""
        if isinstance(payload, str):
            msg = cls(payload.encode(), True)
            msg._text = payload
            return msg
        return cls(bytes(payload), False)

    @property
    def text(self) -> str | None:
        """The text of a text frame (``None`` for a binary frame or invalid UTF-8)."""
        if self._text is _UNSET:
            text = None
            if self.is_text:
                with contextlib.suppress(UnicodeDecodeError):
                    text = self.data.decode()
            self._text = text
        return self._text  # type: ignore[no-any-return]  # (str | None once set: no cast on this path)

    @property
    def json(self) -> Any:
        """The parsed JSON document, or :data:`NOT_JSON`. A binary frame holding UTF-8 JSON parses too."""
        if self._json is _UNSET:
            try:
                self._json = json.loads(self.data)
            except (ValueError, RecursionError):
                self._json = NOT_JSON
        return self._json


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("a key appears twice")
    return dict(pairs)


class ClientMessage(Message):
    """A client's message as an ``allow`` filter sees it: a JSON object with a key twice
    is not JSON here. Parsers disagree on which of the two values counts (Python's keeps
    the last, others the first): ``{"op": "unsubscribe", "op": "subscribe"}`` must not
    pass a filter on ``op`` by showing it one value while the upstream reads the other."""

    __slots__ = ()

    @property
    def json(self) -> Any:
        if self._json is _UNSET:
            try:
                self._json = json.loads(self.data, object_pairs_hook=_unique_keys)
            except (ValueError, RecursionError):
                self._json = NOT_JSON
        return self._json
