"""Conflation: at most one message per key per interval, the latest (a route's
``conflate: {by, interval}``).

A route without it costs nothing: there is no per-message check for one. A route with
it is dispatched as a filtered route whose filter is its :class:`Conflater` (as a
route that keeps is, :mod:`veylor.runtime.keeper`): the route's own filter first; a
message with the key is held (a later one of the same key replaces it: counted) and
not delivered now; a message without it is delivered at once (counted). A timer,
armed by the first message held after each sending, sends every ``interval`` the
latest of each key that changed, in the order of their latest update, to the route's
endpoints: each framed once per wire for all their clients, as any message. No timer
runs while nothing is held.

The route's counters are the conflater's: ``messages`` are those it delivered (held
ones when sent), ``filtered`` those its filter refused, ``conflated`` those replaced
before they were sent, ``unkeyed`` those without the key. With ``snapshot:`` too, what
the route keeps is what it sends.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..config.latestspec import ConflateSpec
from ..filters import CompiledFilter, parse_json_path
from ..latest import MISSING, key_at
from ..message import Message
from .keeper import SEQUENCE, Keeper
from .stats import RouteStats

if TYPE_CHECKING:
    from ..graph import Graph
    from .fanout import Groups
    from .stats import Stats
    from .tap import Tap


class Conflater:
    """One route's conflation (see the module docstring)."""

    __slots__ = (
        "by",
        "deliver",
        "groups",
        "held",
        "held_bytes",
        "inner",
        "keeper",
        "over",
        "source",
        "spec",
        "stats",
        "tap",
        "timer",
    )

    def __init__(self, spec: ConflateSpec, stats: RouteStats) -> None:
        self.spec = spec
        self.by = parse_json_path(spec.by)
        self.stats = stats  # the route's own (the fan-out counts into a scratch one)
        self.source = ""  # the route's source (set by conflaters_for)
        self.inner: Any = None  # the route's filter's predicate
        self.keeper: Keeper | None = None  # the route's snapshot: keeps what is sent
        self.tap: Tap | None = None  # the route's tap, if tapped: sees what is sent
        self.groups: Groups = ()  # the route's endpoints by wire (set by the table's builder)
        self.deliver: Callable[[Groups, bytes, bool], None] | None = None  # the router's
        self.held: OrderedDict[Any, tuple[bytes, bool]] = OrderedDict()  # (its front taken at once)
        self.held_bytes = 0  # of the held payloads
        self.timer: asyncio.TimerHandle | None = None
        self.over = False  # over a bound: the oldest held go at the end of the dispatch (trim)

    def wrap(self, route_filter: CompiledFilter | None, keeper: Keeper | None, tap: Tap | None) -> Conflater:
        """Follow the route's current filter, keeper and tap (a reload may change them;
        a tap wraps this conflater, whose match says no to what it holds, so the tap is
        told here what is sent)."""
        self.inner = route_filter.match if route_filter is not None else None
        self.keeper = keeper
        self.tap = tap
        return self

    def match(self, msg: Message) -> bool:
        inner = self.inner
        stats = self.stats
        if inner is not None and not inner(msg):
            stats.filtered += 1
            return False
        key = key_at(msg, self.by)
        if key is MISSING:  # no key: at once
            stats.unkeyed += 1
            stats.messages += 1
            if self.keeper is not None:
                self.keeper.keep(SEQUENCE.seq, msg)
            return True
        held = self.held
        old = held.pop(key, None)
        if old is not None:  # (re-inserted last: the order of the latest update)
            stats.conflated += 1
            self.held_bytes -= len(old[0])
        data = msg.data
        held[key] = (data, msg.is_text)
        self.held_bytes += len(data)
        if not self.over and (len(held) > self.spec.max_keys or self.held_bytes > self.spec.max_bytes):
            # Bounded: the oldest held go, not lost; once this message's dispatch is over
            # (sent now, they would take a number in the middle of it: the routes keeping
            # it after this one would keep it under theirs, and a snapshot merging them
            # would drop one of the two as the same message).
            self.over = True
            asyncio.get_running_loop().call_soon(self.trim)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.spec.interval, self.send)
        return False

    def send(self) -> None:
        """Send the latest of each key held, in the order of their latest update."""
        self.timer = None
        held, self.held = self.held, OrderedDict()
        self.held_bytes = 0
        for data, is_text in held.values():
            self.send_one(data, is_text)

    def trim(self) -> None:
        """Send the least recently updated held until within ``max_keys`` and ``max_bytes``
        (the newest always stays)."""
        self.over = False
        held, spec = self.held, self.spec
        while len(held) > spec.max_keys or (self.held_bytes > spec.max_bytes and len(held) > 1):
            self.send_oldest()

    def send_oldest(self) -> None:
        """Send the least recently updated key held now (``max_keys`` or ``max_bytes``
        are held: a feed with more keys than that in an interval, or a hostile one, is
        bounded)."""
        data, is_text = self.held.popitem(last=False)[1]
        self.held_bytes -= len(data)
        self.send_one(data, is_text)

    def send_one(self, data: bytes, is_text: bool) -> None:
        """One message to the route's endpoints (and kept, if the route keeps)."""
        if self.deliver is None:
            return
        SEQUENCE.seq += 1
        SEQUENCE.source = self.source
        if self.keeper is not None:
            self.keeper.keep(SEQUENCE.seq, Message(data, is_text))
        self.deliver(self.groups, data, is_text)
        self.stats.messages += 1
        if self.tap is not None:
            self.tap.saw(data, is_text)

    def stop(self) -> None:
        """The route goes, or its setting changes: what is held is sent now (nothing is
        lost to a reload), and the timer ends."""
        if self.timer is not None:
            self.timer.cancel()
        if self.held:
            self.send()
        self.timer = None

    def changed(self, spec: ConflateSpec) -> Conflater:
        """This route's conflater after a reload that set ``spec``: itself when unchanged,
        else a new one (this one sends what it held)."""
        if spec == self.spec:
            return self
        self.stop()
        return Conflater(spec, self.stats)


def conflaters_for(
    graph: Graph,
    old: Mapping[str, Conflater],
    stats: Stats,
    deliver: Callable[[Groups, bytes, bool], None],
) -> dict[str, Conflater]:
    """The conflaters of ``graph``'s routes: each kept while its setting is unchanged;
    those of routes that no longer conflate (or are gone) send what they held now."""
    conflaters: dict[str, Conflater] = {}
    left = dict(old)
    for name, route in graph.routes.items():
        spec = route.spec.conflate
        if spec is not None:
            was = left.pop(name, None)
            conflater = was.changed(spec) if was is not None else Conflater(spec, stats.route(name))
            conflater.deliver = deliver
            conflater.source = route.source
            conflaters[name] = conflater
    for gone in left.values():
        gone.stop()
    return conflaters
