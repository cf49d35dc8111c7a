"""The runtime: binds listeners, runs sources, owns the routing table, shuts down in order.

It only does I/O on what the graph says; it never reads configuration files.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from ..graph import Graph
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


class Runtime:
    """Running sources, endpoints and listeners for one :class:`Graph`."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.router = Router(self.loop)
        self.graph = Graph.empty()
        self.sources: dict[str, Source] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.listeners: dict[tuple[str, int], WebSocketListener] = {}
        self.route_stats: dict[str, RouteStats] = {}
        self.started_at: float | None = None

    # ------------------------------------------------------------------ start

    async def start(self, graph: Graph) -> None:
        """Bind every listener, then start every source. If a listener cannot be bound,
        close what was bound and raise :class:`StartupError`."""
        endpoints = {name: make_endpoint(spec) for name, spec in graph.endpoints.items()}
        listeners: dict[tuple[str, int], WebSocketListener] = {}
        for ep in endpoints.values():
            if isinstance(ep, WebSocketEndpoint):
                listen = ep.spec.listen
                key = (listen.host, listen.port)  # type: ignore[union-attr]
                listeners.setdefault(key, WebSocketListener(*key))
        for key, listener in listeners.items():
            listener.set_endpoints(
                [
                    ep
                    for ep in endpoints.values()
                    if isinstance(ep, WebSocketEndpoint) and (ep.spec.listen.host, ep.spec.listen.port) == key  # type: ignore[union-attr]
                ]
            )
        bound: list[WebSocketListener | UnixEndpoint] = []
        try:
            for listener in listeners.values():
                await listener.start()
                bound.append(listener)
            for ep in endpoints.values():
                if isinstance(ep, UnixEndpoint):
                    await ep.start()
                    bound.append(ep)
        except StartupError:
            for thing in bound:
                thing.stop_accepting()
                if isinstance(thing, UnixEndpoint):
                    thing.remove_socket_file()
                else:
                    await thing.wait_closed()
            raise
        self.endpoints = endpoints
        self.listeners = listeners
        self.sources = {
            name: Source(spec, self.router.dispatch, self._source_dropped)
            for name, spec in graph.sources.items()
        }
        self._install(graph)
        for source in self.sources.values():
            source.start()
        self.graph = graph
        self.started_at = self.loop.time()
        for listener in listeners.values():
            log.info(
                "listening on ws://%s for %s",
                listener.address,
                ", ".join(f"{ep.name} ({ep.path})" for ep in listener.paths.values()),
            )
        for ep in endpoints.values():
            if isinstance(ep, UnixEndpoint):
                log.info("listening on unix:%s for %s (%s)", ep.path, ep.name, ep.wire)

    def _install(self, graph: Graph) -> None:
        """Wire client->source targets and swap in the routing table for ``graph``."""
        for name in graph.routes:
            self.route_stats.setdefault(name, RouteStats())
        for name, ep in self.endpoints.items():
            ep.upstream = tuple(
                self.sources[s] for s in graph.upstream_targets.get(name, ()) if s in self.sources
            )
        self.router.install(build_table(graph, self.endpoints, self.route_stats))

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
            ep.close_clients(1001, "Veylor is shutting down")
        waits = [asyncio.ensure_future(s.stop()) for s in self.sources.values()]
        waits += [asyncio.ensure_future(listener.wait_closed()) for listener in self.listeners.values()]
        waits += [
            asyncio.ensure_future(_unix_closed(ep))
            for ep in self.endpoints.values()
            if isinstance(ep, UnixEndpoint)
        ]
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
        self.sources.clear()


async def _unix_closed(ep: UnixEndpoint) -> None:
    while ep.clients:
        await asyncio.sleep(0.02)
    if ep.server is not None:
        await ep.server.wait_closed()
