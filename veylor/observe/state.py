"""The one state view of a running Veylor: what ``/graph``, ``/metrics``, ``veylor
status``, ``veylor top`` and the TUI all read.

:func:`snapshot` copies counters the hot path keeps as plain integers (see
:mod:`veylor.runtime.stats`) into one JSON-able structure, with a ``schema`` version.
It does no per-message work and computes no rate: readers take two snapshots and
divide. Per-client detail (``clients=True`` for every endpoint, as ``/graph`` gives it;
``clients="name"`` for one, as the TUI asks) is bounded to ``CLIENTS_LISTED`` clients
per endpoint (``clients="*"``, as the TUI's ``c`` asks: in all), those behind (over
their buffer now) first. ``tap=ROUTE`` starts or renews that route's tap and adds what it caught
(``"tap"``: the last messages that passed, one escaped line each; see
:mod:`veylor.runtime.tap`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import resource
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from .. import __version__
from ..filters import describe
from ..runtime.clients import ClientEndpoint
from .view import (
    EVERY,
    SCHEMA,
    AdminCounters,
    ClientView,
    EndpointView,
    MemoryView,
    ProcessView,
    ReloadView,
    RouteView,
    SourceView,
    StateView,
    TapView,
)

if TYPE_CHECKING:
    from ..reload import Reloader
    from ..runtime import Runtime

CLIENTS_LISTED = 1000  # per endpoint in /graph (in all with clients="*"); more are counted, not listed
CHUNK = 100  # components between two turns of the event loop (snapshot_async)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def snapshot(runtime: Runtime, reloader: Reloader | None = None, clients: bool | str = False) -> StateView:
    """Everything an operator sees, as plain data (see the module docstring)."""
    out = _head(runtime, reloader)
    for part in _parts(runtime, out, clients):
        for _ in part:
            pass
    out["process"]["open_fds"] = open_fds()
    return out


async def snapshot_async(
    runtime: Runtime, reloader: Reloader | None = None, clients: bool | str = False, tap: str | None = None
) -> StateView:
    """:func:`snapshot`, letting the event loop run every ``CHUNK`` components: a large
    configuration (thousands of sources and endpoints) costs tens of milliseconds, which
    the clients must not wait for in one piece. Counters may move between chunks, as
    they do between two scrapes."""
    out = _head(runtime, reloader)
    for part in _parts(runtime, out, clients):
        for i, _ in enumerate(part, 1):
            if i % CHUNK == 0:
                await asyncio.sleep(0)
    # (counted in a thread: with 10,000 clients, listing /proc/self/fd takes about 20 ms)
    out["process"]["open_fds"] = await asyncio.to_thread(open_fds)
    if tap is not None:
        out["tap"] = _tap(runtime, tap)
    return out


def _tap(runtime: Runtime, route: str) -> TapView:
    """Start or renew the tap of ``route``; what it caught so far."""
    try:
        return cast(TapView, runtime.tap(route).as_dict())
    except KeyError:
        return {"route": route, "error": "no such route"}
    except OverflowError as exc:
        return {"route": route, "error": str(exc)}


def _head(runtime: Runtime, reloader: Reloader | None) -> StateView:
    stats = runtime.stats
    now = time.time()
    process = stats.process
    last = reloader.last if reloader is not None else None
    change = reloader.last_change if reloader is not None else None
    return {
        "schema": SCHEMA,
        "version": __version__,
        "pid": os.getpid(),
        "time": now,
        "started": stats.started,
        "uptime": now - stats.started,
        "config": {"generation": process.generation, "digest": runtime.graph.digest},
        "listeners": {"configured": len(runtime.graph.listeners), "bound": len(runtime.listeners)},
        "reloads": {
            "ok": process.reloads_ok,
            "failed": process.reloads_failed,
            "last": cast(ReloadView, last.as_dict()) if last is not None else None,
            "last_change": cast(ReloadView, change.as_dict()) if change is not None else None,
        },
        "sources": {},
        "routes": {},
        "edges": [],
        "endpoints": {},
        "memory": _memory(runtime),
        "process": _process(),
        "admin": cast(AdminCounters, stats.admin.as_dict()),  # requests the admin endpoint refused, by reason
        "tasks": len(asyncio.all_tasks(runtime.loop)),  # (a leak of tasks shows here: the soak watches it)
    }


def _parts(runtime: Runtime, out: StateView, clients: bool | str) -> list[Iterator[None]]:
    """The body of the view, as generators that fill ``out`` one component per step."""
    return [_sources(runtime, out), _routes(runtime, out), _endpoints(runtime, out, clients)]


def _sources(runtime: Runtime, out: StateView) -> Iterator[None]:
    stats = runtime.stats
    for name, spec in runtime.graph.sources.items():
        source = runtime.sources.get(name)
        entry: dict[str, Any] = {"kind": spec.kind}
        entry.update(source.status() if source is not None else {"state": "stopped"})
        entry.update(stats.source(name).as_dict())
        clock = stats.clocks.get(name)
        entry["last_message_at"] = clock.last_message_at if clock is not None else None
        out["sources"][name] = cast(SourceView, entry)
        yield


def _routes(runtime: Runtime, out: StateView) -> Iterator[None]:
    stats = runtime.stats
    edges = out["edges"]
    for name, route in runtime.graph.routes.items():
        counted = stats.route(name)
        out["routes"][name] = RouteView(
            {
                "from": route.source,
                "to": list(route.endpoints),
                "filter": describe(route.spec.filter),
                "upstream": route.upstream,
                "filtered": counted.filtered,
                "messages": counted.messages,
            }
        )
        if route.spec.conflate is not None:
            entry = out["routes"][name]
            entry["conflate"] = route.spec.conflate.describe()
            entry["conflated"] = counted.conflated
            entry["unkeyed"] = counted.unkeyed
        keeper = runtime.keepers.get(name)
        kept = keeper.kept if keeper is not None else None
        if kept is not None:
            out["routes"][name]["kept"] = {
                "setting": kept.spec.describe(),
                "messages": len(kept),
                "bytes": kept.bytes,
                "evicted": kept.evicted,
                "unkept": kept.unkept,
            }
        history = keeper.history if keeper is not None else None
        if history is not None:
            out["routes"][name]["history"] = {
                "setting": history.spec.describe(),
                "messages": len(history),
                "bytes": history.bytes,
                "evicted": history.evicted,
                "unkept": history.unkept,
                "unordered": history.unordered,
                "first": history.values[0] if history.values else None,
                "last": history.values[-1] if history.values else None,
            }
            out["routes"][name]["resumes_ok"] = counted.resumes_ok
            out["routes"][name]["resumes_lost"] = counted.resumes_lost
        for endpoint in route.endpoints:
            edges.append(
                {
                    "source": route.source,
                    "route": name,
                    "endpoint": endpoint,
                    "messages": stats.edge(route.source, name, endpoint),
                }
            )
        yield


def _endpoints(runtime: Runtime, out: StateView, clients: bool | str) -> Iterator[None]:
    stats = runtime.stats
    # Clients behind now: those the budget watches (Veylor holds bytes for them that
    # their socket does not take); a few, however many clients there are.
    watched = runtime.budget.watched
    behind_of: dict[str, list[Any]] = {}  # each endpoint's clients behind (a few), grouped once
    for client, w in watched.items():
        behind_of.setdefault(w.ep.name, []).append(client)
    # clients="*" (the TUI's c): every endpoint's, CLIENTS_LISTED in all: those behind
    # first wherever they are, the others in what is left.
    every = clients == EVERY
    behind_left = CLIENTS_LISTED
    others_left = max(0, CLIENTS_LISTED - min(len(watched), CLIENTS_LISTED)) if every else 0
    for name, spec in runtime.graph.endpoints.items():
        ep = runtime.endpoints.get(name)
        entry: dict[str, Any] = {
            "kind": spec.kind,
            "address": spec.listen.describe(),
            "clients": len(ep.clients) if ep is not None else 0,
            "slow_clients": len(behind_of.get(name, ())),
            **stats.endpoint(name).as_dict(),
            **(ep.status() if ep is not None else {}),
        }
        if isinstance(ep, ClientEndpoint):
            entry["client_buffer"] = spec.client_buffer  # each client's bound (the TUI colours by it)
            latest = ep.latest  # (slow_client: conflate) kept once for its clients behind
            entry["behind_keys"] = len(latest.frames) if latest is not None else 0
            entry["behind_bytes"] = latest.size if latest is not None else 0
        view = out["endpoints"][name] = cast(EndpointView, entry)
        if ep is not None and (clients is True or clients == name or every):
            # the slow ones first (those the budget watches: a few), so that the
            # worst are listed however many clients there are beyond the bound
            behind = [c for c in behind_of.get(name, ()) if c in ep.clients]
            rest = (c for c in ep.clients if c not in watched)
            if every:
                behind = behind[:behind_left]
                behind_left -= len(behind)
                more = list(itertools.islice(rest, others_left))
                others_left -= len(more)
                listed = behind + more
            else:
                listed = list(itertools.islice(itertools.chain(behind, rest), CLIENTS_LISTED))
            view["clients_not_listed"] = len(ep.clients) - len(listed)
            client_list: list[ClientView] = []
            view["client_list"] = client_list
            for i, client in enumerate(listed, 1):
                if isinstance(ep, ClientEndpoint):  # (only a kind with clients of its own lists any)
                    client_list.append(cast(ClientView, ep.client_status(client)))
                if i % CHUNK == 0:
                    yield  # thousands of clients: the loop is served between chunks too
        yield


def open_fds() -> int:
    """The file descriptors the process has open (0 without /proc). One per client: a
    listing of thousands, not for the event loop (:func:`snapshot_async` runs it in a
    thread)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _process() -> ProcessView:
    """The process's memory and CPU time (from /proc: where there is none, 0); its open
    file descriptors are counted after (:func:`open_fds`)."""
    times = os.times()
    rss = fds = 0
    try:
        with open("/proc/self/statm", "rb") as fh:
            rss = int(fh.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return {
        "rss_bytes": rss,
        "cpu_seconds": times.user + times.system,
        "open_fds": fds,
        "max_fds": soft if soft != resource.RLIM_INFINITY else 0,
    }


def _memory(runtime: Runtime) -> MemoryView:
    budget = runtime.budget
    return {
        "limit": budget.limit,
        "laggard_bytes": budget.total,
        "peak": budget.peak,
        "enforced": budget.enforced,
        "stalled": budget.stalled,
        "trims": budget.trims,
    }
