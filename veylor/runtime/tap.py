"""Taps: the last messages that passed a route, for an operator watching (the TUI's
``m``, ``/graph?tap=ROUTE``).

A tap costs nothing while off: there is no per-message check for one. Turning a tap on
rebuilds its source's entry of the routing table with the route dispatched as a
filtered route whose filter is the :class:`Tap` (the route's own filter, if any, then
a ``deque.append`` of a reference to the payload). Turning it off rebuilds the entry
without it. A tap is a lease: each read renews it, and the runtime's tick removes one
not read for ``LEASE`` seconds (a TUI that quit, a client that went away), so a tap can
never be left on by mistake.

Messages are kept as their first ``SHOWN`` bytes (the payload itself when it is that
short: a reference, no copy) and made into one short line each only when read
(:func:`one_line`), twice a second at most.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from ..message import Message
from ..printable import printable

KEEP = 10  # messages a tap keeps (the newest)
LEASE = 5.0  # seconds a tap lives without a read
IDLE = 2.0  # seconds without a read after which a tap gives its place to a new one (at MAX_TAPS)
MAX_TAPS = 8  # taps on at once (each costs its route a call per message)
LINE = 200  # characters of a message shown
SHOWN = LINE * 4  # bytes of a message a tap keeps (a character is up to 4 bytes in UTF-8)


class Matching(Protocol):
    """What a tap follows: a route's filter, or its keeper (runtime/keeper.py)."""

    def match(self, msg: Message) -> bool: ...


class Tap:
    """One route's tap: a filter for the fan-out that passes what the route's own filter
    passes (everything, for an unfiltered route) and keeps the last ``KEEP`` of them."""

    __slots__ = ("expires", "inner", "messages", "route", "seen")

    def __init__(self, route: str, expires: float) -> None:
        self.route = route
        self.expires = expires
        self.inner: Any = None  # the route's filter's predicate (set by the table's builder)
        self.messages: deque[tuple[bytes, bool, int]] = deque(maxlen=KEEP)  # head, text?, size
        self.seen = 0  # messages that passed while tapped

    def wrap(self, route_filter: Matching | None) -> Tap:
        """Follow the route's current filter (a reload may change it)."""
        self.inner = route_filter.match if route_filter is not None else None
        return self

    def match(self, msg: Message) -> bool:
        inner = self.inner
        if inner is not None and not inner(msg):
            return False
        self.saw(msg.data, msg.is_text)
        return True

    def saw(self, data: bytes, is_text: bool) -> None:
        """One message passed the route (or a conflating route sent one it held: its
        match said no when it held it, :mod:`veylor.runtime.conflate`)."""
        # What a line can show, not the payload (up to max_size, 16 MiB, each).
        self.messages.append((data[:SHOWN] if len(data) > SHOWN else data, is_text, len(data)))
        self.seen += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "seen": self.seen,
            "messages": [one_line(data, text, size=size) for data, text, size in reversed(self.messages)],
        }


def one_line(data: bytes, is_text: bool, width: int = LINE, size: int | None = None) -> str:
    """A message (``data``: its first bytes at least, ``size``: its length) as one
    printable line of at most ``width`` characters: text with its control characters
    escaped (a newline is ``\\n``; no terminal escape sequence gets through), binary as
    its size and its first bytes in hex."""
    size = len(data) if size is None else size
    if not is_text:
        head = data[: width // 3].hex(" ")
        return f"<binary, {size:,} bytes> {head}" + (" …" if size > width // 3 else "")
    cut = size > width * 4
    line = printable(data[: width * 4].decode("utf-8", "replace"))
    return line[: width - 1] + "…" if cut or len(line) > width else line
