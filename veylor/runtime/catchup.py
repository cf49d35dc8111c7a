"""``slow_client: conflate``: a client that falls behind gets the latest value of each key
when it can take data again, not every message it missed, and is neither cut off nor
left with arbitrary holes.

A client of such an endpoint over its ``client_buffer`` is *behind* from the endpoint's
message number ``N`` (``client.lag``): nothing more is written to it. While any of its
clients is behind, the endpoint keeps the latest frame of each key with its number, in
the order of their latest update (:class:`Latest`: one for the endpoint, whatever the
number of clients behind, updated once per message, not once per client). When a
client's transport takes data again (``resume_writing``: it read what was queued; or
at the next pass, its transport not paused), what Veylor held for it while paused goes
first, then the kept frames numbered ``N`` or later, in one write (:func:`catch_up`),
then live. A message never arrives after a newer one of its key; what a newer one
replaced is counted (superseded, a reason of undelivered), for each client exactly.

The key of a message is the value at the JSON path of the route it came by:
``conflate.by``, else ``snapshot.by``; with neither, the source's whole stream is one
key (the latest message). On a keyed route, a message without its key (not JSON,
nothing at the path, an object or a list there) is never replaced: each is a key of
its own, as a conflating route sends it at once (within the same bounds). Keys are per source (two exchanges' ``BTCUSDT`` are two
keys). The endpoint records the source and payload of each message of a pass only
while its policy is ``conflate`` (:attr:`ClientEndpoint.keyed`), and the keys are read
once per pass, only while a client is behind.

Bounds: the kept frames are at most :attr:`ClientEndpoint.lag_keys` keys (the routes'
own ``max_keys``, one for each source without a key) and ``lag_bytes`` (their
``max_bytes``); beyond, the least recently updated goes, and a client behind since
before it is disconnected (counted, logged): it would miss that key. A client's
``stall_timeout`` and the process-wide ``limits.buffered`` apply as to any client.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..filters import JsonPath, parse_json_path
from ..latest import MISSING, key_at
from ..message import Message
from .budget import NOTABLE

if TYPE_CHECKING:
    from ..graph import Graph
    from .clients import ClientEndpoint

log = logging.getLogger("veylor.endpoint")
UNKEYED_KEYS = 1  # keys a source without one takes for the clients behind: its latest message
UNKEYED_BYTES = 64 * 2**20  # ... and bytes at most (the default max_bytes of a route's keys)


class Latest:
    """An endpoint's latest frame of each key, with its message number, in the order of
    their latest update, while some of its clients are behind (see the module
    docstring).

    What a message costs does not grow with the keys kept: the least recently updated
    goes from an ordered dict's front (a dict's first entry is found past every slot
    emptied since its last resize: a hostile upstream's new key each message beyond
    100,000 kept cost 70 us, beyond a million 400 us). Nor does a part of a catch-up:
    :attr:`order` lists the number and key of each frame taken, ascending, so that the
    frames numbered ``first`` or later are found by bisection, not by reading every key
    newer than ``first`` (a client catching up on 10,000 keys of 1 KB in 154 parts of
    64 KiB read 770,000 entries). An entry of :attr:`order` whose key was taken again
    since, or forgotten, is skipped; they are dropped when they outnumber the keys."""

    __slots__ = ("behind", "evicted", "frames", "order", "size")

    def __init__(self) -> None:
        self.frames: OrderedDict[Any, tuple[int, bytes]] = OrderedDict()
        self.order: list[tuple[int, Any]] = []  # (number, key) of each frame taken, ascending
        self.size = 0  # bytes of the frames
        # the newest number forgotten for the bounds: a client behind since then misses a key
        self.evicted = 0
        self.behind = 0  # clients behind now (none: the endpoint drops it)

    def take(
        self, keys: list[Any], frames: list[bytes], first: int, max_keys: int, max_bytes: int
    ) -> list[int]:
        """A pass's frames, numbered from ``first``; the numbers of those they replaced,
        in order (superseded for each client behind since one of them)."""
        held = self.frames
        order = self.order
        replaced: list[int] = []
        for number, (key, frame) in enumerate(zip(keys, frames, strict=True), first):
            old = held.pop(key, None)  # (re-inserted last: the order of the latest update)
            if old is not None:
                replaced.append(old[0])
                self.size -= len(old[1])
            held[key] = (number, frame)
            order.append((number, key))
            self.size += len(frame)
            while len(held) > max_keys or (self.size > max_bytes and len(held) > 1):
                number_gone, frame_gone = held.popitem(last=False)[1]
                self.size -= len(frame_gone)
                self.evicted = max(self.evicted, number_gone)
        if len(order) > 2 * len(held) + STALE_ORDER:
            self.order = [(number, key) for key, (number, _) in held.items()]
        replaced.sort()
        return replaced

    def since(self, first: int, room: int) -> tuple[list[bytes], int | None]:
        """The frames numbered ``first`` or later, in the order of their latest update,
        the oldest that fit in ``room`` bytes (one at least); and the number of the first
        left out (None: none)."""
        held = self.frames
        order = self.order
        out: list[bytes] = []
        size = 0
        for at in range(bisect_left(order, first, key=_number), len(order)):
            number, key = order[at]
            entry = held.get(key)
            if entry is None or entry[0] != number:
                continue  # (taken again since, or forgotten)
            frame = entry[1]
            if out and size + len(frame) > room:
                return out, number
            out.append(frame)
            size += len(frame)
        return out, None


STALE_ORDER = 1024  # entries of Latest.order that may be stale beyond the keys kept


def _number(entry: tuple[int, Any]) -> int:
    return entry[0]


def pass_keys(ep: ClientEndpoint[Any], keyed: list[tuple[str, bytes, bool]]) -> list[Any]:
    """The key of each message of a pass (see the module docstring); a message without
    one on a keyed route is a key of its own (never replaced)."""
    paths = ep.lag_paths
    keys: list[Any] = []
    for source, data, is_text in keyed:
        by = paths.get(source)
        if not by:
            keys.append(source)
        elif len(by) == 1:
            key = key_at(Message(data, is_text), by[0])
            keys.append((source, key) if key is not MISSING else object())
        else:
            msg = Message(data, is_text)
            found = tuple(key_at(msg, p) for p in by)
            keys.append((source, *found) if any(k is not MISSING for k in found) else object())
    return keys


def writable(ep: ClientEndpoint[Any], frames: list[bytes], data: bytes) -> list[Any]:
    """:meth:`ClientEndpoint.writable` for ``slow_client: conflate``: the clients to write
    this pass's ``data`` to. A client behind, or over ``client_buffer`` now, is not
    written to: the endpoint keeps the pass's latest per key for it (:class:`Latest`),
    and one whose transport takes data again catches up."""
    keyed, ep.keyed = ep.keyed or [], []
    count = len(frames)
    first = ep.stats.messages + 1  # this pass's messages: first .. first + count - 1
    limit = ep.spec.client_buffer
    notable = min(limit, NOTABLE)
    is_open = ep.is_open
    budget = ep.budget
    watched = budget.watched
    ok: list[Any] = []
    behind: list[Any] = []
    for client in ep.clients:
        if not is_open(client):
            continue
        transport = client.transport
        size = transport.get_write_buffer_size()
        if not size and client.lag is None:
            ok.append(client)
            continue
        if transport.is_closing():
            continue
        size += client.held
        if size > notable:
            budget.note(ep, client, size)
        elif size and client not in watched:
            budget.watch(ep, client, size)
        if client.lag is None:
            if size <= limit:
                if client.paused or client.backlog is not None:
                    ep.hold(client, data, count)
                else:
                    ok.append(client)
                continue
            fell_behind(ep, client, first)
        client.unwritten += len(data)  # (not given it now: the budget's count of what it took stays exact)
        behind.append(client)
    if behind:
        latest = ep.latest
        if latest is not None:  # (None: the last one behind just left)
            replaced = latest.take(pass_keys(ep, keyed), frames, first, ep.lag_keys, ep.lag_bytes)
            stats = ep.stats
            for client in behind:
                if client.lag is None:
                    continue  # (caught up, or closed, earlier in this loop)
                if replaced:  # (those it would have had: numbered from where it fell behind)
                    superseded = len(replaced) - bisect_left(replaced, client.lag)
                    client.superseded += superseded
                    stats.superseded += superseded
                if client.lag <= latest.evicted:
                    too_many_keys(ep, client)
                elif not client.paused and client.backlog is None:
                    catch_up(ep, client)
                if ep.latest is None:
                    break  # (nobody is behind any more)
    return ok


def fell_behind(ep: ClientEndpoint[Any], client: Any, first: int) -> None:
    """``client`` is over its ``client_buffer``: behind from message ``first``."""
    client.lag = first
    latest = ep.latest
    if latest is None:
        latest = ep.latest = Latest()
    latest.behind += 1
    ep.stats.slow_conflating += 1
    ep.losses.behind(client)


def catch_up(ep: ClientEndpoint[Any], client: Any, whole: bool = False) -> None:
    """Write what a client behind missed, the latest of each key, then live data follows.
    At most its ``client_buffer`` at a write: a thousand clients catching up must not each
    get a copy of 64 MiB of keys; parts go while its transport takes them, and it stays
    behind from the first left out until the next ``resume_writing``. With ``whole`` (its
    endpoint stops conflating), all of it now: what its transport does not take is held
    for it as the kept frames themselves, shared by every client behind, not joined into
    a copy each (a reload to another policy with a thousand clients behind on 64 MiB of
    keys would have held 64 GB). (What newer messages replaced was counted as they came:
    :func:`writable`.)"""
    while True:
        first = client.lag
        latest = ep.latest
        if first is None or latest is None:
            return
        if first <= latest.evicted:
            too_many_keys(ep, client)
            return
        waiting = client.paused or client.backlog is not None  # (only with whole: see the callers)
        frames, rest = latest.since(first, ALL if waiting else ep.spec.client_buffer)
        if rest is None:
            forget(ep, client)
            ep.stats.caught_up += 1
        else:
            client.lag = rest
        if waiting:
            client.unwritten -= hold_frames(ep, client, frames)  # (counted there)
            return
        data = b"".join(frames)
        client.unwritten -= len(data)
        try:
            client.transport.write(data)
        except Exception as exc:
            ep.broken(client, exc)
            return
        stats = ep.stats
        stats.messages_out += len(frames)
        stats.bytes_out += len(data)
        if rest is None or (not whole and client.paused):
            return


ALL = 2**62  # bytes: no bound (every frame kept for a client)


def hold_frames(ep: ClientEndpoint[Any], client: Any, frames: list[bytes]) -> int:
    """:meth:`ClientEndpoint.hold` for frames kept for every client behind, as they are,
    not joined: each client holds references to the one copy. Their bytes."""
    size = sum(map(len, frames))
    backlog = client.backlog
    if backlog is None:
        client.backlog = list(frames)
    else:
        backlog.extend(frames)
    client.held += size
    stats = ep.stats
    stats.messages_out += len(frames)
    stats.bytes_out += size
    return size


def resumed(client: Any) -> None:
    """A client's transport takes data again (``resume_writing``; what was held while it
    was paused is written): if it is behind and the transport is still not paused, it
    catches up now."""
    if client.lag is not None and not client.paused and client.backlog is None:
        ep = client.endpoint
        if ep is not None and ep.latest is not None:
            catch_up(ep, client)


def forget(ep: ClientEndpoint[Any] | None, client: Any) -> None:
    """A client is no longer behind (caught up, gone, closed); the endpoint keeps the
    latest frames only while some client is."""
    if client.lag is None:
        return
    client.lag = None
    latest = ep.latest if ep is not None else None
    if latest is not None:
        latest.behind -= 1
        if latest.behind <= 0:
            ep.latest = None  # type: ignore[union-attr]


def too_many_keys(ep: ClientEndpoint[Any], client: Any) -> None:
    """A client behind since before a key the endpoint had to forget (the bounds): it
    would miss that key, so it is disconnected (counted, logged)."""
    forget(ep, client)
    ep.stats.lag_closed += 1
    ep.losses.too_many_keys(client)
    ep.abort(client)


def lag_settings(graph: Graph, name: str) -> tuple[dict[str, tuple[JsonPath, ...]], int, int]:
    """For endpoint ``name``: each source's key paths (its routes' ``conflate.by``, else
    ``snapshot.by``; none: its stream is one key), and the most keys and bytes kept for
    its clients behind."""
    paths: dict[str, dict[str, JsonPath]] = {}
    keys = size = 0
    unkeyed: set[str] = set()
    for route in graph.routes.values():
        if name not in route.endpoints:
            continue
        spec = route.spec
        by, bound, most = None, 0, 0
        if spec.conflate is not None:
            by, bound, most = spec.conflate.by, spec.conflate.max_keys, spec.conflate.max_bytes
        elif spec.snapshot is not None and spec.snapshot.by is not None:
            by, bound, most = spec.snapshot.by, spec.snapshot.max_keys, spec.snapshot.max_bytes
        if by is None:
            unkeyed.add(route.source)
            continue
        paths.setdefault(route.source, {})[by] = parse_json_path(by)
        keys += bound
        size += most
    for source in unkeyed:
        paths.setdefault(source, {})
    keys += len(unkeyed) * UNKEYED_KEYS
    size += len(unkeyed) * UNKEYED_BYTES
    return {s: tuple(p.values()) for s, p in paths.items()}, max(keys, UNKEYED_KEYS), max(size, UNKEYED_BYTES)


def set_lag_settings(graph: Graph, endpoints: Mapping[str, Any]) -> None:
    """Tell each endpoint with ``slow_client: conflate`` its sources' key paths."""
    from .clients import ClientEndpoint  # (it imports this module)

    for name, ep in endpoints.items():
        if isinstance(ep, ClientEndpoint) and ep.spec.slow_client == "conflate":
            ep.lag_paths, ep.lag_keys, ep.lag_bytes = lag_settings(graph, name)
