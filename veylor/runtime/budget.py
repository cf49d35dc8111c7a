"""What clients that fall behind may make Veylor and the kernel hold (``limits: {buffered:
...}``), and how long a client may read nothing (an endpoint's ``stall_timeout``).

Each client's own bound is its endpoint's ``client_buffer`` (4 MiB by default) in Veylor,
plus its kernel send buffer (``socket_buffer``, which Linux doubles). Two thousand stalled
clients within theirs held 0.5 GiB in Veylor and, with 512 KiB socket buffers, 1.7 GiB of
the host's TCP memory, past the kernel's pressure threshold, where every TCP user of the
host suffers.

The budget keeps the sum bounded without a cost per message. It watches the clients
for which Veylor holds bytes (found where the fan-out already looks at each client's
buffer; few in a healthy relay): Veylor holds bytes for a client only once the kernel
refused part of a write, so from then on the client's kernel send buffer is full, and
both count: what Veylor holds for it, and its kernel send buffer (read once, at connect:
no system call per look). When the watched clients together hold more than the limit,
their endpoint's ``slow_client`` policy applies first to those that took nothing since
the previous look, then to those holding the most: ``disconnect`` (aborted: the kernel
frees its buffer at once), or ``drop`` (no more data until it drains); one dropped for
that still takes nothing at the next look is closed, since it would keep its buffers
until its stall timeout.

Every ``SWEEP`` seconds the budget looks at the clients it watches: what each took since
the previous look is what was written to it (the endpoint's ``written``, less what it was
not given: its ``unwritten``) less what Veylor's buffer for it grew by. One that took
nothing for its endpoint's ``stall_timeout`` while bytes waited for it is closed (aborted:
it would never read a close frame), whatever its policy.

When the laggards have drained after holding a lot, the C allocator is asked to return
the freed memory to the system (``malloc_trim``): otherwise the process keeps its peak
size.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..config.common import human_size
from ..config.model import Limits
from .util import Throttled

if TYPE_CHECKING:
    from .interfaces import BudgetedEndpoint as Endpoint

log = logging.getLogger("veylor.memory")

NOTABLE = 64 * 1024  # a client holding more than this is looked at on every write (note)
SWEEP = 0.25  # seconds between two looks at the watched clients while there are any
RELIEF = 0.8  # enforcing brings the total down to this fraction of the limit
TRIM_AFTER = 32 * 2**20  # give memory back after laggards held at least this much ...
TRIM_EVERY = 10.0  # ... at most this often (seconds)


def _malloc_trim() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None


def send_buffer(transport: Any) -> int:
    """The kernel's send buffer of a client's socket (what Linux allows it to hold, doubled
    from ``SO_SNDBUF``); 0 if it cannot be read."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    except OSError:  # pragma: no cover - closed meanwhile
        return 0


class Watch:
    """What the budget knows of one client for which Veylor holds bytes."""

    __slots__ = (
        "ep",
        "kernel",
        "looked_at",
        "progress_at",
        "seen",
        "shed_at",
        "size",
        "unwritten",
        "written",
    )

    def __init__(self, ep: Endpoint, client: Any, size: int, now: float) -> None:
        self.ep = ep
        self.size = size  # Veylor's bytes for it, as last seen
        # Its kernel send buffer: full while Veylor holds bytes for it. Read at connect
        # when socket_buffer fixes it; else (the kernel's own, which grows) now.
        self.kernel = client.sndbuf or send_buffer(client.transport)
        # At the last look: the endpoint's bytes written, those it was not given, its size.
        self.written = ep.written
        self.unwritten = client.unwritten
        self.seen = size
        self.progress_at = now  # when it last took anything (or was first watched)
        self.looked_at = now
        self.shed_at = -1.0  # when the limit stopped its data (slow_client: drop)


class Cancellable(Protocol):
    """A timer's handle (``asyncio.TimerHandle``)."""

    def cancel(self) -> None: ...


class Budget:
    """The bytes held for lagging clients, in Veylor and in the kernel, against ``limit``.

    A pure object but for its clock and timers, which are given (``clock``: seconds,
    monotonic; ``later(delay, callback)``: a handle with ``cancel()``; ``soon(callback)``:
    after this pass); by default the running event loop's. Its unit tests
    (``tests/unit/test_budget.py``) drive them by hand."""

    def __init__(
        self,
        limit: int = Limits().buffered,
        clock: Callable[[], float] | None = None,
        later: Callable[[float, Callable[[], None]], Cancellable] | None = None,
        soon: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self._clock = clock if clock is not None else lambda: asyncio.get_running_loop().time()
        self._later = later if later is not None else lambda d, f: asyncio.get_running_loop().call_later(d, f)
        self._soon = soon if soon is not None else lambda f: asyncio.get_running_loop().call_soon(f)
        self.limit = limit
        self.total = 0  # bytes held for the watched clients, Veylor's and the kernel's, as last seen
        self.peak = 0  # the largest total since memory was last given back
        self.watched: dict[Any, Watch] = {}  # clients for which Veylor holds bytes
        self.enforced = 0  # clients given their policy for the process-wide limit
        self.stalled = 0  # clients closed for taking nothing (stall_timeout; dropped for, over the limit)
        self.trims = 0
        self._timer: Cancellable | None = None
        self._enforcing = False
        # What the last enforcement left (clients dropped for keep their bytes until they
        # drain or a look closes them): no use enforcing again until the total grows past it.
        self._settled = 0
        self._trimmed_at = -TRIM_EVERY
        self._log = Throttled(log)
        self._trim = _malloc_trim()

    def watch(self, ep: Endpoint, client: Any, size: int) -> Watch:
        """Veylor holds ``size`` bytes for ``client`` of ``ep``, which it did not watch: its
        kernel send buffer is full. Both count from now."""
        w = self.watched[client] = Watch(ep, client, size, self._clock())
        self.total += size + w.kernel
        self._check()
        if self._timer is None:
            self._timer = self._later(SWEEP, self.sweep)
        return w

    def note(self, ep: Endpoint, client: Any, size: int) -> None:
        """``client`` of ``ep`` holds ``size`` (> NOTABLE) unsent bytes in Veylor."""
        w = self.watched.get(client)
        if w is None:
            self.watch(ep, client, size)
            return
        self.total += size - w.size
        w.size = size
        self._check()

    def _check(self) -> None:
        total = self.total
        if total > self.peak:
            self.peak = total
        if total <= self.limit or total <= self._settled:
            return
        if total > 2 * self.limit and total > self._settled + self.limit:
            self.enforce()  # a burst: at once, before more is written
        elif not self._enforcing:
            self._enforcing = True  # once, after this pass: not once per client
            self._soon(self.enforce)

    def _forget(self, client: Any) -> None:
        del self.watched[client]
        client.shed = False

    def sweep(self) -> None:
        """Look at each watched client: what it took since the last look; forget those that
        drained or left; close those that took nothing for their endpoint's
        ``stall_timeout``."""
        self._timer = None
        now = self._clock()
        total = 0
        for client, w in list(self.watched.items()):
            ep = w.ep
            if client not in ep.clients or not ep.is_open(client):
                self._forget(client)
                continue
            size = client.transport.get_write_buffer_size() + client.held
            written, unwritten = ep.written, client.unwritten
            if (written - w.written) - (unwritten - w.unwritten) > size - w.seen:
                w.progress_at = now  # the kernel took some of what waited: the client reads
            w.written, w.unwritten, w.seen, w.looked_at = written, unwritten, size, now
            if not size:  # nothing waits in Veylor: the kernel has room for it again
                self._forget(client)
                continue
            stall = ep.spec.stall_timeout
            if stall is not None and now - w.progress_at >= stall:
                self.close_stalled(client, w, now, "stall_timeout")
                continue
            if client.shed and size <= NOTABLE and w.progress_at > w.shed_at:
                client.shed = False  # it reads again and drained (enough): its data resumes
            w.size = size
            total += size + w.kernel
        self.total = total
        self._settled = min(self._settled, total)
        if total > self.limit and not self._enforcing:
            self.enforce()
        if self.watched:
            self._timer = self._later(SWEEP, self.sweep)
        elif self.peak >= TRIM_AFTER:
            self.give_back()

    def close_stalled(self, client: Any, w: Watch, now: float, why: str) -> None:
        """Close a client that took nothing for a while (``why``: ``stall_timeout``, or
        ``buffered``: dropped for and over the limit)."""
        del self.watched[client]
        self.stalled += 1
        w.ep.stalled(client, now - w.progress_at, w.size + w.kernel, why)

    def enforce(self) -> None:
        """Apply their endpoints' policies until the total is down to ``RELIEF`` of the
        limit: first to the clients that took nothing since the previous look, then to
        those holding the most. A disconnected client's bytes go at once (it is aborted:
        the kernel frees its buffer too); a client that is dropped for keeps its bytes
        until it drains, so while those alone exceed the limit every other laggard is
        dropped for too, and one dropped for that took nothing since is closed."""
        self._enforcing = False
        excess = self.total - self.limit * RELIEF
        if excess > 0:
            self._apply(excess, self._clock())
        self._settled = self.total

    def _apply(self, excess: float, now: float) -> None:
        def order(item: tuple[Any, Watch]) -> tuple[bool, int]:
            w = item[1]
            return (w.progress_at < w.looked_at, w.size + w.kernel)  # (it took nothing at the last look)

        acted = []
        for client, w in sorted(self.watched.items(), key=order, reverse=True):
            if excess <= 0:
                break
            ep = w.ep
            if not ep.is_open(client):
                continue
            held = w.size + w.kernel
            if client.shed:
                if w.progress_at <= w.shed_at < w.looked_at:  # looked at since, and it took nothing
                    self.close_stalled(client, w, now, "buffered")
                    excess -= held
                    self.total -= held
                continue
            if ep.over_budget(client):
                excess -= held
                self.total -= held
                del self.watched[client]
            else:
                w.shed_at = now
            acted.append((client, ep, held))
        self.enforced += len(acted)
        if acted:
            client, ep, held = acted[0]
            self._log(
                "clients hold %s of unsent data (Veylor's and the kernel's), more than limits.buffered "
                "(%s): applied their endpoint's slow_client policy to %d of them, those that read "
                "nothing first, then those holding the most (the first: %s, client %s of endpoint %s)",
                human_size(self.total + sum(held for _, _, held in acted)),
                human_size(self.limit),
                len(acted),
                human_size(held),
                client.label,
                ep.name,
            )

    def give_back(self) -> None:
        """The laggards drained: return the freed memory to the system (rate limited)."""
        now = self._clock()
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
