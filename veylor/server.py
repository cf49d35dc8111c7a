"""The process lifecycle: event loop, signals, start, run until told to stop, ordered shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from .config.loader import FileCache
from .graph import Graph
from .heap import settle_heap
from .reload import Reloader
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


def run_loop(main: Callable[[], Awaitable[int]]) -> int:
    """Run ``main`` on uvloop (where available) and return its exit code."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - non-Linux
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


async def serve(
    graph: Graph,
    config_path: str | None = None,
    watch: str = "auto",
    on_ready: Callable[[Runtime], Awaitable[None] | None] | None = None,
    include: tuple[str, ...] | None = None,
    cache: FileCache | None = None,
) -> int:
    """Start the runtime for ``graph`` and run until SIGTERM or SIGINT; 0 on a clean stop.

    With ``config_path``, SIGHUP and (unless ``watch`` is "off") file changes reload it;
    ``include`` and ``cache`` come from the load that built ``graph`` (what to watch, and
    the files already parsed).
    """
    loop = asyncio.get_running_loop()
    raise_fd_limit(sum(e.max_clients for e in graph.endpoints.values()) + 64)
    settle_heap(collect=True)
    runtime = Runtime()
    try:
        await runtime.start(graph)
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    stop = asyncio.Event()
    reloader = Reloader(config_path, runtime, watch, include=include, cache=cache) if config_path else None

    def on_signal(signum: int) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, reloader.request, "SIGHUP")
        reloader.start()
    else:
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("received SIGHUP: nothing to reload"))
    log.info("ready: %s (event loop: %s)", counts(graph), type(loop).__module__.split(".")[0])
    sys.stderr.flush()
    try:
        if on_ready is not None:
            result = on_ready(runtime)
            if result is not None:
                await result
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        if reloader is not None:
            await reloader.stop()
        await runtime.stop()
        log.info("stopped")
    return 0
