"""Fan-out: route each upstream message to endpoints, frame once, write once per client per pass.

The hot path, per upstream message:

1. look up the source's routes in the current routing table (an immutable object,
   swapped whole on reload, so a message sees either the old or the new table);
2. evaluate each route's filter once (JSON decoded at most once, lazily, shared);
3. for each :class:`~veylor.runtime.wire.Wire` among the target endpoints (an endpoint
   reached by two routes counts once), build the message's frame once, and hand it to
   each endpoint of that wire (:meth:`~veylor.runtime.endpoints.Endpoint.enqueue`);
4. at the end of the event-loop pass (``call_soon``), each endpoint joins its pending
   frames into one buffer and writes it to each client with one ``transport.write``
   (a pass that reads a large burst from upstream writes every ``FLUSH_AT`` bytes:
   buffers the kernel takes whole beat one huge buffer per client).

No task, coroutine or queue per client per message, and no knowledge of endpoint
kinds: a kind is its wire and its ``enqueue``. Ordering per client follows the order of
``dispatch`` calls, which is the upstream order of each source.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..filters import CompiledFilter
from ..graph import Graph, Route
from ..message import Message
from .conflate import Conflater
from .keeper import SEQUENCE, Keeper
from .stats import RouteStats
from .tap import Tap
from .wire import Wire

if TYPE_CHECKING:
    from .endpoints import Endpoint

Groups = tuple[tuple[Wire, tuple["Endpoint", ...]], ...]  # target endpoints by wire
GROUPINGS_KEPT = 256  # combinations of filtered routes whose grouping a source remembers


def by_wire(endpoints: Iterable[Endpoint]) -> Groups:
    """The endpoints (each once, in order) grouped by their wire."""
    groups: dict[Wire, list[Endpoint]] = {}
    for ep in dict.fromkeys(endpoints):
        groups.setdefault(ep.wire, []).append(ep)
    return tuple((wire, tuple(eps)) for wire, eps in groups.items())


@dataclass(frozen=True, slots=True)
class SourceFanout:
    """The routes of one source, prepared for dispatch."""

    always: Groups  # reached by an unfiltered route
    always_stats: tuple[RouteStats, ...]
    filtered: tuple[tuple[CompiledFilter | Tap | Keeper | Conflater, tuple[Endpoint, ...], RouteStats], ...]
    # What it was built from, to reuse it when a reload changed none of it.
    routes: tuple[Route, ...] = ()
    targets: tuple[Endpoint, ...] = ()
    taps: tuple[Tap, ...] = ()  # routes tapped (runtime/tap.py): dispatched as filtered
    keepers: tuple[Keeper, ...] = ()  # routes that keep (runtime/keeper.py): dispatched as filtered
    conflaters: tuple[Conflater, ...] = ()  # routes that conflate (runtime/conflate.py): likewise
    # The groups for each combination of filtered routes' endpoints seen so far.
    groupings: dict[tuple[Endpoint, ...], Groups] = field(default_factory=dict)

    def matched(self, data: bytes, is_text: bool) -> Groups:
        """The target groups of one message: the unfiltered routes' and those of the
        filtered routes that pass it (each filter evaluated once, JSON decoded at most
        once, and counted)."""
        msg = Message(data, is_text)
        extra: tuple[Endpoint, ...] = ()
        for match, endpoints, st in self.filtered:
            if match.match(msg):
                st.messages += 1
                extra += endpoints
            else:
                st.filtered += 1
        return self.with_extra(extra) if extra else self.always

    def with_extra(self, extra: tuple[Endpoint, ...]) -> Groups:
        """The groups of the unfiltered targets plus ``extra`` (remembered: a source's
        filters select few distinct combinations)."""
        groups = self.groupings.get(extra)
        if groups is None:
            groups = by_wire((*(ep for _, eps in self.always for ep in eps), *extra))
            if len(self.groupings) < GROUPINGS_KEPT:
                self.groupings[extra] = groups
        return groups


RoutingTable = Mapping[str, SourceFanout]


def build_table(
    graph: Graph,
    endpoints: Mapping[str, Endpoint],
    stats: Mapping[str, RouteStats],
    previous: RoutingTable | None = None,
    taps: Mapping[str, Tap] | None = None,
    keepers: Mapping[str, Keeper] | None = None,
    conflaters: Mapping[str, Conflater] | None = None,
) -> dict[str, SourceFanout]:
    """The routing table for ``graph`` over the running endpoint objects. An entry of
    ``previous`` built from the same routes, endpoint objects, taps and keepers is kept
    as it is. A tapped route is dispatched as a filtered route whose filter is its
    :class:`Tap`, a route that keeps as one whose filter is its :class:`Keeper` (a
    tapped route that keeps: the tap's, around the keeper), a route that conflates as
    one whose filter is its :class:`Conflater` (which keeps what it sends, if the route
    keeps)."""
    table: dict[str, SourceFanout] = {}
    taps = taps or {}
    keepers = keepers or {}
    conflaters = conflaters or {}

    def own(r: Route) -> CompiledFilter | Keeper | Conflater | None:
        keeper = keepers.get(r.name)
        conflater = conflaters.get(r.name)
        if conflater is not None:
            conflater.groups = by_wire(endpoints[n] for n in r.endpoints)
            return conflater.wrap(r.filter, keeper, taps.get(r.name))
        return keeper.wrap(r.filter) if keeper is not None else r.filter

    for source, routes in graph.routes_by_source.items():
        before = previous.get(source) if previous is not None else None
        keeping = tuple(keepers[r.name] for r in routes if r.name in keepers)
        conflating = tuple(conflaters[r.name] for r in routes if r.name in conflaters)
        tapped = tuple(taps[r.name].wrap(own(r)) for r in routes if r.name in taps)
        if (
            before is not None
            and before.routes is routes
            and before.taps == tapped
            and before.keepers == keeping
            and before.conflaters == conflating
            and all(endpoints.get(e.name) is e for e in before.targets)
        ):
            table[source] = before
            continue
        always: list[Endpoint] = []
        always_stats: list[RouteStats] = []
        filtered = []
        for route in routes:
            targets = tuple(endpoints[name] for name in route.endpoints)
            match = taps.get(route.name) or own(route)
            if match is None:
                always.extend(targets)
                always_stats.append(stats[route.name])
            else:  # (a conflating route counts for itself: the fan-out's count is a scratch one)
                counted = RouteStats() if route.name in conflaters else stats[route.name]
                filtered.append((match, targets, counted))
        if always or filtered:
            targets = tuple(dict.fromkeys(e for r in routes for e in (endpoints[n] for n in r.endpoints)))
            table[source] = SourceFanout(
                by_wire(always),
                tuple(always_stats),
                tuple(filtered),
                routes,
                targets,
                tapped,
                keeping,
                conflating,
            )
    return table


log = logging.getLogger("veylor.fanout")
BUG_LOG_INTERVAL = 60.0  # seconds between two tracebacks of a failing flush


class Router:
    """Owns the routing table and the per-pass write coalescing."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.table: RoutingTable = {}
        self._dirty: list[Endpoint] = []
        self._flush_scheduled = False
        self._bug_logged_at = -BUG_LOG_INTERVAL

    def install(self, table: RoutingTable) -> None:
        """Swap the routing table (takes effect between two messages)."""
        self.table = table

    def dispatch(self, source: str, data: bytes, is_text: bool) -> None:
        """Deliver one upstream message to every endpoint its routes select."""
        fan = self.table.get(source)
        if fan is None:
            return
        seq = SEQUENCE
        seq.seq += 1  # (this message's number and source: see runtime/keeper.py)
        seq.source = source
        for st in fan.always_stats:
            st.messages += 1
        groups = fan.matched(data, is_text) if fan.filtered else fan.always
        # (deliver()'s body, inline: a call per message costs 1.3-1.6% of the instructions
        # per delivery at 100 clients, measured with benchmarks/hotpath.py)
        dirty = self._dirty
        for wire, endpoints in groups:
            frame = wire.frame(data, is_text)
            for ep in endpoints:
                if ep.enqueue(frame, data, is_text):
                    dirty.append(ep)
        if dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def deliver(self, groups: Groups, data: bytes, is_text: bool) -> None:
        """Deliver one message to these endpoints (a conflating route's, when it sends
        what it held): framed once per wire, written at the end of the pass."""
        dirty = self._dirty
        for wire, endpoints in groups:
            frame = wire.frame(data, is_text)
            for ep in endpoints:
                if ep.enqueue(frame, data, is_text):
                    dirty.append(ep)
        if dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write each endpoint's frames of this pass to its clients, one write per client."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for ep in dirty:
            ep.scheduled = False
            try:
                ep.flush()
            except Exception:  # a bug: it must not stop the flushes of the other endpoints
                ep.drop_pending()
                now = time.monotonic()
                if now - self._bug_logged_at >= BUG_LOG_INTERVAL:
                    self._bug_logged_at = now
                    log.exception("fan-out: flushing endpoint %s failed (please report it)", ep.name)
