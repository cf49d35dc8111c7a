"""The process lifecycle (:class:`Server`): event loop, signals, start, run until told to
stop, ordered shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from .config import Config, load_config
from .config.files import FileCache
from .control import Controller
from .graph import build_graph
from .heap import settle_heap, tune_collector
from .observe.logs import remember
from .observe.notify import Notifier
from .observe.state import snapshot, snapshot_async
from .observe.view import StateView
from .reload import Outcome, Reloader, no_reload
from .report import counts
from .runtime import Runtime, StartupError

log = logging.getLogger("veylor")


def raise_fd_limit(needed: int) -> None:
    """Raise the soft limit on open files to the hard limit (systemd's soft default is
    1024: far fewer than max_clients allows); warn if it stays low for ``needed``."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < min(needed, 4096):
        log.warning(
            "the open-file limit is %d but the endpoints allow %d clients: raise it "
            "(LimitNOFILE= in the systemd unit, --ulimit nofile= for podman)",
            soft,
            needed,
        )


EXIT_GRACE = 1.0  # seconds for the tasks left after ``main`` to end once cancelled


def run_loop(main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main`` on uvloop (where available) and return its exit code.

    Bounded: the tasks still running when ``main`` returns are cancelled and given
    ``EXIT_GRACE``. One that ignores its cancellation (a library's, or a swallowed
    cancellation: Python 3.11's ``wait_for`` loses one that arrives as its future
    completes) would hold ``asyncio.Runner``'s close, which waits for every task, for
    ever: then the process exits without it, after saying which it was."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - non-Linux
        factory = None

    async def bounded() -> int:
        code = await main()
        if await _end_the_rest(EXIT_GRACE):
            return code
        logging.shutdown()  # (flushes the log: nothing after this runs)
        sys.stderr.flush()
        os._exit(code)

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(bounded())


async def _end_the_rest(grace: float) -> bool:
    """Cancel every other task; whether all ended within ``grace`` seconds."""
    rest = asyncio.all_tasks() - {asyncio.current_task()}
    for task in rest:
        task.cancel()
    if not rest:
        return True
    _, pending = await asyncio.wait(rest, timeout=grace)
    if pending:
        names = ", ".join(sorted(task.get_name() for task in pending))
        log.warning(
            "exit: %d task(s) did not end %.0f s after being cancelled (%s): exiting without them",
            len(pending),
            grace,
            names,
        )
    return not pending


class Server:
    """One running Veylor: its configuration (as the loader returned it: files, warnings,
    shape, include patterns), the runtime, the reloader, the signals; later the admin
    endpoint and the TUI. As uvicorn separates ``Config`` from ``Server``:
    :meth:`serve` is :meth:`startup`, then wait for a stop signal, then
    :meth:`shutdown`, and each reads top to bottom.
    """

    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        watch: str = "auto",
        cache: FileCache | None = None,
    ) -> None:
        """``config_path``: reload from there (SIGHUP; file changes unless ``watch`` is
        "off"); ``cache``: the files the load of ``config`` parsed."""
        self.config = config
        self.config_path = config_path
        self.watch = watch
        self.cache = cache
        self.runtime: Runtime | None = None
        self.controller: Controller | None = None  # applies graphs, owns the admin endpoint
        self.reloader: Reloader | None = None
        self.stopping = asyncio.Event()
        self.notifier = Notifier()

    @classmethod
    def load(cls, path: str, watch: str = "auto") -> Server:
        """Read ``path`` and its drop-ins (:class:`ConfigError` with every problem)."""
        cache = FileCache()
        config = load_config(path, cache=cache)
        remember(config)
        return cls(config, config_path=path, watch=watch, cache=cache)

    async def serve(self, on_ready: Callable[[Server], Awaitable[None] | None] | None = None) -> int:
        """Start, run until SIGTERM or SIGINT (or :meth:`stop`); 0 on a clean stop, 1 if a
        listener cannot be bound."""
        if not await self.startup():
            return 1
        try:
            if on_ready is not None:
                result = on_ready(self)
                if result is not None:
                    await result
            await self.stopping.wait()
        finally:
            await self.shutdown()
        return 0

    async def startup(self) -> bool:
        graph = build_graph(self.config)
        raise_fd_limit(sum(e.max_clients for e in graph.endpoints.values()) + 64)
        settle_heap(collect=True)
        tune_collector()
        runtime = self.runtime = Runtime()
        controller = self.controller = Controller(
            runtime, control=self
        )  # (the admin endpoint drives this Server)
        try:
            await controller.start(graph)
        except StartupError as exc:
            log.error("%s", exc)
            return False
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        notifier = self.notifier
        if self.config_path is not None:
            self.reloader = Reloader(
                self.config_path, runtime, self.config, self.watch, cache=self.cache, apply=controller.apply
            )
            self.reloader.on_start = notifier.reloading
            self.reloader.on_done = lambda: notifier.ready(self.status_line())
            loop.add_signal_handler(signal.SIGHUP, self.reloader.request, "SIGHUP")
            self.reloader.start()
        else:
            loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("received SIGHUP: nothing to reload"))
        log.info("ready: %s (event loop: %s)", counts(graph), type(loop).__module__.split(".")[0])
        sys.stderr.flush()
        notifier.ready(self.status_line())
        notifier.start(loop, self.status_line)
        return True

    def status_line(self) -> str:
        """One line for systemd's status: ``2/3 sources connected, 120 clients, generation 4``."""
        rt = self.runtime
        if rt is None:
            return "starting"
        up = sum(1 for s in rt.sources.values() if s.state == "connected")
        clients = sum(len(ep.clients) for ep in rt.endpoints.values())
        return f"{up}/{len(rt.sources)} sources connected, {clients} clients, generation {rt.generation}"

    def reload(self, reason: str, dry_run: bool = False) -> asyncio.Future[Outcome]:
        """Reload now (every file read again); the future gets the outcome. ``dry_run``:
        load and compare only; the outcome's steps are what a reload would do."""
        if self.reloader is None:
            return no_reload(reason, self._running())
        if dry_run:
            return self.reloader.plan(reason)
        return self.reloader.request(reason)

    def _running(self) -> Runtime:
        """The runtime, once :meth:`startup` made it (the admin endpoint and the TUI ask
        only after)."""
        if self.runtime is None:
            raise RuntimeError("the Server's runtime is asked for before startup made it")
        return self.runtime

    def snapshot(self, clients: bool | str = False) -> StateView:
        """The state view (:func:`veylor.observe.state.snapshot`)."""
        return snapshot(self._running(), self.reloader, clients=clients)

    async def snapshot_async(self, clients: bool | str = False, tap: str | None = None) -> StateView:
        """The state view, built in pieces between which clients are served (``tap``: and
        the tapped messages of that route, see :mod:`veylor.runtime.tap`)."""
        return await snapshot_async(self._running(), self.reloader, clients=clients, tap=tap)

    def stop(self) -> None:
        self.stopping.set()

    def _on_stop_signal(self, signum: int) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        self.stop()

    async def shutdown(self) -> None:
        """Stop reloading, then the runtime (stop accepting, close clients, sources)."""
        self.notifier.stopping()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        if self.reloader is not None:
            await self.reloader.stop()
        if self.controller is not None:
            await self.controller.stop()
        self.notifier.stop()
        log.info("stopped")
