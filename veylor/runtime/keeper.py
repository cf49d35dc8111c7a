"""Latest-value delivery in the running relay: what routes keep for the clients that join
later (``snapshot:``) and for those that come back (``resume:``); the pure stores are
:mod:`veylor.latest`.

A route without either costs nothing: there is no per-message check for one. A route
with one is dispatched as a filtered route whose filter is its :class:`Keeper`
(the route's own filter, if any, then a keep), as a tapped route is
(:mod:`veylor.runtime.tap`).

Every dispatched message gets the next number of :data:`SEQUENCE` (one counter for
the process, one increment per message): the kept messages of several routes into one
endpoint merge in the order they came.

Where the snapshot meets the live stream: a client joins between two messages (the
event loop runs one callback at a time). Its endpoint may hold messages of this pass
for the end of the pass; those are kept already, so the endpoint writes them to the
clients there first (:meth:`~veylor.runtime.clients.ClientEndpoint.add`), then the
joiner gets everything kept, then the live stream: no gap, no duplicate. A client
that comes back with ``?since=V`` (:attr:`DownstreamConnection.resume_from`) gets what
the routes' histories kept after V instead of the snapshot, the same way.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..config.latestspec import ResumeSpec, SnapshotSpec
from ..filters import CompiledFilter
from ..latest import Entry, History, Kept, kept_for, snapshot
from ..message import Message

if TYPE_CHECKING:
    from ..graph import Graph
    from .clients import ClientEndpoint
    from .stats import Stats


class Sequence:
    """The number of the message being dispatched (see the module docstring)."""

    __slots__ = ("seq", "source")

    def __init__(self) -> None:
        self.seq = 0
        self.source = ""  # ... and its source (slow_client: conflate keys by it: runtime/catchup.py)


Assembled = tuple[bytes, list[tuple[bytes, bool]], int]  # a welcome's bytes, its messages, how many kept

SEQUENCE = Sequence()  # one for the process: a number never comes back, whatever runs


class Keeper:
    """One route's keeping: a filter for the fan-out that passes what the route's own
    filter passes (everything, for an unfiltered route) and keeps it in :attr:`kept`
    (a snapshot) and :attr:`history` (for ``?since=``), those the route asks for."""

    __slots__ = ("history", "inner", "kept")

    def __init__(self, snapshot: SnapshotSpec | None, resume: ResumeSpec | None) -> None:
        self.kept: Kept | None = kept_for(snapshot) if snapshot is not None else None
        self.history: History | None = History(resume) if resume is not None else None
        self.inner: Any = None  # the route's filter's predicate (set by the table's builder)

    @property
    def specs(self) -> tuple[SnapshotSpec | None, ResumeSpec | None]:
        return (
            self.kept.spec if self.kept is not None else None,
            self.history.spec if self.history is not None else None,
        )

    def wrap(self, route_filter: CompiledFilter | None) -> Keeper:
        """Follow the route's current filter (a reload may change it)."""
        self.inner = route_filter.match if route_filter is not None else None
        return self

    def match(self, msg: Message) -> bool:
        inner = self.inner
        if inner is not None and not inner(msg):
            return False
        self.keep(SEQUENCE.seq, msg)
        return True

    def keep(self, seq: int, msg: Message) -> None:
        if self.kept is not None:
            self.kept.keep(seq, msg)
        if self.history is not None:
            self.history.keep(seq, msg)

    def changed(self, snapshot: SnapshotSpec | None, resume: ResumeSpec | None) -> Keeper:
        """This route's keeper after a reload that set these: itself when unchanged, else
        a new one that takes what this one kept, where it means the same (counters go
        on: Prometheus sees no reset)."""
        if (snapshot, resume) == self.specs:
            return self
        new = Keeper(snapshot, resume)
        if new.kept is not None and self.kept is not None:
            new.kept.adopt(self.kept)
            new.kept.evicted += self.kept.evicted
            new.kept.unkept += self.kept.unkept
        if new.history is not None and self.history is not None:
            new.history.adopt(self.history)
            for counter in ("evicted", "unkept", "unordered"):
                setattr(new.history, counter, getattr(new.history, counter) + getattr(self.history, counter))
        return new


class Resumable:
    """A route's history as an endpoint reads it for a client that comes back: the
    history, the route's counters, and the ``lost`` marker (its text and frame)."""

    __slots__ = ("history", "lost", "lost_frame", "stats")

    def __init__(self, history: History, stats: Any, lost: bytes | None, lost_frame: bytes | None) -> None:
        self.history = history
        self.stats = stats
        self.lost = lost
        self.lost_frame = lost_frame


def welcome(ep: ClientEndpoint[Any], client: Any) -> None:
    """Write what a client of ``ep`` that just joined gets first: for one that comes back
    with ``?since=V`` (and routes into ``ep`` that keep a history), the ``lost`` marker
    if the history no longer reaches V, then every kept message after V; for any
    other, the snapshot, then the end markers. The kept messages include this pass's
    (:meth:`~veylor.runtime.clients.ClientEndpoint.add` wrote them to the others
    first). Through the same accounting as live data (what it has not read counts
    against its ``client_buffer``), counted. What comes next is live."""
    since = getattr(client, "resume_from", None)
    resumed = False
    if since is not None and ep.histories:
        resumed = True
        entries, head = _resumed(ep, since)
        data, messages, count = _assembled(ep, entries, head, [])
    else:
        data, messages, count = _snapshot(ep)
    if not data:
        return
    try:
        ep.write_one(client, data, messages)
    except Exception as exc:
        ep.broken(client, exc)
        return
    client.unwritten -= len(data)  # (given more than the endpoint's shared writes)
    stats = ep.stats
    if not resumed:
        stats.snapshots += 1
        stats.snapshot_messages += count
    stats.messages_out += count
    stats.bytes_out += len(data)


def _assembled(
    ep: ClientEndpoint[Any],
    entries: list[Entry],
    head: list[tuple[bytes, bytes]],
    tail: list[tuple[bytes, bytes]],
) -> Assembled:
    """``head`` markers, ``entries`` and ``tail`` markers in ``ep``'s wire, joined: the
    bytes, the messages (for a client whose frames are its own: compressed) and the
    count of entries framed (one the wire cannot carry is left out)."""
    wire = ep.wire
    frames = [f for _, f in head]
    messages: list[tuple[bytes, bool]] = [(t, True) for t, _ in head]
    for entry in entries:
        frame = entry.frame(wire)
        if frame is not None:
            frames.append(frame)
            messages.append((entry.data, entry.is_text))
    count = len(frames) - len(head)
    frames.extend(f for _, f in tail)
    messages.extend((t, True) for t, _ in tail)
    return b"".join(frames), messages, count


def _snapshot(ep: ClientEndpoint[Any]) -> Assembled:
    """The snapshot a client joining ``ep`` now gets, assembled once for every client that
    joins before the next message is kept (a hundred joining at once cost one assembly:
    10,000 keys took 7-11 ms each); forgotten at the end of the pass, so that no copy of
    a large snapshot outlives it."""
    key = (SEQUENCE.seq, ep.kept, ep.ends)
    made = ep.assembled
    if made is not None and made[0] == key:
        return made[1]
    assembled = _assembled(ep, list(snapshot(ep.kept)), [], list(zip(ep.end_texts, ep.ends, strict=True)))
    if ep.assembled is None:
        asyncio.get_running_loop().call_soon(ep.forget_assembled)
    ep.assembled = (key, assembled)
    return assembled


def _resumed(ep: ClientEndpoint[Any], since: float) -> tuple[list[Entry], list[tuple[bytes, bytes]]]:
    """What the routes' histories kept after ``since``, merged in the order it came, and
    the ``lost`` markers of those that no longer reach it; each route's resume counted.

    At most the endpoint's ``client_buffer`` of it (the newest): a client cannot hold
    more before its ``slow_client`` policy applies, and a thousand clients coming back
    from far must not each get a copy of a 64 MiB history. A client that missed more
    gets the marker, as one the history no longer reaches."""
    room = ep.spec.client_buffer
    found: list[list[Entry]] = []
    lost: list[bool] = []
    floor = -1  # (what is older than a history's newest that did not fit cannot fit either)
    for r in ep.histories:
        entries, gone, cut = r.history.newest_since(since, room)
        found.append(entries)
        lost.append(gone)
        if cut is not None:
            floor = max(floor, cut)
    if len(found) == 1:
        out = found[0]  # (one history: its numbers are distinct, and above any floor)
    else:
        out, last = [], floor
        for entry in heapq.merge(*found, key=lambda e: e.seq):
            if entry.seq > last:
                last = entry.seq
                out.append(entry)
    size, start = 0, len(out)
    while start > 0 and size + len(out[start - 1].data) <= room:  # the newest that fit
        start -= 1
        size += len(out[start].data)
    if start > 0 or floor >= 0:
        out = out[start:]
        lost = [True] * len(lost)
    head: list[tuple[bytes, bytes]] = []
    for r, gone in zip(ep.histories, lost, strict=True):
        if gone:
            r.stats.resumes_lost += 1
            if r.lost is not None and r.lost_frame is not None and (r.lost, r.lost_frame) not in head:
                head.append((r.lost, r.lost_frame))
        else:
            r.stats.resumes_ok += 1
    return out, head


def keepers_for(
    graph: Graph, old: Mapping[str, Keeper], endpoints: Mapping[str, Any], stats: Stats
) -> dict[str, Keeper]:
    """The keepers of ``graph``'s routes (a route whose settings did not change keeps
    what it kept; one whose setting changed keeps what still means the same), and each
    endpoint with clients told what the routes into it keep, their end markers and
    their histories."""
    keepers: dict[str, Keeper] = {}
    for name, route in graph.routes.items():
        snap, resume = route.spec.snapshot, route.spec.resume
        if snap is not None or resume is not None:
            was = old.get(name)
            keepers[name] = was.changed(snap, resume) if was is not None else Keeper(snap, resume)
    from .clients import ClientEndpoint  # (it imports this module: here, not at the top)

    for name, ep in endpoints.items():
        if not isinstance(ep, ClientEndpoint):
            continue  # (a kind without clients of its own: nobody joins it)
        into = [
            (r, keepers[r.name]) for r in graph.routes.values() if name in r.endpoints and r.name in keepers
        ]
        ep.kept = tuple(k.kept for _, k in into if k.kept is not None)
        ends = [
            e.encode() for e in dict.fromkeys(k.kept.spec.end for _, k in into if k.kept is not None) if e
        ]
        framed = [(e, f) for e in ends if (f := ep.wire.frame(e, True)) is not None]
        ep.end_texts = tuple(e for e, _ in framed)
        ep.ends = tuple(f for _, f in framed)
        ep.histories = tuple(
            Resumable(k.history, stats.route(r.name), lost, ep.wire.frame(lost, True) if lost else None)
            for r, k in into
            if k.history is not None
            for lost in ((k.history.spec.lost or "").encode() or None,)
        )
    return keepers
