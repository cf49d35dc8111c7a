"""Latest-value delivery in the running relay: what routes keep for the clients that join
later (the pure store is :mod:`veylor.latest`).

A route without ``snapshot:`` costs nothing: there is no per-message check for one.
A route with it is dispatched as a filtered route whose filter is its :class:`Keeper`
(the route's own filter, if any, then a keep), as a tapped route is
(:mod:`veylor.runtime.tap`).

Every dispatched message gets the next number of :data:`SEQUENCE` (one counter for
the process, one increment per message): the kept messages of several routes into one
endpoint merge in the order they came.

Where the snapshot meets the live stream: a client joins between two messages (the
event loop runs one callback at a time). Its endpoint may hold messages of this pass
for the end of the pass; those are kept already, so the endpoint writes them to the
clients there first (:meth:`~veylor.runtime.clients.ClientEndpoint.add`), then the
joiner gets everything kept, then the live stream: no gap, no duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..config.latestspec import SnapshotSpec
from ..filters import CompiledFilter
from ..latest import Kept, kept_for, snapshot
from ..message import Message

if TYPE_CHECKING:
    from ..graph import Graph
    from .clients import ClientEndpoint


class Sequence:
    """The number of the message being dispatched (see the module docstring)."""

    __slots__ = ("seq",)

    def __init__(self) -> None:
        self.seq = 0


SEQUENCE = Sequence()  # one for the process: a number never comes back, whatever runs


class Keeper:
    """One route's keeping: a filter for the fan-out that passes what the route's own
    filter passes (everything, for an unfiltered route) and keeps it in :attr:`kept`."""

    __slots__ = ("inner", "kept")

    def __init__(self, spec: SnapshotSpec) -> None:
        self.kept: Kept = kept_for(spec)
        self.inner: Any = None  # the route's filter's predicate (set by the table's builder)

    @property
    def spec(self) -> SnapshotSpec:
        return self.kept.spec

    def wrap(self, route_filter: CompiledFilter | None) -> Keeper:
        """Follow the route's current filter (a reload may change it)."""
        self.inner = route_filter.match if route_filter is not None else None
        return self

    def match(self, msg: Message) -> bool:
        inner = self.inner
        if inner is not None and not inner(msg):
            return False
        self.kept.keep(SEQUENCE.seq, msg)
        return True

    def changed(self, spec: SnapshotSpec) -> Keeper:
        """This route's keeper after a reload that set ``spec``: itself when unchanged,
        else a new one that takes what this one kept, where it means the same."""
        if spec == self.kept.spec:
            return self
        new = Keeper(spec)
        new.kept.adopt(self.kept)
        new.kept.evicted += self.kept.evicted  # (counters go on: Prometheus sees no reset)
        new.kept.unkept += self.kept.unkept
        return new


def welcome(ep: ClientEndpoint[Any], client: Any) -> None:
    """Write the snapshot to a client of ``ep`` that just joined: the kept messages
    (this pass's too: :meth:`~veylor.runtime.clients.ClientEndpoint.add` wrote them to
    the others first), then the end markers; through the same accounting as live data
    (what it has not read counts against its ``client_buffer``), counted. What comes
    next is live."""
    wire = ep.wire
    frames: list[bytes] = []
    messages: list[tuple[bytes, bool]] = []  # (for a client whose frames are its own)
    for entry in snapshot(ep.kept):
        frame = entry.frame(wire)
        if frame is not None:
            frames.append(frame)
            messages.append((entry.data, entry.is_text))
    count = len(frames)
    frames.extend(ep.ends)
    if not frames:
        return
    messages.extend((end, True) for end in ep.end_texts)
    data = b"".join(frames)
    try:
        ep.write_one(client, data, messages)
    except Exception as exc:
        ep.broken(client, exc)
        return
    client.unwritten -= len(data)  # (given more than the endpoint's shared writes)
    stats = ep.stats
    stats.snapshots += 1
    stats.snapshot_messages += count
    stats.messages_out += count
    stats.bytes_out += len(data)


def keepers_for(graph: Graph, old: Mapping[str, Keeper], endpoints: Mapping[str, Any]) -> dict[str, Keeper]:
    """The keepers of ``graph``'s routes (a route whose ``snapshot:`` did not change keeps
    what it kept; one whose setting changed keeps what still means the same), and each
    endpoint with clients told what the routes into it keep and their end markers."""
    keepers: dict[str, Keeper] = {}
    for name, route in graph.routes.items():
        spec = route.spec.snapshot
        if spec is not None:
            was = old.get(name)
            keepers[name] = was.changed(spec) if was is not None else Keeper(spec)
    from .clients import ClientEndpoint  # (it imports this module: here, not at the top)

    for name, ep in endpoints.items():
        if not isinstance(ep, ClientEndpoint):
            continue  # (a kind without clients of its own: nobody joins it)
        into = [keepers[r.name] for r in graph.routes.values() if name in r.endpoints and r.name in keepers]
        ep.kept = tuple(k.kept for k in into)
        ends = [e.encode() for e in dict.fromkeys(k.spec.end for k in into) if e is not None]
        framed = [(e, f) for e in ends if (f := ep.wire.frame(e, True)) is not None]
        ep.end_texts = tuple(e for e, _ in framed)
        ep.ends = tuple(f for _, f in framed)
    return keepers
