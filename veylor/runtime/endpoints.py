"""Endpoints: where Veylor delivers what its routes select. The part every endpoint kind
shares.

The fan-out hands an endpoint each message's frame for its
:class:`~veylor.runtime.wire.Wire` (:meth:`Endpoint.enqueue`) and calls
:meth:`Endpoint.flush` once per event-loop pass. Messages from the endpoint's clients
go to the sources whose routes allow it (:meth:`Endpoint.from_client`: the route's
``allow`` filters and rate). What it did is counted in its
:class:`~veylor.runtime.stats.EndpointStats`.

Kinds whose clients connect to Veylor (:mod:`veylor.runtime.websocket`,
:mod:`veylor.runtime.unix`) build on :class:`~veylor.runtime.clients.ClientEndpoint`:
the client set, one write per client per pass, the slow-client policy. A kind without
clients of its own (the NATS endpoint publishes to a subject) builds on
:class:`Endpoint` alone. :mod:`veylor.runtime.kinds` finds them.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from ..config.access import UpstreamPolicy
from ..config.model import EndpointSpec
from ..message import ClientMessage
from .stats import EndpointStats
from .util import Throttled
from .wire import Wire

if TYPE_CHECKING:
    from .budget import Budget
    from .interfaces import SourceKind

log = logging.getLogger("veylor.endpoint")
BACKLOG = 1024  # pending connections per listener (asyncio's default, 100, refuses bursts)
NOTICE_INTERVAL = 60.0  # seconds between two lines of one kind about one client


class StartupError(Exception):
    """A listener could not be bound; the message names the endpoint and the address."""


class ClientState:
    """What an endpoint keeps on each client beside the kind's own (class defaults: a
    client costs nothing for what it never uses)."""

    dropped = 0  # messages dropped for it while it was slow (slow_client: drop)
    dropped_logged_at = -NOTICE_INTERVAL
    shed = False  # the process-wide limit is reached: no data for it until it drains
    buckets: dict[str, list[float]] | None = None  # upstream rate: source -> [tokens, last, over since]
    denied_logged_at = -NOTICE_INTERVAL  # last "matches no allow filter" line about it
    limited_logged_at = -NOTICE_INTERVAL  # last "over its upstream rate" line about it
    token: bytes | None = None  # the digest of the token it presented (auth), for revocation
    unwritten = 0  # bytes of its endpoint's writes it was not given (dropped for it; compressed)
    sndbuf = 0  # its kernel send buffer (SO_SNDBUF, as Linux doubled it); 0: the kernel's own
    paused = False  # its transport holds more than its high-water mark (pause_writing)
    backlog: list[bytes] | None = None  # what Veylor holds for it while paused (see ClientEndpoint.hold)
    held = 0  # ... its bytes
    since = 0.0  # wall clock when it joined (set by ClientEndpoint.add)
    base = 0  # the endpoint's ``messages`` when it joined
    # the endpoint's message it is behind from (slow_client: conflate; runtime/catchup.py)
    lag: int | None = None
    superseded = 0  # messages replaced for it by a later one of their key while it was behind


class Endpoint:
    """What every kind of endpoint has: its settings, counters, the fan-out's contract
    (:meth:`enqueue`, :meth:`flush`), client messages to the upstream
    (:meth:`from_client`) and the log lines of what it refuses.

    A kind sets ``wire`` and implements :meth:`enqueue` and :meth:`flush`; it may
    override :meth:`start` and :meth:`stop` (timers of its own), :meth:`update`
    (settings it applies at once) and :meth:`status`. ``clients`` is empty here: a kind
    with clients of its own builds on :class:`~veylor.runtime.clients.ClientEndpoint`.
    """

    wire: Wire
    clients: Collection[Any] = ()  # who is connected to it (for the state view)

    def __init__(
        self, spec: EndpointSpec, stats: EndpointStats | None = None, budget: Budget | None = None
    ) -> None:
        """``budget``: the process's buffer budget; every kind is made with it
        (:func:`~veylor.runtime.kinds.make_endpoint`), for the clients of those that have
        some."""
        self.spec = spec
        self.name = spec.name
        self.stats = stats if stats is not None else EndpointStats()
        self.scheduled = False  # the fan-out flushes it at the end of this pass
        # The sources its clients may send to, each with the route's policy (None: all).
        self.upstream: tuple[tuple[SourceKind, UpstreamPolicy | None], ...] = ()
        self._discard_log = Throttled(log)
        self._bad_log = Throttled(log)
        self._refused_log = Throttled(log)  # clients refused by the access rules

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """The endpoint serves from now on (its listener is bound and attached)."""

    def stop(self) -> None:
        """The endpoint is retired or Veylor stops: its own timers end."""

    def update(self, spec: EndpointSpec) -> None:
        """Settings that may change on reload without rebinding (limits, policies)."""
        self.spec = spec

    def status(self) -> dict[str, Any]:
        """What the kind knows beside the counters, for the state view (none here)."""
        return {}

    # ------------------------------------------------------------------ fan-out

    def enqueue(self, frame: bytes | None, data: bytes, is_text: bool) -> bool:
        """Take one message for this pass: ``frame`` is it in this endpoint's wire
        (``None``: the wire cannot carry it). True when the endpoint must be flushed at
        the end of the pass and was not yet scheduled for it."""
        raise NotImplementedError

    def flush(self) -> None:
        """Deliver what this pass enqueued (once per pass, and within it for a large one)."""
        raise NotImplementedError

    def drop_pending(self) -> None:
        """A flush raised (a bug): what it had of this pass is dropped, so that the next
        pass starts clean."""

    # ------------------------------------------------------------------ clients -> upstream

    def from_client(self, client: Any, data: bytes, is_text: bool) -> None:
        """A message from one of this endpoint's clients: to every source that allows it
        (a route's ``upstream`` policy: its ``allow`` filters, then the client's rate)."""
        self.stats.received += 1
        targets = self.upstream
        if not targets:
            self.stats.discarded += 1
            self._discard_log(
                "endpoint %s: discarded a message from %s: no route to this endpoint has upstream: true",
                self.name,
                client.label,
            )
            return
        message = None
        sent = False
        for source, policy in targets:
            if policy is not None:
                # The rate first: what is over it is dropped without being decoded.
                if policy.rate is not None and not self._take(client, source, policy):
                    continue
                if policy.compiled is not None:
                    if message is None:
                        message = ClientMessage(data, is_text)
                    if not policy.compiled(message):
                        self._not_allowed(client, source)
                        continue
            source.send(data, is_text)
            sent = True
        if not sent:
            self.stats.upstream_blocked += 1

    def _not_allowed(self, client: Any, source: Any) -> None:
        """A client message no ``allow`` filter of its route passes: discarded, counted,
        logged at most once a minute per client."""
        self.stats.upstream_denied += 1
        if log_due(client, "denied_logged_at", time.monotonic(), NOTICE_INTERVAL):
            log.warning(
                "endpoint %s: a message from client %s to source %s matches no allow filter: "
                "discarded (logged at most once a minute per client)",
                self.name,
                client.label,
                source.name,
            )

    def _take(self, client: Any, source: Any, policy: UpstreamPolicy) -> bool:
        """The client's token bucket for ``source``: True if the message may go. Over the
        rate it is dropped and counted; with ``over_rate: close``, a client that stays
        over it for ``CLOSE_AFTER`` seconds (messages dropped in every second of them,
        whatever passed between) is closed (1008)."""
        buckets = client.buckets
        if buckets is None:
            buckets = client.buckets = {}
        now = time.monotonic()
        bucket = buckets.get(source.name)
        rate, burst = policy.rate, policy.burst
        if rate is None:
            raise RuntimeError("invariant broken: rate is not None")
        if bucket is None:
            # tokens, when last refilled, since when it is over the rate, its last drop
            bucket = buckets[source.name] = [float(burst), now, 0.0, -1e9]
        tokens = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        self.stats.upstream_limited += 1
        if now - bucket[3] > 1.0:  # no drop for a second: a new streak
            bucket[2] = now
        bucket[3] = now
        if log_due(client, "limited_logged_at", now, NOTICE_INTERVAL):
            log.warning(
                "endpoint %s: client %s sends to source %s faster than its route allows (%g/s, burst %d): "
                "dropping what is over (over_rate: %s; logged at most once a minute per client)",
                self.name,
                client.label,
                source.name,
                rate,
                burst,
                policy.over_rate,
            )
        if policy.over_rate == "close" and now - bucket[2] >= policy.CLOSE_AFTER:
            self.rate_exceeded(client, policy)
        return False

    def rate_exceeded(self, client: Any, policy: UpstreamPolicy) -> None:
        """``client`` stayed over its upstream rate for ``CLOSE_AFTER`` seconds with
        ``over_rate: close``: a kind with clients of its own closes it
        (:class:`~veylor.runtime.clients.ClientEndpoint`); here there is no client to
        close (its messages over the rate are dropped all the same)."""

    def refused(self, counter: str, label: str, why: str) -> None:
        """A client refused by the access rules: counted by reason, logged (rate limited)."""
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self._refused_log("endpoint %s: refused client %s: %s", self.name, label, why)

    def malformed(self, who: str, why: Exception) -> None:
        """A client broke its framing: it is closed; counted and logged (rate limited)."""
        self.stats.bad_frames += 1
        self._bad_log("endpoint %s: closing client %s: malformed input: %s", self.name, who, why)

    def invalid_text(self, who: str) -> None:
        """A client sent text that is not UTF-8: it is closed (WebSocket: 1007) and the
        message never goes upstream."""
        self.stats.invalid_utf8 += 1
        self._bad_log(
            "endpoint %s: closing client %s: it sent text that is not valid UTF-8 (not forwarded)",
            self.name,
            who,
        )


def log_due(client: Any, attr: str, now: float, interval: float) -> bool:
    """Whether a line of one kind about ``client`` may be logged now: at most one per
    ``interval`` seconds (``attr`` holds when the last was); if so, it is noted."""
    if now - getattr(client, attr) < interval:
        return False
    setattr(client, attr, now)
    return True


def set_send_buffer(transport: Any, size: int | None) -> int:
    """Fix the kernel's send buffer of a client's socket; the size the kernel took (Linux
    doubles it), 0 if left to the kernel (``None``) or refused. Left to itself, Linux
    grows it to several MiB per TCP connection: copying that much into the buffers of
    clients that never read stalled the event loop for 100 ms and more (300 such
    clients). And the kernel holds it for each: a client that reads nothing makes the
    host's TCP memory hold its whole send buffer (doubled ``SO_SNDBUF``, measured: that
    plus 1%), which :mod:`~veylor.runtime.budget` counts in ``limits.buffered``."""
    if size is None:
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    except OSError:  # pragma: no cover - refused by the system: its default stays
        return 0


def os_reason(exc: OSError) -> str:
    """Why a bind failed, for people."""
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (another process listens there)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    return exc.strerror or str(exc)
