"""The runtime: executes plans (start is a reload from nothing), owns the routing table
and the counters, shuts down in order. It only does I/O on what the plan says; it
never reads files and decides nothing: :func:`veylor.graph.diff` decides every step
(see :data:`veylor.graph.STEPS` for their order and why), :meth:`Runtime.apply`
executes them in order, one method per kind of step.

Components are made through :mod:`veylor.runtime.kinds` and driven through its
interfaces: nothing here names a kind. The admin endpoint's steps
(:data:`veylor.graph.CONTROL`) are the control plane's: it owns that endpoint and runs
them between :meth:`Runtime.bind` and :meth:`Runtime.commit`
(:class:`veylor.control.Controller`); the runtime skips them. Unchanged components keep their objects (same
sockets, same clients); every component keeps its counters by name
(:class:`~veylor.runtime.stats.Stats`), across restarts and rebinds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..graph import CONTROL, REMOVED, UNDOABLE, Graph, Op, Plan, Step, diff
from .budget import Budget
from .catchup import set_lag_settings
from .clients import ClientEndpoint, with_clients
from .conflate import Conflater, conflaters_for
from .endpoints import Endpoint, StartupError
from .fanout import Router, build_table
from .interfaces import Listener, ListenerKey, SourceKind
from .keeper import Keeper, keepers_for
from .kinds import make_endpoint, make_listener, make_source
from .stats import Stats
from .tap import IDLE, LEASE, MAX_TAPS, Tap

log = logging.getLogger("veylor.runtime")

SHUTDOWN_TIMEOUT = 4.0  # seconds; then whatever is still open is aborted
TICK = 1.0  # seconds between two looks at what the state view notes once a second


@dataclass
class Applied:
    """What an apply did: the plan and the clients each retired endpoint closed."""

    plan: Plan
    clients_closed: dict[str, int]


class Runtime:
    """Running sources, endpoints and listeners for one :class:`Graph` at a time."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.router = Router(self.loop)
        self.graph = Graph.empty()
        self.sources: dict[str, SourceKind] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.listeners: dict[ListenerKey, Listener] = {}
        self.stats = Stats()
        self.budget = Budget()  # limits.buffered: bytes queued for all clients together
        self._background: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.TimerHandle | None = None
        self.taps: dict[str, Tap] = {}  # routes an operator is watching (runtime/tap.py)
        self.keepers: dict[str, Keeper] = {}  # routes that keep messages (runtime/keeper.py)
        self.conflaters: dict[str, Conflater] = {}  # routes that conflate (runtime/conflate.py)

    @property
    def generation(self) -> int:
        """How many plans were applied (the first start is 1)."""
        return self.stats.process.generation

    def _tick(self) -> None:
        """Once a second: what readers of the state view need that would cost something
        per message to keep exactly (when each source's last message came)."""
        self.stats.tick(time.time())
        now = self.loop.time()
        expired = [
            name for name, tap in self.taps.items() if tap.expires < now or name not in self.graph.routes
        ]
        if expired:
            for name in expired:
                del self.taps[name]
            self._route(self.graph)
        self._ticker = self.loop.call_later(TICK, self._tick)

    def tap(self, route: str) -> Tap:
        """Start, or renew for ``LEASE`` seconds, the tap of ``route`` (see
        :mod:`veylor.runtime.tap`). ``KeyError``: no such route; ``OverflowError``:
        ``MAX_TAPS`` are on already."""
        tap = self.taps.get(route)
        expires = self.loop.time() + LEASE
        if tap is not None:
            tap.expires = expires
            return tap
        if route not in self.graph.routes:
            raise KeyError(route)
        if len(self.taps) >= MAX_TAPS:
            # The tap read least recently goes, if no one has read it for IDLE seconds (a
            # TUI whose cursor moved on): browsing the graph with the tap open does not
            # use the taps up. Taps being read are never taken away.
            oldest = min(self.taps.values(), key=lambda t: t.expires)
            if oldest.expires - LEASE > self.loop.time() - IDLE:
                raise OverflowError(f"{MAX_TAPS} routes are tapped already")
            del self.taps[oldest.route]
        tap = self.taps[route] = Tap(route, expires)
        self._route(self.graph)
        return tap

    async def start(self, graph: Graph) -> None:
        """Bind every listener, then start every source; :class:`StartupError` if a
        listener cannot be bound (after closing what was bound)."""
        await self.apply(graph)
        self.begin()

    def begin(self) -> None:
        """The first graph is applied: start the once-a-second look, say where it listens."""
        self._ticker = self.loop.call_later(TICK, self._tick)
        for listener in self.listeners.values():
            log.info("listening on %s", listener.describe())

    # ------------------------------------------------------------------ apply

    async def apply(self, new: Graph, plan: Plan | None = None, base: Graph | None = None) -> Applied:
        """Turn the running graph into ``new``: :meth:`bind`, then :meth:`commit`.

        ``plan`` may come precomputed (off the event loop) as ``diff(base, new)``; it is
        used only if ``base`` is still the running graph. A bind that fails closes what
        this apply bound and raises :class:`StartupError`: nothing else has changed.
        """
        return await self.commit(await self.bind(new, plan, base))

    async def bind(self, new: Graph, plan: Plan | None = None, base: Graph | None = None) -> Binding:
        """The first part of an apply: the plan's steps that can fail (new endpoint
        objects, new listeners bound). If one fails, what they did is taken back and the
        error raised: nothing has changed. Nothing serves differently until
        :meth:`commit` (or :meth:`Binding.undo`, when the caller's own bind fails)."""
        if plan is None or base is not self.graph:
            plan = diff(self.graph, new)
        run = _Execution(self, new, plan)
        try:
            for step in plan.steps:
                if step.op not in UNDOABLE:
                    break
                if step.op not in CONTROL:
                    await _STEP[step.op](run, step)
        except BaseException:  # (cancelled too: Veylor stops during a reload's binds)
            await run.undo()
            raise
        return Binding(run)

    async def commit(self, binding: Binding) -> Applied:
        """The rest of the plan, in order: from here on nothing fails and nothing waits
        between two steps (see :data:`veylor.graph.STEPS`)."""
        run = binding.run
        for step in run.plan.steps:
            if step.op not in UNDOABLE and step.op not in CONTROL:
                await _STEP[step.op](run, step)
        new = run.new
        self.graph = new
        self.stats.retain(new)
        self.stats.process.generation += 1
        if run.waits:
            await asyncio.gather(*run.waits)
        return Applied(run.plan, run.closed)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background; shutdown waits for it (bounded)."""
        task = self.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def install(self, graph: Graph) -> None:
        """Wire client->source targets and swap in the routing table for ``graph``."""
        for name, ep in self.endpoints.items():
            ep.upstream = tuple(
                (self.sources[s], policy)
                for s, policy in graph.upstream_targets.get(name, ())
                if s in self.sources
            )
        self._route(graph)

    def _route(self, graph: Graph) -> None:
        """Swap in the routing table for ``graph``, the taps on, and the routes' keepers
        and conflaters (each kept while its setting is unchanged; see
        :func:`~veylor.runtime.keeper.keepers_for`, :func:`~veylor.runtime.conflate.conflaters_for`)."""
        self.keepers = keepers_for(graph, self.keepers, self.endpoints, self.stats)
        set_lag_settings(graph, self.endpoints)
        self.conflaters = conflaters_for(graph, self.conflaters, self.stats, self.router.deliver)
        stats = {name: self.stats.route(name) for name in graph.routes}
        self.router.install(
            build_table(
                graph, self.endpoints, stats, self.router.table, self.taps, self.keepers, self.conflaters
            )
        )

    def source_dropped(self, source: SourceKind) -> None:
        """A source lost its connection: with ``on_disconnect: close_clients``, the
        clients of the endpoints it feeds are closed (1011)."""
        if source.spec.on_disconnect != "close_clients":
            return
        for name in self.graph.endpoints_of_source(source.name):
            ep = self.endpoints.get(name)
            if isinstance(ep, ClientEndpoint) and ep.clients:
                ep.close_clients(1011, f"upstream {source.name} disconnected")  # (one line says so)

    # ------------------------------------------------------------------ stop

    async def stop(self) -> None:
        """Stop accepting, close clients (WebSocket 1001) and sources, release listeners.

        Bounded: after ``SHUTDOWN_TIMEOUT`` seconds, connections still open are aborted.
        """
        if self._ticker is not None:
            self._ticker.cancel()
        for listener in self.listeners.values():
            listener.stop_accepting()
        for conflater in self.conflaters.values():
            conflater.stop()  # what conflating routes held goes out too
        self.router.flush()  # what was dispatched before the signal still goes out
        for ep in self.endpoints.values():
            ep.stop()
            if isinstance(ep, ClientEndpoint):
                ep.close_clients(1001, "Veylor is shutting down")
        waits = [asyncio.ensure_future(s.stop()) for s in self.sources.values()]
        waits += [asyncio.ensure_future(listener.close()) for listener in self.listeners.values()]
        waits += [asyncio.ensure_future(ep.wait_empty()) for ep in with_clients(self.endpoints.values())]
        waits += list(self._background)
        done, pending = await asyncio.wait(waits, timeout=SHUTDOWN_TIMEOUT) if waits else (set(), set())
        if pending:
            log.warning(
                "shutdown: %d parts did not stop in %.0fs: aborting them", len(pending), SHUTDOWN_TIMEOUT
            )
            for served in with_clients(self.endpoints.values()):
                served.abort_all()
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.warning("shutdown: %s", task.exception())
        self.budget.stop()
        self.sources.clear()


class Binding:
    """An apply between :meth:`Runtime.bind` and :meth:`Runtime.commit`: its new
    listeners are bound, nothing serves differently yet."""

    def __init__(self, run: _Execution) -> None:
        self.run = run

    @property
    def plan(self) -> Plan:
        return self.run.plan

    async def undo(self) -> None:
        """Take back what :meth:`Runtime.bind` did (the caller's own bind failed)."""
        await self.run.undo()


class _Execution:
    """The steps of one apply, one method per kind of step (named as the step)."""

    def __init__(self, runtime: Runtime, new: Graph, plan: Plan) -> None:
        self.rt = runtime
        self.new = new
        self.plan = plan
        self.fresh: dict[str, Endpoint] = {}  # made by create_endpoint, until start_endpoint
        self.replaced: dict[str, Endpoint] = {}  # old objects of rebound endpoints
        self.bound: list[Listener] = []
        self.waits: list[Coroutine[Any, Any, None]] = []  # source stops and restarts
        self.closed: dict[str, int] = {}

    def endpoint(self, name: str) -> Endpoint:
        return self.fresh.get(name) or self.rt.endpoints[name]

    async def create_endpoint(self, step: Step) -> None:
        rt = self.rt
        self.fresh[step.name] = make_endpoint(
            self.new.endpoints[step.name], rt.stats.endpoint(step.name), rt.budget
        )

    async def bind(self, step: Step) -> None:
        if step.key is None:
            raise RuntimeError("invariant broken: step.key is not None")
        listener = make_listener(step.key)
        listener.attach([self.endpoint(n) for n in step.detail])
        try:
            await listener.start()
        except StartupError as exc:
            running = {self.rt.graph.listener_texts.get(k) for k in self.rt.listeners}
            if step.name in running:  # the address is ours, held by a listener of another kind
                raise StartupError(
                    f"{exc}: Veylor itself listens there, as another kind of listener (ws:// becoming "
                    "wss://, or back): restart Veylor to apply this change"
                ) from None
            raise
        self.bound.append(listener)
        self.rt.listeners[step.key] = listener

    async def undo(self) -> None:
        """A bind failed: close the listeners this apply bound, and drop what the new
        endpoints had (clients that connected to a listener bound meanwhile, counters):
        the running graph is as it was."""
        rt = self.rt
        for ep in with_clients(self.fresh.values()):
            ep.abort_all()
        for listener in self.bound:
            del rt.listeners[listener.key]
            try:
                async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                    await listener.close()
            except TimeoutError:
                log.warning(
                    "reload: listener %s did not close in %.0fs", listener.describe(), SHUTDOWN_TIMEOUT
                )
        rt.stats.retain(rt.graph)

    async def attach(self, step: Step) -> None:
        if step.key is None:
            raise RuntimeError("invariant broken: step.key is not None")
        self.rt.listeners[step.key].attach([self.endpoint(n) for n in step.detail])

    async def start_endpoint(self, step: Step) -> None:
        ep = self.fresh.pop(step.name)
        old = self.rt.endpoints.get(step.name)
        if old is not None:
            self.replaced[step.name] = old
        self.rt.endpoints[step.name] = ep
        ep.start()

    async def update_endpoint(self, step: Step) -> None:
        self.rt.endpoints[step.name].update(self.new.endpoints[step.name])

    async def stop_source(self, step: Step) -> None:
        self.waits.append(self.rt.sources.pop(step.name).stop())

    async def restart_source(self, step: Step) -> None:
        self.waits.append(self.rt.sources[step.name].restart(self.new.sources[step.name]))

    async def start_source(self, step: Step) -> None:
        rt = self.rt
        source = make_source(
            self.new.sources[step.name], rt.router.dispatch, rt.source_dropped, rt.stats.source(step.name)
        )
        rt.sources[step.name] = source
        source.start()

    async def swap_routes(self, step: Step) -> None:
        self.rt.install(self.new)

    async def set_limits(self, step: Step) -> None:
        self.rt.budget.limit = self.new.limits.buffered

    async def retire_endpoint(self, step: Step) -> None:
        ep = self.replaced.pop(step.name, None) or self.rt.endpoints.pop(step.name)
        ep.stop()
        self.closed[step.name] = len(ep.clients)
        if isinstance(ep, ClientEndpoint):
            code, reason = step.close or REMOVED
            ep.close_clients(code, reason)

    async def unbind(self, step: Step) -> None:
        if step.key is None:
            raise RuntimeError("invariant broken: step.key is not None")
        listener = self.rt.listeners.pop(step.key)
        listener.stop_accepting()
        self.rt.spawn(listener.close())


# The method of _Execution that runs each kind of step: a plan's steps are dispatched by
# their Op, and a kind of step without a method is found when this module loads (the
# control plane's own steps excepted).
_STEP: dict[Op, Callable[[_Execution, Step], Coroutine[Any, Any, None]]] = {
    Op.CREATE_ENDPOINT: _Execution.create_endpoint,
    Op.BIND: _Execution.bind,
    Op.ATTACH: _Execution.attach,
    Op.START_ENDPOINT: _Execution.start_endpoint,
    Op.UPDATE_ENDPOINT: _Execution.update_endpoint,
    Op.STOP_SOURCE: _Execution.stop_source,
    Op.RESTART_SOURCE: _Execution.restart_source,
    Op.START_SOURCE: _Execution.start_source,
    Op.SWAP_ROUTES: _Execution.swap_routes,
    Op.SET_LIMITS: _Execution.set_limits,
    Op.RETIRE_ENDPOINT: _Execution.retire_endpoint,
    Op.UNBIND: _Execution.unbind,
}
if set(_STEP) != set(Op) - CONTROL:
    raise RuntimeError(f"runtime: no method for the steps {sorted(set(Op) - CONTROL - set(_STEP))}")
