"""``slow_client: conflate``: a client that falls behind gets the latest value of each key
when it can take data again, not every message it missed, and is neither cut off nor
left with arbitrary holes.

A client of such an endpoint over its ``client_buffer`` gets a :class:`Lag`: from then
on, each message of each pass is held for it by its key (a later one of the same key
replaces it: counted as superseded, a reason of undelivered), in the order of the
latest update, and nothing more is written to it. When its transport takes data again
(``resume_writing``: it read what was queued; or at the next pass, its transport not
paused), what Veylor held for it while paused goes first, then the held latest values
in one write (:func:`catch_up`), then live again. A message never arrives after a newer
one of its key: while a lag is held, every message goes into it.

The key of a message is the value at the JSON path of the route it came by:
``conflate.by``, else ``snapshot.by``; with neither, the source's whole stream is one
key (the latest message). Keys are per source (two exchanges' ``BTCUSDT`` are two
keys). The endpoint records the source and payload of each message of a pass only
while its policy is ``conflate`` (:attr:`ClientEndpoint.keyed`), and the keys are read
once per pass for all its clients behind, only when one is behind.

Bounds: a lag holds at most :attr:`ClientEndpoint.lag_keys` keys (the routes' own
``max_keys``, one for each unkeyed source); a client past that (a feed with more keys
than configured, a hostile upstream) is disconnected, counted and logged. Its bytes
count as held for it (``client.held``): its ``stall_timeout`` and the process-wide
``limits.buffered`` apply as to any client (over the limit, a conflating client is
disconnected: what it holds is already the least it can be given).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..filters import JsonPath, parse_json_path
from ..latest import key_at
from ..message import Message
from .budget import NOTABLE

if TYPE_CHECKING:
    from ..graph import Graph
    from .clients import ClientEndpoint

log = logging.getLogger("veylor.endpoint")
UNKEYED_KEYS = 1  # keys an unkeyed source's stream takes in a lag: its latest message


class Lag:
    """What Veylor holds for one client behind: the latest frame of each key, in the
    order of their latest update, and their bytes."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: dict[Any, bytes] = {}
        self.size = 0


def pass_keys(ep: ClientEndpoint[Any], keyed: list[tuple[str, bytes, bool]]) -> list[Any]:
    """The key of each message of a pass (see the module docstring)."""
    paths = ep.lag_paths
    keys: list[Any] = []
    for source, data, is_text in keyed:
        by = paths.get(source)
        if not by:
            keys.append(source)
        elif len(by) == 1:
            keys.append((source, key_at(Message(data, is_text), by[0])))
        else:
            msg = Message(data, is_text)
            keys.append((source, *(key_at(msg, p) for p in by)))
    return keys


def writable(ep: ClientEndpoint[Any], frames: list[bytes], data: bytes) -> list[Any]:
    """:meth:`ClientEndpoint.writable` for ``slow_client: conflate``: the clients to write
    this pass's ``data`` to; a client behind, or over ``client_buffer`` now, is given
    the pass in its lag instead."""
    keyed, ep.keyed = ep.keyed or [], []
    count = len(frames)
    limit = ep.spec.client_buffer
    notable = min(limit, NOTABLE)
    is_open = ep.is_open
    budget = ep.budget
    watched = budget.watched
    ok: list[Any] = []
    keys: list[Any] | None = None
    for client in ep.clients:
        if not is_open(client):
            continue
        transport = client.transport
        size = transport.get_write_buffer_size()
        lag = client.lag
        if not size and lag is None:
            ok.append(client)
            continue
        if transport.is_closing():
            continue
        size += client.held
        if size > notable:
            budget.note(ep, client, size)
        elif client not in watched:
            budget.watch(ep, client, size)
        if lag is None:
            if size <= limit:
                if client.paused or client.backlog is not None:
                    ep.hold(client, data, count)
                else:
                    ok.append(client)
                continue
            lag = client.lag = Lag()
            ep.stats.slow_conflating += 1
            ep.losses.behind(client)
        if keys is None:
            keys = pass_keys(ep, keyed)
        take(ep, client, lag, keys, frames, len(data))
    return ok


def take(
    ep: ClientEndpoint[Any], client: Any, lag: Lag, keys: list[Any], frames: list[bytes], size: int
) -> None:
    """Hold a pass's frames for a client behind, by key; then, if its transport takes data
    again already, catch it up."""
    held = lag.frames
    before = lag.size
    superseded = 0
    for key, frame in zip(keys, frames, strict=True):
        old = held.pop(key, None)  # (re-inserted last: the order of the latest update)
        if old is not None:
            superseded += 1
            lag.size -= len(old)
        held[key] = frame
        lag.size += len(frame)
    client.held += lag.size - before
    client.unwritten += size  # (not given it now: the budget's count of what it took stays exact)
    if superseded:
        client.superseded += superseded
        ep.stats.superseded += superseded
    if len(held) > ep.lag_keys:
        too_many_keys(ep, client)
    elif not client.paused and client.backlog is None:
        catch_up(ep, client)


def catch_up(ep: ClientEndpoint[Any], client: Any) -> None:
    """Write what is held for a client behind, the latest of each key, in one write (held
    for it if its transport is paused again); live data follows."""
    lag = client.lag
    if lag is None:
        return
    client.lag = None
    client.held -= lag.size
    frames = list(lag.frames.values())
    if not frames:
        return
    data = b"".join(frames)
    client.unwritten -= len(data)
    ep.stats.caught_up += 1
    if client.paused or client.backlog is not None:
        ep.hold(client, data, len(frames))  # (counted there)
        return
    try:
        client.transport.write(data)
    except Exception as exc:
        ep.broken(client, exc)
        return
    stats = ep.stats
    stats.messages_out += len(frames)
    stats.bytes_out += len(data)


def resumed(client: Any) -> None:
    """A client's transport takes data again (``resume_writing``; what was held while it
    was paused is written): if it is behind and the transport is still not paused, it
    catches up now."""
    lag = client.lag
    if lag is not None and not client.paused and client.backlog is None:
        ep = client.endpoint
        if ep is not None:
            catch_up(ep, client)


def forget(client: Any) -> None:
    """A client leaves or is closed: what was held for it goes."""
    lag = client.lag
    if lag is not None:
        client.lag = None
        client.held -= lag.size


def too_many_keys(ep: ClientEndpoint[Any], client: Any) -> None:
    """A client behind for more keys than the routes into its endpoint have: disconnected
    (counted, logged): holding more would be bounded by nothing configured."""
    lag = client.lag
    forget(client)
    stats = ep.stats
    stats.lag_closed += 1
    stats.lost_slow += len(lag.frames) if lag is not None else 0
    ep.losses.too_many_keys(client)
    ep.abort(client)


def lag_settings(graph: Graph, name: str) -> tuple[dict[str, tuple[JsonPath, ...]], int]:
    """For endpoint ``name``: each source's key paths (its routes' ``conflate.by``, else
    ``snapshot.by``; none: its stream is one key), and the most keys a lag may hold."""
    paths: dict[str, dict[str, JsonPath]] = {}
    keys = 0
    unkeyed: set[str] = set()
    for route in graph.routes.values():
        if name not in route.endpoints:
            continue
        spec = route.spec
        by, bound = None, 0
        if spec.conflate is not None:
            by, bound = spec.conflate.by, spec.conflate.max_keys
        elif spec.snapshot is not None and spec.snapshot.by is not None:
            by, bound = spec.snapshot.by, spec.snapshot.max_keys
        if by is None:
            unkeyed.add(route.source)
            continue
        paths.setdefault(route.source, {})[by] = parse_json_path(by)
        keys += bound
    for source in unkeyed:
        paths.setdefault(source, {})
    keys += len(unkeyed) * UNKEYED_KEYS
    return {s: tuple(p.values()) for s, p in paths.items()}, max(keys, UNKEYED_KEYS)


def set_lag_settings(graph: Graph, endpoints: Mapping[str, Any]) -> None:
    """Tell each endpoint with ``slow_client: conflate`` its sources' key paths."""
    from .clients import ClientEndpoint  # (it imports this module)

    for name, ep in endpoints.items():
        if isinstance(ep, ClientEndpoint) and ep.spec.slow_client == "conflate":
            ep.lag_paths, ep.lag_keys = lag_settings(graph, name)
