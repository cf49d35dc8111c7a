"""The process-wide bound on bytes queued for clients (``limits: {buffered: ...}``).

Each client's own bound is its endpoint's ``client_buffer`` (4 MiB by default); two
thousand stalled clients within theirs still held 0.5 GiB. The budget keeps the sum
bounded without a cost per message: only clients holding more than ``NOTABLE`` bytes
(laggards, few in a healthy relay) are tracked, found where the fan-out already looks at
each client's buffer. When the laggards together hold more than the limit, the ones
holding the most get their endpoint's ``slow_client`` policy first: ``disconnect``, or
``drop`` (no more data for them until their buffer drains). When the laggards have
drained after holding a lot, the C allocator is asked to return the freed memory to
the system (``malloc_trim``): otherwise the process keeps its peak size.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from typing import TYPE_CHECKING, Any

from ..config.model import Limits, human_size
from .util import Throttled

if TYPE_CHECKING:
    from .endpoints import Endpoint

log = logging.getLogger("veylor.memory")

NOTABLE = 64 * 1024  # a client holding more than this is tracked
SWEEP = 0.25  # seconds between two looks at the laggards while there are any
RELIEF = 0.8  # enforcing brings the total down to this fraction of the limit
TRIM_AFTER = 32 * 2**20  # give memory back after laggards held at least this much ...
TRIM_EVERY = 10.0  # ... at most this often (seconds)


def _malloc_trim() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None


class Budget:
    """The bytes queued for laggard clients, against ``limit``."""

    def __init__(self, limit: int = Limits().buffered) -> None:
        self.limit = limit
        self.total = 0  # bytes queued for the tracked clients, as last seen
        self.peak = 0  # the largest total since memory was last given back
        self.sizes: dict[Any, int] = {}  # laggard client -> its queued bytes
        self.owners: dict[Any, Endpoint] = {}
        self.enforced = 0  # clients given their policy for the process-wide limit
        self.trims = 0
        self._timer: asyncio.TimerHandle | None = None
        self._enforcing = False
        self._trimmed_at = -TRIM_EVERY
        self._log = Throttled(log)
        self._trim = _malloc_trim()

    def note(self, ep: Endpoint, client: Any, size: int) -> None:
        """``client`` of ``ep`` holds ``size`` (> NOTABLE) unsent bytes."""
        self.total += size - self.sizes.get(client, 0)
        self.sizes[client] = size
        self.owners[client] = ep
        if self.total > self.peak:
            self.peak = self.total
        if self.total > 2 * self.limit:
            self.enforce()  # a burst: at once, before more is written
        elif self.total > self.limit and not self._enforcing:
            self._enforcing = True  # once, after this pass: not once per client
            asyncio.get_running_loop().call_soon(self.enforce)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(SWEEP, self.sweep)

    def sweep(self) -> None:
        """Refresh the laggards' sizes; forget those that drained or left."""
        self._timer = None
        total = 0
        for client in list(self.sizes):
            ep = self.owners[client]
            size = client.transport.get_write_buffer_size() + client.held if ep.is_open(client) else 0
            if size <= NOTABLE or client not in ep.clients:
                del self.sizes[client], self.owners[client]
                client.shed = False
                continue
            self.sizes[client] = size
            total += size
        self.total = total
        if total > self.limit and not self._enforcing:
            self.enforce()
        if self.sizes:
            self._timer = asyncio.get_running_loop().call_later(SWEEP, self.sweep)
        elif self.peak >= TRIM_AFTER:
            self.give_back()

    def enforce(self) -> None:
        """Apply their endpoints' policies to the clients holding the most until the
        total is down to ``RELIEF`` of the limit. A disconnected client's bytes go at once
        (it is aborted: it does not read); a client that is dropped for keeps its bytes
        until it drains, so while those alone exceed the limit every other laggard is
        dropped for too (each then holds at most ``NOTABLE``)."""
        self._enforcing = False
        excess = self.total - self.limit * RELIEF
        if excess <= 0:
            return
        acted = []
        for client, size in sorted(self.sizes.items(), key=lambda item: item[1], reverse=True):
            if excess <= 0:
                break
            ep = self.owners[client]
            if client.shed or not ep.is_open(client):
                continue
            if ep.over_budget(client):
                excess -= size
                self.total -= size
                del self.sizes[client], self.owners[client]
            acted.append((client, ep, size))
        self.enforced += len(acted)
        if acted:
            client, ep, size = acted[0]
            self._log(
                "clients hold %s of unsent data, more than limits.buffered (%s): applied their "
                "endpoint's slow_client policy to the %d holding the most (the largest: %s, client %s "
                "of endpoint %s)",
                human_size(self.total + sum(size for _, _, size in acted)),
                human_size(self.limit),
                len(acted),
                human_size(size),
                client.label,
                ep.name,
            )

    def give_back(self) -> None:
        """The laggards drained: return the freed memory to the system (rate limited)."""
        now = time.monotonic()
        if self._trim is None or now - self._trimmed_at < TRIM_EVERY:
            return
        self._trimmed_at = now
        peak, self.peak = self.peak, 0
        self._trim(0)
        self.trims += 1
        log.info("clients drained after holding up to %s: memory returned to the system", human_size(peak))

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._log.cancel()
