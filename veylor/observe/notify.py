"""systemd's notify protocol (``Type=notify``), without a dependency: one datagram per
message to the socket named by ``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace).

- ``READY=1`` once every listener is bound (and again after each reload);
- ``RELOADING=1`` with ``MONOTONIC_USEC=`` when a reload starts, however triggered;
- ``STOPPING=1`` when shutdown begins;
- ``STATUS=`` one line (sources up, clients, generation), sent when it changes;
- ``WATCHDOG=1`` every half of ``WATCHDOG_USEC``, from the event loop: a loop stuck for
  longer gets the service restarted by systemd.

Without ``NOTIFY_SOCKET`` every call is a no-op. A send never blocks (a full socket
drops the message; systemd is not worth stalling the relay for).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("veylor.notify")


class Notifier:
    """Sends notify messages to systemd (or whoever set ``NOTIFY_SOCKET``)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock: socket.socket | None = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.sock.setblocking(False)
        self.watchdog_interval = _watchdog_interval(env)
        self._status = ""
        self._timer: asyncio.TimerHandle | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *fields: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto("\n".join(fields).encode(), self.address)
            self._failed = False
        except OSError as exc:
            if not self._failed:  # said once per streak of failures
                log.warning("systemd notify: cannot send to %s: %s", self.address.replace("\0", "@"), exc)
            self._failed = True

    def ready(self, status: str) -> None:
        self._status = status
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, status: str) -> None:
        """Send ``STATUS=`` if it changed."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def start(self, loop: asyncio.AbstractEventLoop, status: Callable[[], str]) -> None:
        """Keep the watchdog fed and the status current, from ``loop``."""
        if self.sock is None:
            return
        every = min(1.0, self.watchdog_interval / 2) if self.watchdog_interval else 1.0
        feed_every = self.watchdog_interval / 2 if self.watchdog_interval else None
        last_fed = [0.0]

        def tick() -> None:
            now = loop.time()
            if feed_every is not None and now - last_fed[0] >= feed_every - every / 2:
                last_fed[0] = now
                self.send("WATCHDOG=1")
            self.status(status())
            self._timer = loop.call_later(every, tick)

        tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds within which systemd wants ``WATCHDOG=1``, if it wants it from us."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None
