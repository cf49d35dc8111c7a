"""Hot reload: triggers (file changes, SIGHUP) -> load -> validate -> build -> diff -> apply.

Reloads never run concurrently: a trigger during a reload queues exactly one more.
Anything that fails before the runtime applies the plan leaves the running graph
untouched; so does a listener that cannot be bound (the apply is all or nothing).
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import time
from collections.abc import Mapping

from .config import ConfigError, load_config
from .graph import Graph, build_graph
from .observe.logs import remember
from .report import plural
from .runtime import Runtime, StartupError

log = logging.getLogger("veylor.reload")

WATCH_MODES = ("auto", "poll", "off")


class Reloader:
    """Owns the reload loop and its triggers for one running :class:`Runtime`."""

    def __init__(
        self,
        config_path: str,
        runtime: Runtime,
        watch: str = "auto",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.runtime = runtime
        self.watch_mode = watch
        self.env = env
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.last_error: str | None = None
        self.last_reload_at: float | None = None
        self._requested = asyncio.Event()
        self._reasons: list[str] = []
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._loop(), name="veylor-reload"))
        if self.watch_mode != "off":
            self._tasks.append(loop.create_task(self._watch(), name="veylor-watch"))

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                log.warning("reload: %s while stopping", exc)

    def request(self, reason: str) -> None:
        """Ask for a reload (from a signal handler, the file watcher, the admin API)."""
        self._reasons.append(reason)
        self._idle.clear()
        self._requested.set()

    async def wait_idle(self) -> None:
        """Wait until no reload is requested or running (for tests and the admin API)."""
        await self._idle.wait()

    async def _loop(self) -> None:
        while True:
            await self._requested.wait()
            self._requested.clear()
            reasons, self._reasons = self._reasons, []
            try:
                await self.reload(", ".join(dict.fromkeys(reasons)) or "request")
            except Exception:  # a bug must not end reloading for the life of the process
                log.exception("reload: unexpected error; the running configuration is unchanged")
            if not self._requested.is_set():
                self._idle.set()

    async def reload(self, reason: str) -> bool:
        """One reload; True when a new configuration was applied."""
        started = time.monotonic()
        self.last_reload_at = time.time()
        running = self.runtime.graph
        quiet = reason.startswith("file change")
        try:
            config = load_config(self.config_path, env=self.env)
        except ConfigError as exc:
            self.reloads_failed += 1
            self.last_error = str(exc.problems[0]) if exc.problems else "invalid configuration"
            log.error(
                "reload (%s) rejected: %s; still running generation %d (config %s)",
                reason,
                plural(len(exc.problems), "problem"),
                self.runtime.generation,
                running.digest[:12],
            )
            for problem in exc.problems:
                log.error("  %s", problem)
            return False
        remember(config)
        if config.digest == running.digest:
            log.log(logging.DEBUG if quiet else logging.INFO, "reload (%s): no changes", reason)
            return False
        graph = build_graph(config)
        try:
            applied = await self.runtime.apply(graph)
        except StartupError as exc:
            self.reloads_failed += 1
            self.last_error = str(exc)
            log.error(
                "reload (%s) aborted: %s; nothing was changed, still running generation %d",
                reason,
                exc,
                self.runtime.generation,
            )
            return False
        plan = applied.plan
        self.reloads_ok += 1
        self.last_error = None
        for warning in config.warnings:
            log.warning("%s", warning)
        lines = [
            self._with_clients(kind, name, line, running, graph, applied.clients_closed)
            for _, kind, name, line in plan.entries()
        ]
        changes = 0 if plan.empty else len(lines)
        log.info(
            "reload #%d (%s): config %s, %s, applied in %.0f ms",
            self.runtime.generation,
            reason,
            graph.digest[:12],
            plural(changes, "change") if changes else "no component changed",
            (time.monotonic() - started) * 1000,
        )
        if changes:
            for line in lines:
                log.info("  %s", line)
        return True

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
            names = {e for g in (old, new) for r in g.routes_by_source.get(name, ()) for e in r.endpoints}
        elif kind == "route":
            names = {e for g in (old, new) if name in g.routes for e in g.routes[name].endpoints}
        else:
            return line
        count = sum(len(endpoints[e].clients) for e in names if e in endpoints)
        return f"{line} ({plural(count, 'client')} on its endpoints)" if count else line

    # ------------------------------------------------------------------ file watching

    def watched_dirs(self) -> list[str]:
        """The main file's directory and the base directories of include patterns outside it."""
        main_dir = os.path.dirname(os.path.abspath(self.config_path))
        dirs = [main_dir]
        for include in _include_patterns(self.config_path):
            base = include
            while glob.has_magic(base):
                base = os.path.dirname(base)
            base = os.path.abspath(os.path.join(main_dir, base))
            if not os.path.isdir(base):
                base = os.path.dirname(base)
            if os.path.isdir(base) and not any(base == d or base.startswith(d + os.sep) for d in dirs):
                dirs.append(base)
        return dirs

    async def _watch(self) -> None:
        from watchfiles import awatch

        dirs = self.watched_dirs()
        poll = self.watch_mode == "poll"
        log.info("watching %s for changes%s", ", ".join(dirs), " (polling)" if poll else "")
        async for changes in awatch(
            *dirs,
            debounce=1000,
            step=100,
            stop_event=self._stop,
            force_polling=poll,
            poll_delay_ms=300,
            ignore_permission_denied=True,
        ):
            names = sorted({os.path.basename(path) for _, path in changes})
            self.request("file change: " + ", ".join(names[:3]) + (" ..." if len(names) > 3 else ""))


def _include_patterns(config_path: str) -> list[str]:
    """The main file's include patterns, read leniently (the watcher must start even when
    the configuration is broken: fixing it is what it waits for)."""
    import yaml

    try:
        with open(config_path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        include = data.get("include", ["routes.d/*.yaml"]) if isinstance(data, dict) else []
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        include = ["routes.d/*.yaml"]
    if isinstance(include, str):
        include = [include]
    return [p for p in include if isinstance(p, str)]
