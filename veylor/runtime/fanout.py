"""Fan-out: route each upstream message to endpoints, encode once, write once per client per pass.

The hot path, per upstream message:

1. look up the source's routes in the current routing table (an immutable object,
   swapped whole on reload, so a message sees either the old or the new table);
2. evaluate each route's filter once (JSON decoded at most once, lazily, shared);
3. for each target endpoint (an endpoint reached by two routes counts once), build
   the frame for its wire format once per message and append it to the endpoint's
   pending list;
4. at the end of the event-loop pass (``call_soon``), each endpoint joins its pending
   frames into one buffer and writes it to each client with one ``transport.write``
   (a pass that reads a large burst from upstream writes every ``FLUSH_AT`` bytes:
   buffers the kernel takes whole beat one huge buffer per client).

No task, coroutine or queue per client per message. Ordering per client follows the
order of ``dispatch`` calls, which is the upstream order of each source.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..filters import CompiledFilter
from ..graph import Graph, Route
from ..message import Message
from .wire import LENGTH_PREFIXED, LINES, WS, length_prefixed_frame, line_frame, ws_frame

if TYPE_CHECKING:
    from .endpoints import Endpoint


FLUSH_AT = 64 * 1024  # bytes pending for one endpoint that trigger a write within the pass


class RouteStats:
    """Counters of one route edge (read by metrics and the TUI)."""

    __slots__ = ("messages",)

    def __init__(self) -> None:
        self.messages = 0


@dataclass(frozen=True, slots=True)
class SourceFanout:
    """The routes of one source, prepared for dispatch."""

    always: tuple[Endpoint, ...]  # reached by an unfiltered route (each once)
    always_stats: tuple[RouteStats, ...]
    filtered: tuple[tuple[CompiledFilter, tuple[Endpoint, ...], RouteStats], ...]
    # What it was built from, to reuse it when a reload changed none of it.
    routes: tuple[Route, ...] = ()
    targets: tuple[Endpoint, ...] = ()


RoutingTable = Mapping[str, SourceFanout]


def build_table(
    graph: Graph,
    endpoints: Mapping[str, Endpoint],
    stats: Mapping[str, RouteStats],
    previous: RoutingTable | None = None,
) -> dict[str, SourceFanout]:
    """The routing table for ``graph`` over the running endpoint objects. An entry of
    ``previous`` built from the same routes and endpoint objects is kept as it is."""
    table: dict[str, SourceFanout] = {}
    for source, routes in graph.routes_by_source.items():
        before = previous.get(source) if previous is not None else None
        if (
            before is not None
            and before.routes is routes
            and all(endpoints.get(e.name) is e for e in before.targets)
        ):
            table[source] = before
            continue
        always: dict[str, Endpoint] = {}
        always_stats: list[RouteStats] = []
        filtered = []
        for route in routes:
            targets = tuple(endpoints[name] for name in route.endpoints)
            if route.filter is None:
                always.update((e.name, e) for e in targets)
                always_stats.append(stats[route.name])
            else:
                filtered.append((route.filter, targets, stats[route.name]))
        if always or filtered:
            targets = tuple(dict.fromkeys(e for r in routes for e in (endpoints[n] for n in r.endpoints)))
            table[source] = SourceFanout(
                tuple(always.values()), tuple(always_stats), tuple(filtered), routes, targets
            )
    return table


class Router:
    """Owns the routing table and the per-pass write coalescing."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.table: RoutingTable = {}
        self._dirty: list[Endpoint] = []
        self._flush_scheduled = False

    def install(self, table: RoutingTable) -> None:
        """Swap the routing table (takes effect between two messages)."""
        self.table = table

    def dispatch(self, source: str, data: bytes, is_text: bool) -> None:
        """Deliver one upstream message to every endpoint its routes select."""
        fan = self.table.get(source)
        if fan is None:
            return
        for st in fan.always_stats:
            st.messages += 1
        targets: Iterable[Endpoint] = fan.always
        if fan.filtered:
            msg = Message(data, is_text)
            extra: list[Endpoint] = []
            for match, endpoints, st in fan.filtered:
                if match.match(msg):
                    st.messages += 1
                    extra.extend(endpoints)
            if extra:
                targets = dict.fromkeys((*fan.always, *extra))  # each endpoint once, in order
        ws = lp = None
        ln: bytes | bool | None = False
        dirty = self._dirty
        for ep in targets:
            wire = ep.wire
            if wire is WS:
                frame = ws if ws is not None else (ws := ws_frame(data, is_text))
            elif wire is LENGTH_PREFIXED:
                frame = lp if lp is not None else (lp := length_prefixed_frame(data))
            elif wire is LINES:
                if ln is False:
                    ln = line_frame(data, is_text)
                if ln is None:
                    ep.cannot_frame("newline" if is_text else "binary")
                    continue
                frame = ln  # type: ignore[assignment]
            else:  # per-client encoding (compression): the endpoint gets the message itself
                ep.pending_messages.append((data, is_text))
                frame = None
            if frame is not None:
                ep.pending.append(frame)
                ep.pending_bytes += len(frame)
                if ep.pending_bytes >= FLUSH_AT:
                    # A big pass (a burst read from upstream): write what we have now
                    # rather than one huge buffer per client that the kernel cannot take.
                    ep.flush()
                    continue
            if not ep.scheduled:
                ep.scheduled = True
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
            ep.flush()
