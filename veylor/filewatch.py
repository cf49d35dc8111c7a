"""The file watcher: a reload trigger. It watches what :mod:`veylor.watchscope` says (the
main file, the directories the include patterns can match, the files the configuration
refers to) and asks for a reload, with the paths that changed, whenever one of them does.

A watch that cannot run (a directory unreadable or gone) is said once and retried; a
watched directory that is removed or replaced is watched anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable

from .watchscope import WatchScope

log = logging.getLogger("veylor.reload")
# The look the watcher takes once its watch is in place (a change made while it was
# starting would be missed): a reload like any other when it finds a change, and not
# one (not recorded, not logged above DEBUG) when it finds none.
CATCH_UP = "file change: catching up after the watch started"

WATCH_STEP_MS = 30  # a change is picked up once its files have been quiet this long (the settle time)
WATCH_DEBOUNCE_MS = 500  # ... or after this long, under a stream of changes
WATCH_RETRY_S = 3.0  # a watch that failed (a directory unreadable or gone) is tried again this often
WATCH_TIMEOUT_MS = 1000  # the watcher wakes this often when nothing changes (its first wake-up
# tells the watch is in place)


class FileWatch:
    """Watches one configuration's files and calls ``request(reason, paths)`` when they
    change (``mode``: ``auto``, ``poll``, or ``off``: :meth:`run` is never started).

    Its scope is re-derived after each reload (:meth:`rescope`), which also retries a
    watch that failed: ``error`` says why the watch is not running, if it is not.
    """

    def __init__(
        self,
        config_path: str,
        include: tuple[str, ...],
        referenced: tuple[str, ...],
        mode: str,
        request: Callable[[str, set[str] | None], object],
    ) -> None:
        self.config_path = config_path
        self.include = include
        self.referenced = referenced  # tokens files, certificates
        self.mode = mode
        self.error: str | None = None  # why the file watch is not running, if it is not
        self._request = request
        self._stop = asyncio.Event()
        self._rewatch = asyncio.Event()
        self._scope: WatchScope | None = None

    def stop(self) -> None:
        """End :meth:`run` (at its next wake-up; its task is cancelled by its owner)."""
        self._stop.set()
        self._rewatch.set()

    def rescope(
        self, include: tuple[str, ...] | None = None, referenced: tuple[str, ...] | None = None
    ) -> None:
        """After a reload: re-derive what to watch (the include patterns may have changed,
        a pattern's directory may have appeared, files the configuration refers to may be
        others) and retry a watch that failed."""
        if include is not None:
            self.include = include
        if referenced is not None:
            self.referenced = referenced
        if self.mode == "off":
            return
        scope = WatchScope.of(self.config_path, self.include, self.referenced)
        if scope != self._scope or self.error is not None:
            self._rewatch.set()

    async def run(self) -> None:
        """Watch the scope's directories until stopped; start again whenever the scope
        changes or a watched directory is replaced; when a watch fails, say so once
        (SIGHUP still works) and retry every WATCH_RETRY_S and at each reload."""
        from watchfiles import awatch

        poll = self.mode == "poll"
        while not self._stop.is_set():
            self._rewatch.clear()
            scope = self._scope = WatchScope.of(self.config_path, self.include, self.referenced)
            problem = _unwatchable(scope.roots)
            if problem is not None:
                self._failed(problem)
                await self._retry()
                continue
            stop = asyncio.Event()
            relay = asyncio.ensure_future(self._rewatch.wait())
            relay.add_done_callback(functools.partial(_set, stop))
            if self.error is not None:
                log.info("file watch restored")
            self.error = None
            log.info(
                "watching %s for changes%s%s",
                ", ".join(scope.roots),
                " (polling)" if poll else "",
                " (with subdirectories)" if scope.recursive else "",
            )
            started = False
            identity = _identities(scope.roots)
            try:
                async with contextlib.aclosing(
                    awatch(
                        *scope.roots,
                        watch_filter=functools.partial(_matters, scope),
                        debounce=WATCH_DEBOUNCE_MS,
                        step=WATCH_STEP_MS,
                        stop_event=stop,
                        rust_timeout=WATCH_TIMEOUT_MS,
                        yield_on_timeout=True,
                        force_polling=poll,
                        poll_delay_ms=300,
                        recursive=scope.recursive,
                        ignore_permission_denied=False,
                    )
                ) as watch:
                    async for changes in watch:
                        if not started:
                            # The watch is in place: a change made while it was starting (since
                            # the configuration was loaded) would be missed; look once (cheap:
                            # unchanged files come from the cache; quiet when nothing changed).
                            started = True
                            self._request(CATCH_UP, None)
                        if _identities(scope.roots) != identity:
                            # A watched directory was removed (and maybe made again), replaced or
                            # renamed: the kernel's watch is on what is gone. Watch anew; the new
                            # watch's catch-up look applies what changed meanwhile.
                            log.info("a watched directory was removed or replaced: watching anew")
                            break
                        if not changes:
                            continue
                        paths = {path for _, path in changes}
                        await settled(paths)
                        names = sorted({os.path.basename(path) for path in paths})
                        more = " ..." if len(names) > 3 else ""
                        self._request("file change: " + ", ".join(names[:3]) + more, paths)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(f"{type(exc).__name__}: {exc}")
                await self._retry()
            finally:
                relay.cancel()
            if not (self._stop.is_set() or self._rewatch.is_set() or started):
                # The watch ended before it was ever in place (a directory that vanished or
                # turned unreadable as it started): try again, not in a busy loop.
                await self._retry()

    def _failed(self, why: str) -> None:
        """Say once why the watch is down (again only when the reason changes); it is
        retried every WATCH_RETRY_S and at each reload, and its return is said too."""
        if why != self.error:
            log.warning(
                "cannot watch the configuration files: %s; file changes will not reload Veylor until "
                "this is fixed (SIGHUP, systemctl reload, still reloads; the watch is retried every "
                "%.0f s and at each reload)",
                why,
                WATCH_RETRY_S,
            )
        self.error = why

    async def _retry(self) -> None:
        """Wait for the next try at watching: a reload's request, or WATCH_RETRY_S."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WATCH_RETRY_S):  # (not wait_for: see nats.outbox.StreamOutbox)
                await self._rewatch.wait()


async def settled(paths: set[str], settle: float | None = None, give_up: float = 10.0) -> None:
    """Return once none of ``paths`` was modified in the last ``settle`` seconds (or after
    ``give_up`` seconds): a file still being written is not loaded half-way. Usually at
    once: the watcher itself waits for a quiet spell first."""
    settle = WATCH_STEP_MS / 1000 if settle is None else settle
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up
    while loop.time() < deadline:
        now = time.time()
        newest = 0.0
        for path in paths:
            try:
                newest = max(newest, os.stat(path).st_mtime)
            except OSError:
                pass  # removed: nothing to wait for
        wait = newest + settle - now
        if wait <= 0:
            return
        await asyncio.sleep(min(wait, settle))
    log.warning(
        "file change: %s still being written after %.0fs; loading it anyway",
        ", ".join(sorted(paths)),
        give_up,
    )


def _identities(roots: tuple[str, ...]) -> tuple[tuple[int, int] | None, ...]:
    """Which directories ``roots`` are now (device and inode; None: gone)."""
    out: list[tuple[int, int] | None] = []
    for root in roots:
        try:
            st = os.stat(root)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_dev, st.st_ino))
    return tuple(out)


def _unwatchable(roots: tuple[str, ...]) -> str | None:
    """Why one of ``roots`` cannot be watched (an unreadable directory), or None."""
    for root in roots:
        try:
            with os.scandir(root):
                pass
        except PermissionError:
            return f"permission denied on {root} (uid {os.geteuid()})"
        except OSError as exc:
            return f"{root}: {exc.strerror or exc}"
    return None


def _set(event: asyncio.Event, _done: object) -> None:
    """A done callback that sets ``event``."""
    event.set()


def _matters(scope: WatchScope, _change: object, path: str) -> bool:
    """watchfiles' filter: whether a change at ``path`` matters to ``scope``."""
    return scope.matters(path)
