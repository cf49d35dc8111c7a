"""Endpoints: where local clients connect. The part every endpoint kind shares.

An endpoint owns its set of clients. The fan-out hands it each message's frame for
its :class:`~veylor.runtime.wire.Wire` (:meth:`Endpoint.enqueue`) and calls
:meth:`Endpoint.flush` once per event-loop pass; the endpoint writes the joined
frames to each client with one ``transport.write``, applying the slow-client policy
from the transport's write-buffer size, and counts what it did in its
:class:`~veylor.runtime.stats.EndpointStats`.

Each kind (:mod:`veylor.runtime.websocket`, :mod:`veylor.runtime.unix`) subclasses
:class:`Endpoint` and brings its listener; :mod:`veylor.runtime.kinds` finds them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..config.access import UpstreamPolicy
from ..config.common import format_size, human_size
from ..config.model import EndpointSpec
from ..message import ClientMessage
from ..report import plural
from .budget import NOTABLE, Budget
from .stats import EndpointStats
from .util import CountedLog, Throttled
from .wire import Wire

if TYPE_CHECKING:
    from .interfaces import SourceKind

log = logging.getLogger("veylor.endpoint")
CLOSE_GRACE = 2.0  # seconds a closing client has to answer before its connection is aborted
BACKLOG = 1024  # pending connections per listener (asyncio's default, 100, refuses bursts)
LOSS_LOG_INTERVAL = 60.0  # seconds between two reports of messages dropped for one client
FLUSH_AT = 64 * 1024  # bytes pending for one endpoint that make it write within the pass
UNFRAMEABLE = {"binary": "binary messages", "newline": "messages that contain a newline"}


class StartupError(Exception):
    """A listener could not be bound; the message names the endpoint and the address."""


class ClientState:
    """What an endpoint keeps on each client beside the kind's own (class defaults: a
    client costs nothing for what it never uses)."""

    dropped = 0  # messages dropped for it while it was slow (slow_client: drop)
    dropped_logged_at = -LOSS_LOG_INTERVAL
    shed = False  # the process-wide limit is reached: no data for it until it drains
    buckets: dict[str, list[float]] | None = None  # upstream rate: source -> [tokens, last, over since]
    denied_logged_at = -LOSS_LOG_INTERVAL  # last "matches no allow filter" line about it
    limited_logged_at = -LOSS_LOG_INTERVAL  # last "over its upstream rate" line about it
    token: bytes | None = None  # the digest of the token it presented (auth), for revocation
    unwritten = 0  # bytes of its endpoint's writes it was not given (dropped for it; compressed)
    sndbuf = 0  # its kernel send buffer (SO_SNDBUF, as Linux doubled it); 0: the kernel's own
    paused = False  # its transport holds more than its high-water mark (pause_writing)
    backlog: list[bytes] | None = None  # what Veylor holds for it while paused (see Endpoint.hold)
    held = 0  # ... its bytes
    since = 0.0  # wall clock when it joined (set by Endpoint.add)
    base = 0  # the endpoint's ``messages`` when it joined


class Client(Protocol):
    """What an endpoint needs of each of its clients, whatever the kind."""

    transport: Any  # asyncio's or uvloop's transport
    label: str  # for log lines: its address, or its Unix peer
    dropped: int  # messages dropped for it while it was slow (slow_client: drop)
    dropped_logged_at: float
    shed: bool  # the process-wide limit is reached: no data for it until it drains
    unwritten: int  # bytes of its endpoint's writes it was not given
    sndbuf: int  # its kernel send buffer; 0: the kernel's own
    paused: bool  # its transport holds more than its high-water mark
    backlog: list[bytes] | None  # what Veylor holds for it while paused
    held: int  # ... its bytes
    since: float  # wall clock when it joined
    base: int  # the endpoint's ``messages`` when it joined


ClientT = TypeVar("ClientT", bound=Client)


class Endpoint(Generic[ClientT]):
    """State, policy and counters shared by every kind of endpoint.

    A kind sets ``wire`` and implements :meth:`is_open`, :meth:`disconnect_slow` and
    :meth:`close_clients`; it may override :meth:`start` and :meth:`stop` (timers of
    its own) and :meth:`update` (settings it applies at once).
    """

    wire: Wire
    slow_close_code = ""  # for the log line: how a slow client is closed

    def __init__(
        self, spec: EndpointSpec, stats: EndpointStats | None = None, budget: Budget | None = None
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.stats = stats if stats is not None else EndpointStats()
        self.budget = budget if budget is not None else NO_BUDGET
        self.clients: set[ClientT] = set()
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.scheduled = False
        self.written = 0  # bytes written to every client that could take them (each pass once)
        # The sources its clients may send to, each with the route's policy (None: all).
        self.upstream: tuple[tuple[SourceKind, UpstreamPolicy | None], ...] = ()
        self._empty: asyncio.Event | None = None  # set when the last client leaves (wait_empty)
        self._discard_log = Throttled(log)
        self._bad_log = Throttled(log)
        self._refused_log = Throttled(log)  # clients refused by the access rules
        self._stalled_log = Throttled(log)
        self._unframeable_log = {
            reason: CountedLog(log, interval=LOSS_LOG_INTERVAL) for reason in UNFRAMEABLE
        }

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

    def admits(self, label: str, how: str = "") -> bool:
        """Whether one more client fits in ``max_clients``; if not, the refusal is counted
        and logged (``how``: the kind's way of refusing, for the log line)."""
        if len(self.clients) < self.spec.max_clients:
            return True
        self.stats.refused += 1
        self._refused_log(
            "endpoint %s: refused client %s: max_clients (%d) reached%s",
            self.name,
            label,
            self.spec.max_clients,
            how,
        )
        return False

    def add(self, client: ClientT) -> None:
        client.since = time.time()
        client.base = self.stats.messages  # its messages: what the endpoint wrote since, less its drops
        self.clients.add(client)

    def client_status(self, client: ClientT) -> dict[str, Any]:
        """One client, for ``/graph``: who, since when, messages written to it, bytes
        waiting for it."""
        transport = client.transport
        return {
            "client": client.label,
            "connected_since": client.since,
            "messages": max(0, self.stats.messages - client.base - client.dropped),
            "dropped": client.dropped,
            "buffered": transport.get_write_buffer_size() + client.held if not transport.is_closing() else 0,
        }

    def remove(self, client: ClientT) -> None:
        self.clients.discard(client)
        if not self.clients and self._empty is not None:
            self._empty.set()

    async def wait_empty(self) -> None:
        """Return once the endpoint has no client left."""
        if self.clients:
            self._empty = asyncio.Event()
            await self._empty.wait()

    def abort_all(self) -> None:
        """Drop every client's connection at once (a shutdown that ran out of time)."""
        for client in list(self.clients):
            self.abort(client)

    # ------------------------------------------------------------------ fan-out

    def enqueue(self, frame: bytes | None, data: bytes, is_text: bool) -> bool:
        """Take one message for this pass: ``frame`` is it in this endpoint's wire
        (``None``: the wire cannot carry it). True when the endpoint must be flushed at
        the end of the pass and was not yet scheduled for it."""
        if frame is None:
            self.cannot_frame("newline" if is_text else "binary")
            return False
        self.pending.append(frame)
        self.pending_bytes += len(frame)
        if self.pending_bytes >= FLUSH_AT:
            # A big pass (a burst read from upstream): write what we have now rather
            # than one huge buffer per client that the kernel cannot take.
            self.flush()
            return False
        if self.scheduled:
            return False
        self.scheduled = True
        return True

    def flush(self) -> None:
        frames = self.pending
        if frames:
            self.pending = []
            self.pending_bytes = 0
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            self.write_all(data, len(frames))

    def write_all(self, data: bytes, count: int) -> None:
        """Write ``data`` (``count`` whole frames) to every client that can take it."""
        writable = self.writable(count, data)
        for client in writable:
            try:
                client.transport.write(data)
            except Exception as exc:  # (a try costs nothing until something raises)
                self.broken(client, exc)
        self.written += len(data)
        stats = self.stats
        stats.messages += count
        stats.messages_out += len(writable) * count
        stats.bytes_out += len(writable) * len(data)

    def writable(self, count: int, data: bytes) -> list[Any]:
        """The open clients to write ``data`` (``count`` whole messages) to now. A client
        over ``client_buffer`` gets the ``slow_client`` policy for them: skipped and
        counted (``drop``), or disconnected (``disconnect``). A client whose transport is
        paused is not written to: Veylor keeps ``data`` for it (:meth:`hold`). A client
        for which bytes wait is watched by the budget (its kernel send buffer is full)."""
        limit = self.spec.client_buffer
        notable = min(limit, NOTABLE)
        drop = self.spec.slow_client == "drop"
        is_open = self.is_open
        budget = self.budget
        watched = budget.watched
        ok: list[Any] = []
        slow: list[Any] = []
        for client in self.clients:
            if not is_open(client):
                continue
            size = client.transport.get_write_buffer_size()
            if not size:  # nearly every client: nothing more to look at
                ok.append(client)
                continue
            transport = client.transport
            if transport.is_closing():  # aborted (connection_lost comes next), or closing
                continue
            size += client.held
            if size > notable:
                budget.note(self, client, size)
                if size > limit or client.shed:
                    if drop or client.shed:
                        self.stats.dropped += count
                        self._note_dropped(client, count, len(data))
                    else:
                        slow.append(client)
                    continue
            elif client not in watched:
                budget.watch(self, client, size)
            if client.paused or client.backlog is not None:
                self.hold(client, data, count)
            else:
                ok.append(client)
        for client in slow:
            self.stats.slow_disconnects += 1
            self.stats.lost_slow += count
            log.warning(
                "endpoint %s: client %s is too slow (more than %s buffered): disconnecting%s; "
                "%s of this pass not delivered to it",
                self.name,
                client.label,
                format_size(limit),
                self.slow_close_code,
                plural(count, "message"),
            )
            self.disconnect_slow(client)
        return ok

    def hold(self, client: Any, data: bytes, count: int) -> None:
        """Keep ``data`` for a client whose transport is paused (its buffer is past its
        high-water mark: the kernel takes nothing more for now), rather than write it: the
        event loop's transports make one pending write request per loop turn for each such
        client, which cost the loop about 0.6 us each when the client is closed (300
        clients with a thousand such requests each: a 170 ms pause for every client). What
        is held is written, in one call, when the transport resumes (:func:`release`); it
        counts as buffered for the client, for ``client_buffer`` and the budget."""
        backlog = client.backlog
        if backlog is None:
            client.backlog = [data]
        else:
            backlog.append(data)
        client.held += len(data)
        stats = self.stats
        stats.messages_out += count
        stats.bytes_out += len(data)

    def broken(self, client: Any, exc: BaseException) -> None:
        """A write to a client raised (its transport is half-closed, or broken in a way
        nobody foresaw): that client is aborted, counted and logged (rate limited); the
        other clients get the message all the same."""
        self.stats.write_failed += 1
        self._bad_log(
            "endpoint %s: aborting client %s: writing to it failed (%s: %s)",
            self.name,
            client.label,
            type(exc).__name__,
            exc,
        )
        self.abort(client)

    def over_budget(self, client: Any) -> bool:
        """The process-wide ``limits.buffered`` is reached and this client is among those
        holding the most: its ``slow_client`` policy applies now, whatever its own
        buffer. ``drop``: no data for it until it drains (False: its bytes stay);
        ``disconnect``: aborted at once (True: its bytes are freed): it is behind by
        more than any other, and memory is short."""
        self.stats.memory_limited += 1
        if self.spec.slow_client == "drop":
            client.shed = True
            return False
        self.stats.memory_closed += 1
        self.abort(client)
        return True

    def abort(self, client: Any) -> None:
        """Drop a client's connection at once: what is queued for it is thrown away."""
        client.transport.abort()

    def stalled(self, client: Any, idle: float, held: int, why: str) -> None:
        """A client took nothing of what waited for it for ``idle`` seconds: its
        ``stall_timeout`` (``why``), or, over ``limits.buffered`` (``buffered``), since the
        limit stopped its data. It is aborted (it would never read a close frame: the
        kernel frees what it held at once), whatever its policy; counted, logged (rate
        limited)."""
        self.stats.stalled_closed += 1
        because = (
            f"for {idle:.1f}s (stall_timeout {self.spec.stall_timeout:g}s)"
            if why == "stall_timeout"
            else f"for {idle:.1f}s, and limits.buffered is reached"
        )
        self._stalled_log(
            "endpoint %s: disconnecting client %s: it read nothing %s while %s waited for it "
            "(in Veylor and the kernel)",
            self.name,
            client.label,
            because,
            human_size(held),
        )
        self.abort(client)

    def _note_dropped(self, client: Any, count: int, nbytes: int) -> None:
        """Count messages (``nbytes``) dropped for a slow client; log at most once per
        ``LOSS_LOG_INTERVAL`` per client, with the count so far."""
        if not client.dropped and not client.shed:
            self.stats.slow_dropping += 1  # one more client over client_buffer (slow_client: drop)
        client.dropped += count
        client.unwritten += nbytes
        if _due(client, "dropped_logged_at", time.monotonic()):
            log.warning(
                "endpoint %s: client %s is too slow (more than %s buffered): %s dropped for it so far "
                "(slow_client: drop; logged at most every %.0fs per client)",
                self.name,
                client.label,
                format_size(self.spec.client_buffer),
                plural(client.dropped, "message"),
                LOSS_LOG_INTERVAL,
            )

    def cannot_frame(self, reason: str) -> None:
        """A message this endpoint's framing cannot carry (``reason``: ``binary`` or
        ``newline``): not delivered to any of its clients; counted and logged."""
        n = len(self.clients)
        if not n:
            return
        self.stats.unframeable += n
        self._unframeable_log[reason].add(
            n,
            "endpoint %s (framing: lines): a message not delivered to its %s: lines cannot carry %s",
            self.name,
            plural(n, "client"),
            UNFRAMEABLE[reason],
        )

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

    def departed(self, client: Any) -> str:
        """The tail of a 'client disconnected' line: what it missed, if anything."""
        return f"; {plural(client.dropped, 'message')} dropped for it while slow" if client.dropped else ""

    @staticmethod
    def is_open(client: Any) -> bool:
        """Whether data may still be written to ``client`` (it is not being closed)."""
        raise NotImplementedError

    def disconnect_slow(self, client: Any) -> None:
        """Close a client over ``client_buffer`` (``slow_client: disconnect``)."""
        raise NotImplementedError

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
        if _due(client, "denied_logged_at", time.monotonic()):
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
        if _due(client, "limited_logged_at", now):
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
        if policy.over_rate == "close" and now - bucket[2] >= policy.CLOSE_AFTER and self.is_open(client):
            self.stats.rate_closed += 1
            log.warning(
                "endpoint %s: closing client %s: over its upstream rate for %.0fs (1008)",
                self.name,
                client.label,
                policy.CLOSE_AFTER,
            )
            self.close_client(client, 1008, "upstream rate exceeded")
        return False

    def refused(self, counter: str, label: str, why: str) -> None:
        """A client refused by the access rules: counted by reason, logged (rate limited)."""
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self._refused_log("endpoint %s: refused client %s: %s", self.name, label, why)

    def close_client(self, client: Any, code: int, reason: str) -> None:
        """Close one client (``code`` and ``reason`` where the kind has a close message)."""
        raise NotImplementedError

    def close_clients(self, code: int, reason: str) -> None:
        """Close every client (``code`` and ``reason`` where the kind has a close message)."""
        raise NotImplementedError


def release(client: Any, write: bool = True) -> None:
    """Write what Veylor held for a client while its transport was paused (``write``
    false: discard it: the connection is closing without it)."""
    backlog = client.backlog
    if backlog is not None:
        client.backlog, client.held = None, 0
        if write:
            client.transport.writelines(backlog)


def _due(client: Any, attr: str, now: float) -> bool:
    """Whether a line of one kind about ``client`` may be logged now: at most one per
    ``LOSS_LOG_INTERVAL`` (``attr`` holds when the last was); if so, it is noted."""
    if now - getattr(client, attr) < LOSS_LOG_INTERVAL:
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


NO_BUDGET = Budget(limit=2**62)  # endpoints made outside a runtime (tests)
