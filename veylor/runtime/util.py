"""Small runtime helpers: logging of recurring conditions, rate limited, nothing left unsaid."""

from __future__ import annotations

import asyncio
import logging
import time


class _Deferred:
    """Base of the rate-limited loggers: at most one line per ``interval``; what happened
    since the last line is reported at the end of the interval even if nothing happens
    after it (a burst that stops must not end in silence)."""

    __slots__ = ("args", "interval", "last", "level", "logger", "msg", "timer")

    def __init__(self, logger: logging.Logger, level: int, interval: float) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.last = -interval
        self.msg = ""
        self.args: tuple[object, ...] = ()
        self.timer: asyncio.TimerHandle | None = None

    def _defer(self, msg: str, args: tuple[object, ...]) -> None:
        self.msg, self.args = msg, args
        if self.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a unit test): reported at the next occurrence
                return
            self.timer = loop.call_later(max(0.0, self.interval - (time.monotonic() - self.last)), self._due)

    def _due(self) -> None:
        self.timer = None
        self.flush()

    def flush(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Throttled(_Deferred):
    """Log a recurring condition at most once per ``interval`` seconds, with a count of
    the occurrences in between, so that a flood of bad input cannot flood the log."""

    __slots__ = ("suppressed",)

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, interval: float = 10.0) -> None:
        super().__init__(logger, level, interval)
        self.suppressed = 0

    def __call__(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            self._defer(msg, args)
            return
        self.cancel()
        if self.suppressed:
            msg += f" ({self.suppressed} more since the last report)"
            self.suppressed = 0
        self.last = now
        self.logger.log(self.level, msg, *args)

    def flush(self) -> None:
        """Report the occurrences held back since the last line (the latest one's text)."""
        if self.suppressed:
            n, self.suppressed = self.suppressed, 0
            self.last = time.monotonic()
            self.logger.log(self.level, self.msg + f" ({n} times since the last report)", *self.args)


class CountedLog(_Deferred):
    """Log a recurring loss at most once per ``interval`` seconds with the total so far:
    the first occurrence at once, then one line per interval while it goes on, and a
    last one with the final count when it stops."""

    __slots__ = ("logged", "total")

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, interval: float = 60.0) -> None:
        super().__init__(logger, level, interval)
        self.total = 0
        self.logged = 0  # the total at the last line

    def add(self, n: int, msg: str, *args: object) -> None:
        self.total += n
        if time.monotonic() - self.last >= self.interval:
            self.cancel()
            self.msg, self.args = msg, args
            self.flush()
        else:
            self._defer(msg, args)

    def flush(self) -> None:
        if self.total != self.logged:
            self.logged = self.total
            self.last = time.monotonic()
            self.logger.log(
                self.level,
                self.msg + " (%d so far; logged at most every %.0fs)",
                *self.args,
                self.total,
                self.interval,
            )
