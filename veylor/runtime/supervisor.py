"""The runtime: applies graphs (start is a reload from nothing), owns the routing table,
shuts down in order. It only does I/O on what the graph says; it never reads files.

Applying a new graph, in this order (:meth:`Runtime.apply`):

1. bind the listeners the new graph needs that are not running; if one fails, close
   those this apply bound and raise: nothing else has changed (all or nothing);
2. swap the routing table and the endpoints' upstream targets (route and filter
   changes take effect between two messages; nothing reconnects);
3. start new sources, restart changed ones, stop removed ones;
4. close removed and rebound endpoints' clients (WebSocket 1001) and the listeners
   nothing uses any more.

Unchanged components keep their objects: same sockets, same clients, same counters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from ..graph import Graph, Plan, diff
from .budget import Budget
from .endpoints import (
    Endpoint,
    StartupError,
    UnixEndpoint,
    WebSocketEndpoint,
    WebSocketListener,
    make_endpoint,
)
from .fanout import Router, RouteStats, build_table
from .source import Source

log = logging.getLogger("veylor.runtime")

SHUTDOWN_TIMEOUT = 4.0  # seconds; then whatever is still open is aborted


@dataclass
class Applied:
    """What an apply did, for the reload log: the plan and the clients it closed."""

    plan: Plan
    clients_closed: dict[str, int]


def _ws_key(ep: WebSocketEndpoint) -> tuple[str, int]:
    listen = ep.spec.listen
    return (listen.host, listen.port)  # type: ignore[union-attr]


class Runtime:
    """Running sources, endpoints and listeners for one :class:`Graph` at a time."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.router = Router(self.loop)
        self.graph = Graph.empty()
        self.sources: dict[str, Source] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.listeners: dict[tuple[str, int], WebSocketListener] = {}
        self.route_stats: dict[str, RouteStats] = {}
        self.budget = Budget()  # limits.buffered: bytes queued for all clients together
        self.generation = 0
        self._background: set[asyncio.Task[None]] = set()

    async def start(self, graph: Graph) -> None:
        """Bind every listener, then start every source; :class:`StartupError` if a
        listener cannot be bound (after closing what was bound)."""
        await self.apply(graph)
        for listener in self.listeners.values():
            log.info(
                "listening on ws://%s for %s",
                listener.address,
                ", ".join(f"{ep.name} ({ep.path})" for ep in listener.paths.values()),
            )
        for ep in self.endpoints.values():
            if isinstance(ep, UnixEndpoint):
                log.info("listening on unix:%s for %s (%s)", ep.path, ep.name, ep.wire)

    # ------------------------------------------------------------------ apply

    async def apply(self, new: Graph, plan: Plan | None = None, base: Graph | None = None) -> Applied:
        """Turn the running graph into ``new`` (see the module docstring for the order).

        ``plan`` may come precomputed (off the event loop) as ``diff(base, new)``; it is
        used only if ``base`` is still the running graph.
        """
        if plan is None or base is not self.graph:
            plan = diff(self.graph, new)
        rebound = set(plan.endpoints_rebound)

        # New endpoint objects for added and rebound endpoints; the others are kept.
        fresh: dict[str, Endpoint] = {}
        endpoints: dict[str, Endpoint] = {}
        for name, spec in new.endpoints.items():
            if name in self.endpoints and name not in rebound:
                endpoints[name] = self.endpoints[name]
            else:
                endpoints[name] = fresh[name] = make_endpoint(spec)
                fresh[name].budget = self.budget
        retired = [
            ep for name, ep in self.endpoints.items() if name not in endpoints or endpoints[name] is not ep
        ]

        # 1. Bind: WebSocket listeners for new host:port pairs, Unix sockets for new paths.
        #    A Unix path a retired endpoint holds is taken over, not bound again.
        wanted: dict[tuple[str, int], list[WebSocketEndpoint]] = {}
        for ep in endpoints.values():
            if isinstance(ep, WebSocketEndpoint):
                wanted.setdefault(_ws_key(ep), []).append(ep)
        held = {ep.path: ep for ep in retired if isinstance(ep, UnixEndpoint) and ep.server is not None}
        bound: list[WebSocketListener | UnixEndpoint] = []
        adopt: list[tuple[UnixEndpoint, UnixEndpoint]] = []
        try:
            for key, eps in wanted.items():
                if key not in self.listeners:
                    listener = WebSocketListener(*key)
                    listener.set_endpoints(eps)
                    await listener.start()
                    bound.append(listener)
            for ep in fresh.values():
                if isinstance(ep, UnixEndpoint):
                    if ep.path in held:
                        adopt.append((ep, held.pop(ep.path)))
                    else:
                        await ep.start()
                        bound.append(ep)
        except StartupError:
            await _unbind(bound)
            raise

        # 2. Commit: endpoints, listeners' path tables, settings, sources, routing table.
        listeners = {key: self.listeners.get(key) for key in wanted}
        for thing in bound:
            if isinstance(thing, WebSocketListener):
                listeners[(thing.host, thing.port)] = thing
        for key, eps in wanted.items():
            listeners[key].set_endpoints(eps)  # type: ignore[union-attr]
        old_listeners = [lst for key, lst in self.listeners.items() if key not in wanted]
        for new_ep, old_ep in adopt:
            new_ep.adopt(old_ep)
        for ep in fresh.values():
            if isinstance(ep, WebSocketEndpoint):
                ep.start_keepalive()
        for name in plan.endpoints_updated:
            endpoints[name].update(new.endpoints[name])
        self.endpoints = endpoints
        self.listeners = listeners  # type: ignore[assignment]

        sources = dict(self.sources)
        removed_sources = [sources.pop(name) for name in plan.sources.removed]
        for name in plan.sources.added:
            sources[name] = Source(new.sources[name], self.router.dispatch, self._source_dropped)
        self.sources = sources
        self.route_stats = {name: self.route_stats.get(name) or RouteStats() for name in new.routes}
        self.budget.limit = new.limits.buffered
        self.graph = new
        self._install(new)

        # 3. Sources.
        for name in plan.sources.added:
            sources[name].start()
        waits = [sources[name].restart(new.sources[name]) for name in plan.sources.changed]
        waits += [source.stop() for source in removed_sources]

        # 4. Close what is no longer served.
        closed: dict[str, int] = {}
        for ep in retired:
            if isinstance(ep, WebSocketEndpoint):
                ep.stop_keepalive()
            closed[ep.name] = len(ep.clients)
            why = "endpoint removed" if ep.name not in endpoints else "endpoint moved"
            ep.close_clients(1001, why)
            if isinstance(ep, UnixEndpoint):
                ep.stop_accepting()
                self._spawn(_unix_retire(ep))
        for listener in old_listeners:
            listener.stop_accepting()
            self._spawn(listener.wait_closed())
        if waits:
            await asyncio.gather(*waits)
        self.generation += 1
        return Applied(plan, closed)

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _install(self, graph: Graph) -> None:
        """Wire client->source targets and swap in the routing table for ``graph``."""
        for name, ep in self.endpoints.items():
            ep.upstream = tuple(
                self.sources[s] for s in graph.upstream_targets.get(name, ()) if s in self.sources
            )
        self.router.install(build_table(graph, self.endpoints, self.route_stats, self.router.table))

    def _endpoints_of_source(self, source: str) -> Iterable[Endpoint]:
        names = dict.fromkeys(e for r in self.graph.routes_by_source.get(source, ()) for e in r.endpoints)
        return (self.endpoints[n] for n in names if n in self.endpoints)

    def _source_dropped(self, source: Source) -> None:
        if source.spec.on_disconnect != "close_clients":
            return
        for ep in self._endpoints_of_source(source.name):
            if ep.clients:
                log.info(
                    "endpoint %s: closing %d clients: source %s disconnected (on_disconnect: close_clients)",
                    ep.name,
                    len(ep.clients),
                    source.name,
                )
                ep.close_clients(1011, f"upstream {source.name} disconnected")

    # ------------------------------------------------------------------ stop

    async def stop(self) -> None:
        """Stop accepting, close clients (WebSocket 1001) and sources, remove socket files.

        Bounded: after ``SHUTDOWN_TIMEOUT`` seconds, connections still open are aborted.
        """
        for listener in self.listeners.values():
            listener.stop_accepting()
        for ep in self.endpoints.values():
            if isinstance(ep, UnixEndpoint):
                ep.stop_accepting()
        self.router.flush()  # what was dispatched before the signal still goes out
        for ep in self.endpoints.values():
            if isinstance(ep, WebSocketEndpoint):
                ep.stop_keepalive()
            ep.close_clients(1001, "Veylor is shutting down")
        waits = [asyncio.ensure_future(s.stop()) for s in self.sources.values()]
        waits += [asyncio.ensure_future(listener.wait_closed()) for listener in self.listeners.values()]
        waits += [
            asyncio.ensure_future(_unix_closed(ep))
            for ep in self.endpoints.values()
            if isinstance(ep, UnixEndpoint)
        ]
        waits += list(self._background)
        if waits:
            done, pending = await asyncio.wait(waits, timeout=SHUTDOWN_TIMEOUT)
            if pending:
                log.warning(
                    "shutdown: %d parts did not stop in %.0fs: aborting them", len(pending), SHUTDOWN_TIMEOUT
                )
                for ep in self.endpoints.values():
                    for client in list(ep.clients):
                        client.transport.abort()
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=1.0)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("shutdown: %s", task.exception())
        for ep in self.endpoints.values():
            if isinstance(ep, UnixEndpoint):
                ep.remove_socket_file()
        self.budget.stop()
        self.sources.clear()


async def _unbind(bound: list[WebSocketListener | UnixEndpoint]) -> None:
    for thing in bound:
        thing.stop_accepting()
        if isinstance(thing, UnixEndpoint):
            thing.remove_socket_file()
        else:
            await thing.wait_closed()


async def _unix_closed(ep: UnixEndpoint) -> None:
    while ep.clients:
        await asyncio.sleep(0.02)
    if ep.server is not None:
        await ep.server.wait_closed()


async def _unix_retire(ep: UnixEndpoint) -> None:
    """After a reload removed ``ep``: once its clients are gone, remove its socket file."""
    try:
        async with asyncio.timeout(SHUTDOWN_TIMEOUT):
            await _unix_closed(ep)
    except TimeoutError:
        for client in list(ep.clients):
            client.transport.abort()
    ep.remove_socket_file()
