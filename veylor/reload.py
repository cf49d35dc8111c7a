"""Hot reload: triggers (file changes, SIGHUP, a caller of :meth:`Reloader.request`) -> load
-> validate -> build -> diff -> apply.

Reloads never run concurrently: a trigger during a reload queues exactly one more.
Anything that fails before the runtime applies the plan leaves the running graph
untouched; so does a listener that cannot be bound (the apply is all or nothing).
Every request gets the :class:`Outcome` of the reload that served it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import Config, ConfigError, load_config
from .config.files import FileCache
from .config.problems import Location, Problem
from .config.yamlfile import RESPONSIVE
from .filewatch import CATCH_UP, FileWatch
from .graph import Graph, Plan, Step, build_graph, diff
from .heap import settle_heap
from .observe.logs import remember
from .report import plural
from .runtime import Runtime, StartupError
from .runtime.supervisor import Applied

log = logging.getLogger("veylor.reload")

# (the new graph, its plan, the graph the plan was made from) -> what the apply did
Apply = Callable[[Graph, Plan | None, Graph | None], Awaitable[Applied]]


@dataclass(frozen=True)
class Outcome:
    """What one reload did.

    ``applied``: a new configuration runs (``changes``: one line per component changed,
    with the clients it affected; ``steps``: what the runtime did, in order). Otherwise the running one stays: it was the same
    (``problems`` and ``error`` empty), or the new one was rejected (``problems``:
    file, line, key and message of each), or could not be applied (``error``: a
    listener could not be bound; nothing was changed).
    """

    reason: str
    applied: bool
    generation: int  # the configuration generation running after it
    digest: str  # ... and its hash
    changes: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    problems: tuple[Problem, ...] = ()
    error: str | None = None
    at: float = field(default_factory=time.time)
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        """The configuration on disk is valid and runs."""
        return not self.problems and self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "ok": self.ok,
            "applied": self.applied,
            "generation": self.generation,
            "digest": self.digest,
            "changes": list(self.changes),
            "steps": [step.as_dict() for step in self.steps],
            "problems": [p.as_dict() for p in self.problems],
            "error": self.error,
            "at": self.at,
            "duration_ms": round(self.duration_ms, 1),
        }


def no_reload(reason: str, runtime: Runtime) -> asyncio.Future[Outcome]:
    """The outcome of a reload asked of a runtime run without a configuration file (in
    process, embedded): refused at once, the running graph stays."""
    done: asyncio.Future[Outcome] = runtime.loop.create_future()
    done.set_result(
        Outcome(
            reason, False, runtime.generation, runtime.graph.digest, error="no configuration file to reload"
        )
    )
    return done


class DryRun:
    """What a reload now would do, without doing it: the outcome's ``changes`` and
    ``steps``, or the problems. Reads every file; the running configuration and the
    reload cache are untouched. Dry runs asked for while one runs share it (a flood of
    them costs one load at a time), on a thread of their own (real reloads and /metrics
    never queue behind them)."""

    def __init__(self, config_path: str, runtime: Runtime, env: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        self.runtime = runtime
        self.env = env
        self._planning: asyncio.Future[Outcome] | None = None  # the dry run in progress
        self._planner: concurrent.futures.ThreadPoolExecutor | None = None

    def __call__(self, reason: str) -> asyncio.Future[Outcome]:
        if self._planning is None or self._planning.done():
            self._planning = asyncio.ensure_future(self._plan(reason))
        return asyncio.shield(self._planning)

    def stop(self) -> None:
        """A dry run in progress does not hold the exit."""
        if self._planner is not None:
            self._planner.shutdown(wait=False, cancel_futures=True)
        if self._planning is not None:
            self._planning.cancel()

    async def _plan(self, reason: str) -> Outcome:
        running = self.runtime.graph

        def load() -> Plan:
            responsive = RESPONSIVE.set(True)
            try:
                config = load_config(self.config_path, env=self.env)
            finally:
                RESPONSIVE.reset(responsive)
            return diff(running, build_graph(config, previous=running))

        if self._planner is None:
            self._planner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="veylor-dry-run")
        try:
            plan = await asyncio.get_running_loop().run_in_executor(self._planner, load)
        except ConfigError as exc:
            return Outcome(
                reason,
                False,
                self.runtime.generation,
                running.digest,
                problems=tuple(exc.problems) or (_invalid(self.config_path),),
            )
        except Exception as exc:
            log.exception("reload (dry run): unexpected error")
            return Outcome(
                reason,
                False,
                self.runtime.generation,
                running.digest,
                error=f"unexpected error ({type(exc).__name__}); see the log",
            )
        return Outcome(
            reason,
            False,
            self.runtime.generation,
            running.digest,
            changes=tuple(plan.describe()) if not plan.empty else (),
            steps=plan.steps,
        )


class Reloader:
    """Owns the reload loop and its triggers for one running :class:`Runtime`: requests
    (SIGHUP, the admin endpoint, its :class:`FileWatch`) queue and share one reload;
    dry runs go to its :class:`DryRun`.

    Loading (reading, parsing, validating) runs in a worker thread with a per-file cache,
    so that a reload never stalls the event loop that serves every client: with a
    thousand drop-ins and one of them edited, the thread re-parses one file.
    """

    def __init__(
        self,
        config_path: str,
        runtime: Runtime,
        config: Config | None = None,
        watch: str = "auto",
        env: Mapping[str, str] | None = None,
        cache: FileCache | None = None,
        apply: Apply | None = None,
    ) -> None:
        """``config``: the running configuration, as the loader returned it (its include
        patterns say what to watch); ``cache``: the files that load already parsed;
        ``apply``: what applies a new graph (the control plane's
        :meth:`veylor.control.Controller.apply`, which runs the admin endpoint's steps
        too; by default the runtime's own)."""
        self.config_path = config_path
        self.runtime = runtime
        self.apply: Apply = apply if apply is not None else runtime.apply
        self.env = env
        self.watch = FileWatch(
            config_path,
            config.include if config is not None else (),
            config.referenced if config is not None else (),
            watch,
            self.request,
        )
        self.dry_run = DryRun(config_path, runtime, env)
        self.cache = cache if cache is not None else FileCache()
        self.last: Outcome | None = None  # the last reload's outcome
        self.last_change: Outcome | None = None  # the last one that changed something
        self._failing = False  # the last reload was rejected: say so when it recovers
        self._requested = asyncio.Event()
        self._reasons: list[str] = []
        self._waiters: list[asyncio.Future[Outcome]] = []
        self._changed: set[str] | None = set()  # None: read every file
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.on_start: Callable[[], None] = _nothing  # a reload begins (systemd: RELOADING=1)
        self.on_done: Callable[[], None] = _nothing  # ... and is over, applied or not (READY=1)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._loop(), name="veylor-reload"))
        if self.watch.mode != "off":
            self._tasks.append(loop.create_task(self.watch.run(), name="veylor-watch"))

    async def stop(self) -> None:
        """Stop watching and reloading; requests not yet served are answered (not applied)."""
        self._stop.set()
        self.watch.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                log.warning("reload: %s while stopping", exc)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(self._outcome("stop", error="Veylor stopped before this reload ran"))
        self.dry_run.stop()

    def request(self, reason: str, paths: set[str] | None = None) -> asyncio.Future[Outcome]:
        """Ask for a reload (from a signal handler, the file watcher, :meth:`Server.reload`); the
        returned future gets the :class:`Outcome` of the reload that serves the request
        (one that starts after it was made; requests made meanwhile share it).

        ``paths``: the files that changed, when the trigger knows (the watcher); the
        reload then reads only those and the files whose stat changed. Without it
        (SIGHUP: the operator asks), every file is read again.
        """
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if self._stop.is_set():
            waiter.set_result(self._outcome(reason, error="Veylor is stopping: not reloaded"))
            return waiter
        if paths is None:
            self._changed = None
        elif self._changed is not None:
            self._changed |= paths
        self._reasons.append(reason)
        self._waiters.append(waiter)
        self._requested.set()
        return waiter

    async def _loop(self) -> None:
        while True:
            await self._requested.wait()
            self._requested.clear()
            reasons, self._reasons = self._reasons, []
            waiters, self._waiters = self._waiters, []
            changed, self._changed = self._changed, set()
            reason = ", ".join(dict.fromkeys(reasons)) or "request"
            outcome: Outcome | None = None
            self.on_start()
            try:
                outcome = await self.reload(reason, frozenset(changed) if changed is not None else None)
            except Exception as exc:  # a bug must not end reloading for the life of the process
                log.exception("reload: unexpected error; the running configuration is unchanged")
                # Not the exception's text: it may quote a value of the new files (a secret).
                outcome = self._outcome(reason, error=f"unexpected error ({type(exc).__name__}); see the log")
            finally:
                if outcome is None:  # cancelled: Veylor stops
                    outcome = self._outcome(reason, error="Veylor stopped before this reload was done")
                else:
                    self.on_done()
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(outcome)

    def plan(self, reason: str) -> asyncio.Future[Outcome]:
        """What a reload now would do, without doing it: see :class:`DryRun`."""
        return self.dry_run(reason)

    def _outcome(self, reason: str, **how: Any) -> Outcome:
        rt = self.runtime
        self.last = Outcome(
            reason, generation=rt.generation, digest=rt.graph.digest, **{"applied": False, **how}
        )
        if self.last.applied and self.last.changes:
            self.last_change = self.last
        return self.last

    def _load(self, running: Graph, changed: frozenset[str] | None) -> tuple[Config, Graph, Plan]:
        """Runs in a worker thread: everything pure of a reload (read, parse and validate,
        cached per file; build; diff against ``running``), so that the event loop only
        applies the plan."""
        responsive = RESPONSIVE.set(True)  # the relay runs beside: see read_yaml
        try:
            config = load_config(self.config_path, env=self.env, cache=self.cache, changed=changed)
        finally:
            RESPONSIVE.reset(responsive)
        remember(config)
        graph = build_graph(config, previous=running)
        return config, graph, diff(running, graph)

    async def _off_loop(self, running: Graph, changed: frozenset[str] | None) -> tuple[Config, Graph, Plan]:
        """:meth:`_load` in a worker thread. Meanwhile the interpreter switches threads
        every millisecond instead of every 5, so the event loop waits at most that long
        for the interpreter lock whenever a client needs it, and the garbage collector
        waits (a configuration of a million values would make it walk them all, holding
        the lock)."""
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, 0.001))
        collecting = gc.isenabled()
        gc.disable()  # a full collection in the worker would hold the lock for 100 ms and more
        try:
            return await asyncio.to_thread(self._load, running, changed)
        finally:
            sys.setswitchinterval(interval)
            # What the load made (the configuration, the cache) lives long: out of the
            # collector's walks before it runs again (a first walk over a large file's
            # values took 80 ms).
            settle_heap()
            if collecting:
                gc.enable()

    async def reload(self, reason: str, changed: frozenset[str] | None = None) -> Outcome:
        """One reload and its outcome. ``changed``: see :meth:`request`."""
        started = time.monotonic()
        running = self.runtime.graph
        process = self.runtime.stats.process
        quiet = reason.startswith("file change")
        try:
            config, graph, plan = await self._off_loop(running, changed)
        except ConfigError as exc:
            process.reloads_failed += 1
            self._failing = True
            log.error(
                "reload (%s) rejected: %s; still running generation %d (config %s)",
                reason,
                plural(len(exc.problems), "problem"),
                self.runtime.generation,
                running.digest[:12],
            )
            for problem in exc.problems:
                log.error("  %s", problem)
            self.watch.rescope()
            return self._outcome(reason, problems=tuple(exc.problems) or (_invalid(self.config_path),))
        self.watch.rescope(config.include, config.referenced)
        if config.digest == running.digest:
            if self._failing:
                self._failing = False
                log.info(
                    "reload (%s): the configuration is valid again and the same as the running one: "
                    "still generation %d (config %s)",
                    reason,
                    self.runtime.generation,
                    running.digest[:12],
                )
            else:
                log.log(logging.DEBUG if quiet else logging.INFO, "reload (%s): no changes", reason)
            if reason == CATCH_UP:  # (the watcher's own look at startup: no reload anyone asked for)
                rt = self.runtime
                return Outcome(reason, generation=rt.generation, digest=rt.graph.digest, applied=False)
            return self._outcome(reason)
        try:
            applied = await self.apply(graph, plan, running)
        except StartupError as exc:
            process.reloads_failed += 1
            self._failing = True
            remember(running)  # its secrets stay the current ones, whatever fails next
            log.error(
                "reload (%s) aborted: %s; nothing was changed, still running generation %d",
                reason,
                exc,
                self.runtime.generation,
            )
            return self._outcome(reason, error=str(exc))
        plan = applied.plan
        process.reloads_ok += 1
        recovered = " (the configuration is valid again)" if self._failing else ""
        self._failing = False
        for warning in config.warnings:
            log.warning("%s", warning)
        lines = [
            self._with_clients(kind, name, line, running, graph, applied.clients_closed)
            for _, kind, name, line in plan.entries()
        ]
        changes = 0 if plan.empty else len(lines)
        duration = (time.monotonic() - started) * 1000
        log.info(
            "reload #%d (%s): config %s, %s, applied in %.0f ms%s",
            self.runtime.generation,
            reason,
            graph.digest[:12],
            plural(changes, "change") if changes else "no component changed",
            duration,
            recovered,
        )
        if changes:
            for line in lines:
                log.info("  %s", line)
            log.info("  steps: %s", "; ".join(str(step) for step in plan.steps))
        return self._outcome(
            reason, applied=True, changes=tuple(lines), steps=plan.steps, duration_ms=duration
        )

    def _with_clients(
        self, kind: str, name: str, line: str, old: Graph, new: Graph, closed: Mapping[str, int]
    ) -> str:
        """Annotate one plan line with the clients it affects."""
        if kind == "endpoint" and closed.get(name):
            return f"{line} (closed {plural(closed[name], 'client')})"
        endpoints = self.runtime.endpoints
        if kind == "endpoint" and name in endpoints and endpoints[name].clients:
            return f"{line} ({plural(len(endpoints[name].clients), 'client')} kept)"
        if kind == "source":
            names = {e for g in (old, new) for e in g.endpoints_of_source(name)}
        elif kind == "route":
            names = {e for g in (old, new) if name in g.routes for e in g.routes[name].endpoints}
        else:
            return line
        count = sum(len(endpoints[e].clients) for e in names if e in endpoints)
        return f"{line} ({plural(count, 'client')} on its endpoints)" if count else line


def _nothing() -> None:
    pass


def _invalid(path: str) -> Problem:
    return Problem(Location(path), (), "invalid configuration")
