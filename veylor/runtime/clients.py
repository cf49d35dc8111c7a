"""Endpoints with clients of their own: the WebSocket and Unix kinds.

Such an endpoint owns its set of clients. At each flush it writes the pass's joined
frames to each client with one ``transport.write``, applying the slow-client policy
from the transport's write-buffer size (``client_buffer``, ``slow_client``), and hands
the clients that fall behind to the process's buffer budget
(:mod:`veylor.runtime.budget`: ``limits.buffered``, ``stall_timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from ..config.access import UpstreamPolicy
from ..config.common import format_size, human_size
from ..config.model import EndpointSpec
from ..latest import Kept
from ..report import plural
from . import catchup
from .budget import NOTABLE, Budget
from .endpoints import Endpoint, log_due
from .keeper import SEQUENCE, Assembled, Resumable, welcome
from .stats import EndpointStats
from .util import CountedLog, Throttled

log = logging.getLogger("veylor.endpoint")
CLOSE_GRACE = 2.0  # seconds a closing client has to answer before its connection is aborted
LOSS_LOG_INTERVAL = 60.0  # seconds between two reports of messages dropped for one client
FLUSH_AT = 64 * 1024  # bytes pending for one endpoint that make it write within the pass
UNFRAMEABLE = {"binary": "binary messages", "newline": "messages that contain a newline"}


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
    lag: int | None  # the endpoint's message it is behind from (slow_client: conflate)
    superseded: int  # messages replaced for it by a later one of their key while behind


ClientT = TypeVar("ClientT", bound=Client)


class ClientKind(Endpoint):
    """What each kind with clients of its own implements (how its clients are told
    apart and closed), and the one line said when every client closes at once."""

    closing_all = False  # every client is being closed: one line said so, not one each

    @staticmethod
    def is_open(client: Any) -> bool:
        """Whether data may still be written to ``client`` (it is not being closed)."""
        raise NotImplementedError

    def disconnect_slow(self, client: Any) -> None:
        """Close a client over ``client_buffer`` (``slow_client: disconnect``)."""
        raise NotImplementedError

    def close_client(self, client: Any, code: int, reason: str) -> None:
        """Close one client (``code`` and ``reason`` where the kind has a close message)."""
        raise NotImplementedError

    def close_clients(self, code: int, reason: str) -> None:
        """Close every client (``code`` and ``reason`` where the kind has a close message)."""
        raise NotImplementedError

    def closing_every_client(self, code: int, reason: str) -> None:
        """Every client is about to be closed (shutdown, a removed or moved endpoint):
        one line for all of them, at INFO; each client's own line goes to DEBUG
        (:meth:`departure_level`)."""
        self.closing_all = True
        if self.clients:
            log.info(
                "endpoint %s: closing %s (%s, %s)",
                self.name,
                plural(len(self.clients), "client"),
                code,
                reason,
            )

    def departure_level(self) -> int:
        """The level of a departing client's line: DEBUG while every client is being
        closed (:meth:`closing_every_client` said it once), else INFO."""
        return logging.DEBUG if self.closing_all else logging.INFO


class ClientEndpoint(ClientKind, Generic[ClientT]):
    """An endpoint whose clients connect to Veylor: its client set, one write per client
    per pass, the slow-client policy, and what the buffer budget asks of it.

    A kind sets ``wire`` and implements :class:`ClientKind`'s methods.
    """

    slow_close_code = ""  # for the log line: how a slow client is closed

    def __init__(
        self, spec: EndpointSpec, stats: EndpointStats | None = None, budget: Budget | None = None
    ) -> None:
        super().__init__(spec, stats, budget)
        self.budget = budget if budget is not None else NO_BUDGET
        self.clients: set[ClientT] = set()
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.written = 0  # bytes written to every client that could take them (each pass once)
        self._empty: asyncio.Event | None = None  # set when the last client leaves (wait_empty)
        self.losses = LossLog(self)
        # Latest-value delivery (runtime/keeper.py): what the routes into it keep, for each
        # client that joins, then the end markers.
        self.kept: tuple[Kept, ...] = ()
        self.ends: tuple[bytes, ...] = ()
        self.end_texts: tuple[bytes, ...] = ()  # (the end markers' payloads)
        self.histories: tuple[Resumable, ...] = ()  # for clients that come back (?since=)
        self.assembled: tuple[tuple[int, tuple[Kept, ...], tuple[bytes, ...]], Assembled] | None = None
        # (this pass's snapshot, made once for all its joiners: keeper._snapshot)
        # slow_client: conflate (runtime/catchup.py): each pending message's source and
        # payload (None: another policy), each source's key paths, the bounds of what is
        # kept for the clients behind, and what is (None: nobody is behind).
        self.keyed: list[tuple[str, bytes, bool]] | None = [] if spec.slow_client == "conflate" else None
        self.lag_paths: dict[str, tuple[Any, ...]] = {}
        self.lag_keys, self.lag_bytes = catchup.UNKEYED_KEYS, catchup.UNKEYED_BYTES
        self.latest: catchup.Latest | None = None

    # ------------------------------------------------------------------ clients

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
        if (self.kept or self.histories) and self.pending:
            # This pass's messages out now, to the clients there before it: they are in
            # what is kept, so the joiner gets them in its snapshot, not twice.
            self.flush()
        client.since = time.time()
        client.base = self.stats.messages  # its messages: what the endpoint wrote since, less its drops
        self.clients.add(client)

    def update(self, spec: EndpointSpec) -> None:
        was = self.spec.slow_client
        if spec.slow_client != was:
            self.flush()  # (this pass's messages under the policy they were taken for)
            if was == "conflate":  # the clients behind get what is held for them now
                for client in list(self.clients):
                    catchup.catch_up(self, client, whole=True)
                    client.lag = None  # (one whose write failed: it is closing)
                self.latest = None
            self.keyed = [] if spec.slow_client == "conflate" else None
        super().update(spec)

    def joined(self, client: ClientT) -> None:
        """A client may now be written to (its handshake is over): what the routes into
        this endpoint keep first (a snapshot), then the live stream."""
        if (self.kept or self.histories) and client in self.clients:
            welcome(self, client)

    def forget_assembled(self) -> None:
        self.assembled = None

    def write_one(self, client: ClientT, data: bytes, messages: list[tuple[bytes, bool]]) -> None:
        """Write ``data`` (``messages``, framed in this endpoint's wire) to one client."""
        client.transport.write(data)

    def client_status(self, client: ClientT) -> dict[str, Any]:
        """One client, for ``/graph``: who, since when, messages written to it, bytes
        waiting for it."""
        transport = client.transport
        return {
            "client": client.label,
            "connected_since": client.since,
            "messages": max(0, self.stats.messages - client.base - client.dropped - client.superseded),
            "dropped": client.dropped,
            "buffered": transport.get_write_buffer_size() + client.held if not transport.is_closing() else 0,
        }

    def remove(self, client: ClientT) -> None:
        self.clients.discard(client)
        if not self.clients:
            self.closing_all = False  # (all gone: the next clients' departures are told again)
            if self._empty is not None:
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

    def departed(self, client: Any) -> str:
        """The tail of a 'client disconnected' line: what it missed, if anything."""
        return f"; {plural(client.dropped, 'message')} dropped for it while slow" if client.dropped else ""

    # ------------------------------------------------------------------ fan-out

    def enqueue(self, frame: bytes | None, data: bytes, is_text: bool) -> bool:
        """Take one message for this pass: ``frame`` is it in this endpoint's wire
        (``None``: the wire cannot carry it). True when the endpoint must be flushed at
        the end of the pass and was not yet scheduled for it."""
        if frame is None:
            self.losses.cannot_frame("newline" if is_text else "binary")
            return False
        self.pending.append(frame)
        self.pending_bytes += len(frame)
        if self.keyed is not None:
            self.keyed.append((SEQUENCE.source, data, is_text))
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
            self.write_all(frames, data)

    def drop_pending(self) -> None:
        self.pending, self.pending_bytes = [], 0
        if self.keyed is not None:
            self.keyed = []

    def write_all(self, frames: list[bytes], data: bytes) -> None:
        """Write ``data`` (``frames``, joined) to every client that can take it."""
        count = len(frames)
        writable = self.writable(frames, data)
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

    def writable(self, frames: list[bytes], data: bytes) -> list[Any]:
        """The open clients to write ``data`` (``frames``, joined) to now. A client over
        ``client_buffer`` gets the ``slow_client`` policy for them: skipped and counted
        (``drop``), disconnected (``disconnect``), or given the latest of each key when it
        drains (``conflate``: :func:`veylor.runtime.catchup.writable`). A client whose
        transport is paused is not written to: Veylor keeps ``data`` for it
        (:meth:`hold`). A client for which bytes wait is watched by the budget (its
        kernel send buffer is full)."""
        if self.keyed is not None:
            return catchup.writable(self, frames, data)
        count = len(frames)
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
                        self.losses.note_dropped(client, count, len(data))
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
            self.losses.slow(client, count)
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
        self.losses.stalled(client, idle, held, why)
        self.abort(client)

    def rate_exceeded(self, client: Any, policy: UpstreamPolicy) -> None:
        if self.is_open(client):
            self.stats.rate_closed += 1
            log.warning(
                "endpoint %s: closing client %s: over its upstream rate for %.0fs (1008)",
                self.name,
                client.label,
                policy.CLOSE_AFTER,
            )
            self.close_client(client, 1008, "upstream rate exceeded")


class LossLog:
    """What the clients of one endpoint miss, told in the log without flooding it: a
    slow client's drops at most once per ``LOSS_LOG_INTERVAL`` with the count so far,
    the messages its framing cannot carry as one count per interval, and each client it
    disconnects for being too slow or stalled (rate limited). It counts the drops and
    the messages the framing cannot carry in the endpoint's stats; the endpoint counts
    the rest."""

    def __init__(self, ep: ClientEndpoint[Any]) -> None:
        self.ep = ep
        self._stalled_log = Throttled(log)
        self._behind_log = Throttled(log)
        self._unframeable_log = {
            reason: CountedLog(log, interval=LOSS_LOG_INTERVAL) for reason in UNFRAMEABLE
        }

    def note_dropped(self, client: Any, count: int, nbytes: int) -> None:
        """Count messages (``nbytes``) dropped for a slow client; log at most once per
        ``LOSS_LOG_INTERVAL`` per client, with the count so far."""
        if not client.dropped and not client.shed:
            self.ep.stats.slow_dropping += 1  # one more client over client_buffer (slow_client: drop)
        client.dropped += count
        client.unwritten += nbytes
        self.dropped(client)

    def cannot_frame(self, reason: str) -> None:
        """A message the endpoint's framing cannot carry (``reason``: ``binary`` or
        ``newline``): not delivered to any of its clients; counted and logged."""
        n = len(self.ep.clients)
        if n:
            self.ep.stats.unframeable += n
            self.unframeable(reason, n)

    def dropped(self, client: Any) -> None:
        """Messages were dropped for ``client`` (``slow_client: drop``)."""
        if log_due(client, "dropped_logged_at", time.monotonic(), LOSS_LOG_INTERVAL):
            ep = self.ep
            log.warning(
                "endpoint %s: client %s is too slow (more than %s buffered): %s dropped for it so far "
                "(slow_client: drop; logged at most every %.0fs per client)",
                ep.name,
                client.label,
                format_size(ep.spec.client_buffer),
                plural(client.dropped, "message"),
                LOSS_LOG_INTERVAL,
            )

    def slow(self, client: Any, count: int) -> None:
        """``client`` is disconnected for being over ``client_buffer``; ``count`` messages
        of this pass never reach it."""
        ep = self.ep
        log.warning(
            "endpoint %s: client %s is too slow (more than %s buffered): disconnecting%s; "
            "%s of this pass not delivered to it",
            ep.name,
            client.label,
            format_size(ep.spec.client_buffer),
            ep.slow_close_code,
            plural(count, "message"),
        )

    def behind(self, client: Any) -> None:
        """``client`` is over ``client_buffer`` (``slow_client: conflate``)."""
        ep = self.ep
        self._behind_log(
            "endpoint %s: client %s is too slow (more than %s buffered): holding the latest message "
            "of each key for it until it reads again (slow_client: conflate)",
            ep.name,
            client.label,
            format_size(ep.spec.client_buffer),
        )

    def too_many_keys(self, client: Any) -> None:
        """``client`` is disconnected: it is behind on more keys than a lag may hold."""
        ep = self.ep
        self._behind_log(
            "endpoint %s: disconnecting client %s: behind on more than %s keys (slow_client: conflate; "
            "the max_keys of the routes into it, one for each source without a key)",
            ep.name,
            client.label,
            f"{ep.lag_keys:,}",
        )

    def stalled(self, client: Any, idle: float, held: int, why: str) -> None:
        """``client`` is aborted: it read nothing for ``idle`` seconds (see
        :meth:`ClientEndpoint.stalled`)."""
        ep = self.ep
        because = (
            f"for {idle:.1f}s (stall_timeout {ep.spec.stall_timeout:g}s)"
            if why == "stall_timeout"
            else f"for {idle:.1f}s, and limits.buffered is reached"
        )
        self._stalled_log(
            "endpoint %s: disconnecting client %s: it read nothing %s while %s waited for it "
            "(in Veylor and the kernel)",
            ep.name,
            client.label,
            because,
            human_size(held),
        )

    def unframeable(self, reason: str, n: int) -> None:
        """A message the lines framing cannot carry did not reach the endpoint's ``n``
        clients."""
        self._unframeable_log[reason].add(
            n,
            "endpoint %s (framing: lines): a message not delivered to its %s: lines cannot carry %s",
            self.ep.name,
            plural(n, "client"),
            UNFRAMEABLE[reason],
        )


def with_clients(endpoints: Iterable[Endpoint]) -> Iterator[ClientEndpoint[Any]]:
    """Those of ``endpoints`` that have clients of their own (to close, to wait for)."""
    for ep in endpoints:
        if isinstance(ep, ClientEndpoint):
            yield ep


def release(client: Any, write: bool = True) -> None:
    """Write what Veylor held for a client while its transport was paused (``write``
    false: discard it: the connection is closing without it)."""
    backlog = client.backlog
    if backlog is not None:
        client.backlog = None
        client.held -= sum(map(len, backlog))
        if write:
            client.transport.writelines(backlog)
    if client.lag is not None:  # (slow_client: conflate) the latest of each key next
        if write:
            catchup.resumed(client)
        else:
            catchup.forget(client.endpoint, client)


NO_BUDGET = Budget(limit=2**62)  # endpoints made outside a runtime (tests)
