"""Small runtime helpers."""

from __future__ import annotations

import logging
import time


class Throttled:
    """Log a recurring condition at most once per ``interval`` seconds, with a count of
    the occurrences in between, so that a flood of bad input cannot flood the log."""

    __slots__ = ("interval", "last", "level", "logger", "suppressed")

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, interval: float = 10.0) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.last = -interval
        self.suppressed = 0

    def __call__(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        if self.suppressed:
            msg += f" ({self.suppressed} more since the last report)"
            self.suppressed = 0
        self.last = now
        self.logger.log(self.level, msg, *args)


class CountedLog:
    """Log a recurring loss at most once per ``interval`` seconds with the total so far:
    the first occurrence at once, then one line per interval while it goes on."""

    __slots__ = ("interval", "last", "level", "logger", "total")

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING, interval: float = 60.0) -> None:
        self.logger = logger
        self.level = level
        self.interval = interval
        self.last = -interval
        self.total = 0

    def add(self, n: int, msg: str, *args: object) -> None:
        self.total += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.logger.log(
                self.level, msg + " (%d so far; logged at most every %.0fs)", *args, self.total, self.interval
            )
