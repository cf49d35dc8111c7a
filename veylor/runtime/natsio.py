"""The NATS kinds (scale-out): an endpoint that publishes to a subject, a source that
subscribes to one. The settings and the headers are in :mod:`veylor.config.natsspec`.

One NATS connection per component, made with ``nats-py`` (async; reconnection and
failover between the cluster's servers are the library's). Until the first connection
succeeds, the library tries each server every ``RECONNECT_WAIT`` seconds (its errors
logged once a minute, with a count); an error it gives up on is retried by Veylor with
backoff. A component never fails Veylor's start or a reload because NATS is down.

Each connection is watched (:meth:`Connection._watch`): one on which nothing arrived
and no PONG answered Veylor's ping for ``stall_timeout``, or whose client library
stopped reading (:func:`.compat.reader_ended`), is closed and made again, counted.

Publishing never blocks the fan-out: what is to be published waits in an
:class:`Outbox` (bounded; beyond it, messages are dropped and counted), drained by one
task per connection while it is connected, never by a task per message.

With a JetStream ``stream``, the endpoint publishes with acknowledgements
(:class:`StreamOutbox`: in order, exactly once into the stream) and the source reads an
ordered consumer from after the last stream sequence it delivered (its ``position``,
kept in ``position_file`` across restarts), with two guards of its own against a
consumer that stops delivering (:meth:`NatsSource._guard_resets`,
:meth:`NatsSource._watch_stream`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets as _random
import time
from collections.abc import Callable, Sequence
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ..backoff import backoff_delay
from ..config.access import read_small
from ..config.common import Reconnect, format_size
from ..config.model import EndpointSpec
from ..config.natsspec import (
    HEADER_NODE,
    HEADER_SEQ,
    HEADER_TYPE,
    NatsLink,
    NatsListen,
    NatsSourceSpec,
    mask_url,
)
from ..observe.logs import SECRETS
from ..report import plural
from ..sequence import Seen, SequenceTracker
from . import compat
from .budget import Budget
from .endpoints import ClientState, Endpoint
from .frames import valid_utf8
from .interfaces import Dispatch, ListenerKey
from .kinds import RuntimeKind
from .stats import EndpointStats, SourceStats
from .util import CountedLog, Throttled
from .wire import Wire

log = logging.getLogger("veylor.nats")

FIRST_CONNECT = Reconnect(initial_delay=0.5, max_delay=30.0, multiplier=2.0, jitter=0.2, max_attempts=0)
CONNECT_TIMEOUT = 5  # seconds for one server's TCP, TLS and CONNECT
RECONNECT_WAIT = 1  # seconds before the library tries a server it was connected to again
CLOSE_TIMEOUT = 2.0  # seconds to publish what waits, then close, at shutdown or unbind
FAILURE_SUMMARY = 60.0  # seconds between "still cannot connect" lines of one connection
WATCH_TICK = 1.0  # seconds between two looks of a connection's watchdog (at most stall_timeout / 4)
STALLS_FORGOTTEN = 60.0  # seconds a connection must last for the stalls before it to be forgotten
# Why a connection was replaced (veylor_source_stalls_total's reasons): no message and no
# PONG to Veylor's ping for stall_timeout; the client library's read loop ended under it.
NO_PONG, READ_LOOP = "no_pong", "read_loop_ended"
MAX_SUBJECTS_TRACKED = 10_000  # subjects a source keeps sequence numbers for (wildcards)
PENDING_SIZE = 2 * 2**20  # bytes the library buffers while reconnecting
# A stream consumer reset at one message this many times within RESETS_WITHIN seconds is
# in a loop on that message (which is then skipped); the library's own recovery from a
# failover resets every 2 s at most.
RESETS_TO_SKIP = 10
RESETS_WITHIN = 1.0
STREAM_CHECK = 5.0  # seconds between two looks at whether a stream source is stuck
STALLS_TO_SKIP = 3  # read loop ends in a row at one stream position that skip the message after it
SAVE_EVERY = 1.0  # seconds between two writes of a source's position_file
YIELD_EVERY = 256  # messages published from a backlog between two turns of the event loop (about 2 ms)
ITEM_COST = 100  # bytes a message waiting to be published costs beside its payload
TEXT, BINARY = "text", "binary"
# What the library may hold for a subscription that Veylor has not taken yet (a flood on
# the subject): beyond it, the library drops (a slow consumer, reported to the error
# callback) and the gap shows in the sequence numbers. Its defaults are 512k and 128 MiB.
SUBSCRIPTION_LIMITS = {"pending_msgs_limit": 65_536, "pending_bytes_limit": 32 * 2**20}

# The fan-out frames once per wire: a NATS endpoint takes the payload as it is.
NATS_WIRE = Wire("nats", lambda payload, _is_text: payload)


def _ssl(link: NatsLink) -> Any:
    return link.tls.context() if link.tls is not None else None


def _server(nc: NatsClient) -> str:
    """The server a connection is on, for people (credentials masked)."""
    url = nc.connected_url
    return mask_url(url.geturl()) if url is not None else "?"


class Connection:
    """One NATS connection of a component, kept up by the library (its retries until
    the first connection, its reconnection and failover after; Veylor's backoff only for
    an error the library gives up on), and watched by Veylor (:meth:`_watch`): one that
    stopped reading is closed and made again. ``state`` is ``connecting``,
    ``connected``, ``reconnecting`` (the library is failing over), ``stalled`` (about to
    be made again), ``backoff`` or ``closed``.

    ``generation`` counts the library clients made: a component whose subscriptions
    belong to an older one subscribes again (a reconnection by the library keeps them)."""

    def __init__(
        self,
        link: NatsLink,
        who: str,
        name: str,
        on_up: Callable[[], Any],
        on_down: Callable[[], Any],
        received: Callable[[], int] = lambda: 0,
        on_stalled: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.link = link
        self.who = who  # "source ticker", "endpoint cluster": for log lines
        self.name = name  # the connection's name in the server's monitoring
        self.on_up = on_up  # coroutine function: connected (first time and after each reconnect)
        self.on_down = on_down  # plain function: disconnected
        self.received = received  # messages the component received so far: signs of life, for free
        self.on_stalled = on_stalled  # plain function: the connection stopped reading (the reason)
        self.generation = 0
        self.stalls = 0  # in a row, on connections that did not last (backoff before the next)
        self.nc: NatsClient | None = None
        self.state = "connecting"
        self.last_error: str | None = None
        self.connected_since: float | None = None
        self.next_attempt_at: float | None = None
        self.failures = 0
        self.task: asyncio.Task[None] | None = None
        self._error_log = Throttled(log, interval=60.0)
        self._down_log = Throttled(log, interval=10.0)
        self._up_log = Throttled(log, logging.INFO, 10.0)
        self._streak_since: float | None = None  # wall clock of the first failure of a streak
        self._summary_at = 0.0
        self._stall_log = Throttled(log, interval=60.0)
        self._reconnects = 0  # by the library (a ping sent before one is never answered)

    @property
    def connected(self) -> bool:
        nc = self.nc
        return nc is not None and nc.is_connected

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"veylor-nats-{self.who}")

    async def _run(self) -> None:
        servers = list(self.link.servers)
        while True:
            self.state = "connecting"
            self.next_attempt_at = None
            nc = NatsClient()
            try:
                await nc.connect(
                    servers=servers,
                    name=self.name,
                    error_cb=self._error,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    closed_cb=self._closed,
                    connect_timeout=CONNECT_TIMEOUT,
                    reconnect_time_wait=RECONNECT_WAIT,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    user_credentials=self.link.credentials,
                    tls=_ssl(self.link),
                    pending_size=PENDING_SIZE,
                )
            except asyncio.CancelledError:
                await _close_quietly(nc)
                raise
            except Exception as exc:  # an error the library gives up on (TLS, a URL it refuses)
                await self._back_off(nc, _describe(exc))
                continue
            if not nc.is_connected:  # (nats-py returns from a handshake the server did not finish)
                await self._back_off(
                    nc, "the server did not complete the NATS handshake (is it a NATS server?)"
                )
                continue
            self.nc = nc
            after = (
                f" after {plural(self.failures, 'failed attempt')}" if self._streak_since is not None else ""
            )
            self._streak_since = None
            self.failures = 0
            self.last_error = None
            self.state = "connected"
            self.connected_since = time.time()
            log.info("%s: connected to NATS at %s%s", self.who, _server(nc), after)
            self.generation += 1
            began = time.monotonic()
            await self.on_up()
            reason = await self._watch(nc)
            if time.monotonic() - began >= STALLS_FORGOTTEN:
                self.stalls = 0
            await self._replace(nc, reason)

    async def _watch(self, nc: NatsClient) -> str:
        """Until ``nc`` stops reading (the reason): a message received, or a PONG to a
        ping sent when none came for half of ``stall_timeout``, is a sign of life; none
        for ``stall_timeout`` is a stall. The client library's read loop ending under a
        connection it still calls connected (:func:`.compat.reader_ended`) is one at
        once. While the library reconnects, it is the library's business."""
        loop = asyncio.get_running_loop()
        stall = self.link.stall_timeout
        tick = min(WATCH_TICK, stall / 4)
        last = loop.time()  # of the last sign of life
        seen, epoch = self.received(), self._reconnects
        ping: asyncio.Task[float | None] | None = None
        try:
            while True:
                await asyncio.sleep(tick)
                now = loop.time()
                if nc.is_closed:
                    return "closed"
                if not nc.is_connected or epoch != self._reconnects:  # (the library reconnects)
                    last, epoch = now, self._reconnects
                    if ping is not None:
                        ping.cancel()
                        ping = None
                    continue
                if compat.reader_ended(nc):
                    return READ_LOOP
                received = self.received()
                if received != seen:
                    seen, last = received, now
                if ping is not None and ping.done():
                    pong = None if ping.cancelled() else ping.result()
                    if pong is not None:
                        last = max(last, pong)
                    ping = None
                if now - last > stall:
                    return NO_PONG
                if ping is None and now - last >= stall / 2:
                    ping = loop.create_task(_ping(nc, stall))
        finally:
            if ping is not None:
                ping.cancel()

    async def _replace(self, nc: NatsClient, reason: str) -> None:
        """A connection that stopped reading: counted, said, closed, and made again (at
        once the first time, with backoff when it happens again and again)."""
        self.nc = None  # (the library's callbacks while it closes are not this connection's)
        self.connected_since = None
        self.state = "stalled"
        if reason == "closed":
            self.last_error = "the client library closed the connection"
        elif reason == READ_LOOP:
            self.last_error = (
                "the client library stopped reading (its read loop ended, on a message it could not parse)"
            )
        else:
            self.last_error = f"no message and no PONG for {self.link.stall_timeout:g}s (nats.stall_timeout)"
        self.stalls += 1
        self.on_stalled(reason)
        self.on_down()
        delay = backoff_delay(FIRST_CONNECT, self.stalls - 1) if self.stalls > 1 else 0.0
        self._stall_log(
            "%s: the connection to NATS at %s stopped reading: %s; connecting again%s",
            self.who,
            _server(nc),
            self.last_error,
            f" in {delay:.1f}s" if delay else "",
        )
        await _close_quietly(nc)
        self.state = "stalled"
        if delay:
            self.next_attempt_at = time.time() + delay
            await asyncio.sleep(delay)

    async def _back_off(self, nc: NatsClient, error: str) -> None:
        """A first connection that failed: closed, counted, said (:meth:`_log_failure`),
        and tried again after Veylor's backoff."""
        await _close_quietly(nc)
        self.failures += 1
        self.last_error = error
        delay = backoff_delay(FIRST_CONNECT, self.failures)
        self.state = "backoff"
        self.next_attempt_at = time.time() + delay
        self._log_failure(delay)
        await asyncio.sleep(delay)

    def _log_failure(self, delay: float) -> None:
        """As a WebSocket source does: the first failure of a streak at WARNING, later
        ones at DEBUG, with a summary at INFO at most every ``FAILURE_SUMMARY`` seconds."""
        now = time.monotonic()
        servers = ", ".join(self.link.safe_servers)
        if self._streak_since is None:
            self._streak_since = time.time()
            self._summary_at = now
            log.warning(
                "%s: cannot connect to NATS (%s): %s; retrying in %.1fs "
                "(further failures are summarized every %.0fs; -v shows each)",
                self.who,
                servers,
                self.last_error,
                delay,
                FAILURE_SUMMARY,
            )
            return
        log.debug(
            "%s: attempt %d to NATS (%s) failed: %s; retrying in %.1fs",
            self.who,
            self.failures,
            servers,
            self.last_error,
            delay,
        )
        if now - self._summary_at >= FAILURE_SUMMARY:
            self._summary_at = now
            log.info(
                "%s: still cannot connect to NATS (%s): %d attempts failed since %s; last error: %s; "
                "next attempt in %.1fs",
                self.who,
                servers,
                self.failures,
                time.strftime("%H:%M:%S", time.localtime(self._streak_since)),
                self.last_error,
                delay,
            )

    async def _error(self, exc: Exception) -> None:
        self.last_error = _describe(exc)
        self._error_log("%s: NATS: %s", self.who, self.last_error)

    async def _disconnected(self) -> None:
        if self.state == "closed" or self.nc is None:  # (nats-py calls it for a failed first attempt too)
            return
        self.state = "reconnecting"
        self.connected_since = None
        error = self.nc.last_error
        if error is not None:
            self.last_error = _describe(error)
        self._down_log(
            "%s: disconnected from NATS (%s); the client library is reconnecting",
            self.who,
            self.last_error or "connection closed",
        )
        self.on_down()

    async def _reconnected(self) -> None:
        if self.nc is None:
            return
        self._reconnects += 1
        self.state = "connected"
        self.connected_since = time.time()
        self._up_log("%s: reconnected to NATS at %s", self.who, _server(self.nc))
        await self.on_up()

    async def _closed(self) -> None:
        if self.nc is not None:  # (not one Veylor replaced: the library gave up on it)
            self.state = "closed"

    async def close(self) -> None:
        """Stop connecting, flush what the library holds and close (bounded)."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.state = "closed"
        nc, self.nc = self.nc, None
        if nc is not None:
            await _close_quietly(nc)
        self._error_log.cancel()
        self._down_log.cancel()
        self._up_log.cancel()
        self._stall_log.cancel()

    def status(self) -> dict[str, Any]:
        nc = self.nc
        return {
            "state": self.state,
            "url": (_server(nc) if nc is not None and nc.is_connected else ", ".join(self.link.safe_servers)),
            "connected_since": self.connected_since,
            "next_attempt_at": self.next_attempt_at,
            "failures": self.failures,
            "last_error": SECRETS.mask(self.last_error) if self.last_error else None,
        }


async def _ping(nc: NatsClient, timeout: float) -> float | None:
    """When the PONG to a PING came (the loop's clock), or None: none in ``timeout``, or
    the connection went meanwhile. (``rtt``, not ``flush``: nats-py's flush returns at
    once, without a PING, when its read loop has ended.)"""
    try:
        await nc.rtt(timeout)
    except Exception:
        return None
    return asyncio.get_running_loop().time()


async def _close_quietly(nc: NatsClient) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await nc.close()
    except Exception:  # (closing a connection that never opened, or a dead one)
        pass


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, nats.errors.NoServersError):
        text = "no server could be reached"
    return mask_url(text) if "://" in text else text


class Outbox:
    """Messages waiting to be published to one subject, in order, bounded (``limit``:
    bytes, each message counted with ``ITEM_COST`` more, or messages), drained by one
    task while the connection is up. :meth:`add` says False when a message does not fit
    (the caller counts it). Headers are made as each message goes: the frame type, and
    with a ``node``, the node id and the message's sequence number."""

    def __init__(
        self,
        subject: str,
        limit: int,
        by_bytes: bool,
        node: str | None = None,
        stats: SourceStats | None = None,
        too_large: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.subject = subject
        self.node = node
        self.stats = stats  # a source's: ``sent_up`` counts what went out
        self.too_large = too_large  # a message the server refused as larger than its max_payload
        self.items: collections.deque[tuple[bytes, bool, int]] = collections.deque()
        self.size = 0
        self.limit = limit
        self.by_bytes = by_bytes
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def cost(self, data: bytes) -> int:
        """What one waiting message counts against ``limit``."""
        return len(data) + ITEM_COST if self.by_bytes else 1

    def add(self, data: bytes, is_text: bool, seq: int = 0) -> bool:
        cost = self.cost(data)
        if self.size + cost > self.limit and self.items:
            return False
        self.items.append((data, is_text, seq))
        self.size += cost
        return True

    def kick(self) -> None:
        if self.items and not self.wake.is_set():
            self.wake.set()

    def run(self, conn: Connection) -> None:
        """Start draining into ``conn`` (once connected)."""
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self._drain(conn), name=f"veylor-nats-out-{conn.who}"
            )

    async def _drain(self, conn: Connection) -> None:
        items = self.items
        node = self.node
        sent = 0
        while True:
            await self.wake.wait()
            self.wake.clear()
            while items and conn.connected:
                sent += 1
                if sent % YIELD_EVERY == 0:  # a backlog (NATS was away): the loop serves clients between
                    await asyncio.sleep(0)
                    continue
                data, is_text, seq = items[0]
                nc = conn.nc
                assert nc is not None
                headers = {HEADER_TYPE: TEXT if is_text else BINARY}
                if node is not None:
                    headers[HEADER_NODE] = node
                    headers[HEADER_SEQ] = str(seq)
                try:
                    await nc.publish(self.subject, data, headers=headers)
                except (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionReconnectingError):
                    break  # disconnected meanwhile: it waits here, bounded, for the reconnection
                except nats.errors.MaxPayloadError:
                    self.too_large(len(data))  # larger than the server takes: never will be
                except nats.errors.ConnectionClosedError:
                    return
                else:
                    if self.stats is not None:
                        self.stats.sent_up += 1
                items.popleft()
                self.size -= self.cost(data)

    async def close(self, conn: Connection) -> int:
        """Publish what waits (bounded in time), then stop: the number of messages left
        unpublished (the caller counts them)."""
        task, self.task = self.task, None
        if task is None:
            return self._discard()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                while self.items and conn.connected:
                    self.wake.set()
                    await asyncio.sleep(0.01)
                if conn.nc is not None and conn.connected:
                    await conn.nc.flush(timeout=CLOSE_TIMEOUT)
        except Exception:  # (timed out, or the connection went: what is left is lost)
            pass
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return self._discard()

    def _discard(self) -> int:
        n = len(self.items)
        self.items.clear()
        self.size = 0
        return n


class StreamOutbox(Outbox):
    """An outbox that publishes into a JetStream stream with acknowledgements: in order,
    exactly once, nothing lost while the core runs.

    Up to ``WINDOW`` messages are in flight. Each carries ``Nats-Msg-Id`` (node and
    sequence number: the stream drops a second copy) and ``Nats-Expected-Last-Msg-Id``
    (the one before it: the stream refuses a message whose predecessor did not land,
    so a loss can never reorder the stream). A message leaves the outbox when the stream
    acknowledges it; a refusal, a missing acknowledgement or a reconnection sends every
    message in flight again, in order, after the last acknowledged one."""

    WINDOW = 256
    ACK_TIMEOUT = 5.0  # seconds for the oldest message in flight to be acknowledged
    RETRY = 0.2  # seconds between a failure and sending again

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acked = 0
        self.resent = 0  # messages sent again after a failure
        self.last_failure: str | None = None
        self.ready = asyncio.Event()  # the stream exists (set by the listener)
        self.stream_lost: Callable[[], None] = lambda: None  # (the listener makes it again)

    async def _drain(self, conn: Connection) -> None:
        items = self.items
        node = self.node
        assert node is not None
        inflight: collections.deque[asyncio.Future[Any]] = collections.deque()
        while True:
            if not inflight:
                await self.wake.wait()
                self.wake.clear()
                if not items:
                    continue
            if not conn.connected or not self.ready.is_set():
                await asyncio.sleep(self.RETRY)
                self.wake.set()
                continue
            nc = conn.nc
            assert nc is not None
            js = nc.jetstream()
            # The first message in flight follows one the stream acknowledged: it expects
            # nothing (a message someone else put in the stream must not block it for
            # good); each one after it expects the one before it.
            previous = _msg_id(node, items[len(inflight) - 1][2]) if inflight else None
            try:
                while len(inflight) < min(len(items), self.WINDOW):
                    index = len(inflight)
                    data, is_text, seq = items[index]
                    msg_id = _msg_id(node, seq)
                    headers = {
                        HEADER_TYPE: TEXT if is_text else BINARY,
                        HEADER_NODE: node,
                        HEADER_SEQ: str(seq),
                        "Nats-Msg-Id": msg_id,
                    }
                    if previous is not None:
                        headers["Nats-Expected-Last-Msg-Id"] = previous
                    try:
                        fut = await js.publish_async(self.subject, data, headers=headers)
                    except nats.errors.MaxPayloadError:  # larger than the server takes: never will be
                        del items[index]
                        self.size -= self.cost(data)
                        self.too_large(len(data))
                        continue
                    inflight.append(fut)
                    previous = msg_id
                if not inflight:
                    continue
                # (asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result
                # when the acknowledgement lands as a cancellation arrives, and the
                # cancellation is lost: a shutdown under load waited for this loop for ever.)
                async with asyncio.timeout(self.ACK_TIMEOUT):
                    await asyncio.shield(inflight[0])
            except Exception as exc:  # refused, not acknowledged in time, disconnected
                self.last_failure = _describe(exc)
                self.resent += len(inflight)
                for fut in inflight:
                    fut.cancel()
                inflight.clear()
                if _stream_gone(exc):  # deleted, or not there yet: made again before anything goes
                    self.ready.clear()
                    self.stream_lost()
                await asyncio.sleep(self.RETRY)
                self.wake.set()
                continue
            inflight.popleft()
            data, _, seq = items.popleft()
            self.size -= self.cost(data)
            self.acked += 1
            if items:
                self.wake.set()


def _count_stall(stats: SourceStats | EndpointStats, reason: str) -> None:
    if reason == READ_LOOP:
        stats.stalled_read_loop += 1
    elif reason == NO_PONG:
        stats.stalled_no_pong += 1


def _stream_gone(exc: BaseException) -> bool:
    """Whether a publish failed because no stream took it (deleted, or its leader not
    elected yet)."""
    from nats.js.errors import APIError, NoStreamResponseError

    if isinstance(exc, NoStreamResponseError | nats.errors.NoRespondersError):
        return True
    return isinstance(exc, APIError) and exc.err_code == 10059  # stream not found


async def _stream_problem(nc: NatsClient, listen: NatsListen) -> str | None:
    """Create the endpoint's stream; None once it exists and captures the subject, else
    what is wrong, for people."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import BadRequestError, NoStreamResponseError, ServiceUnavailableError

    js = nc.jetstream(timeout=5.0)
    name = listen.stream
    assert name is not None
    config = StreamConfig(
        name=name,
        subjects=[listen.subject],
        max_msgs_per_subject=listen.max_msgs_per_subject,
        num_replicas=listen.replicas,
        storage=StorageType.FILE,
        duplicate_window=120.0,
    )
    try:
        await js.add_stream(config)
        return None
    except BadRequestError as exc:
        if exc.err_code != 10058:  # (not "the name is in use": a setting the server refuses)
            return f"cannot create it: {exc.description}"
    except (NoStreamResponseError, ServiceUnavailableError, nats.errors.NoRespondersError):
        return "JetStream is not enabled on the NATS servers (nats-server -js)"
    except Exception as exc:  # (a timeout while the cluster elects a leader, a lost connection)
        return f"cannot create it yet: {_describe(exc)}"
    try:
        info = await js.stream_info(name)
    except Exception as exc:
        return f"cannot read it: {_describe(exc)}"
    subjects = info.config.subjects or []
    if listen.subject not in subjects:
        return (
            f"it exists and does not capture {listen.subject} (it captures {', '.join(subjects) or 'nothing'}): "
            "name another stream, or delete this one"
        )
    return None


def _read_position(path: str, who: str, stream: str) -> int:
    """The sequence in ``stream`` a position file holds (0: none, another stream's, or
    unreadable: said so)."""
    try:
        text = read_small(path).decode("utf-8", "replace")  # (a regular file, size-capped)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("source %s: cannot read position_file %s: %s", who, path, exc.strerror or exc)
        return 0
    try:
        name, number = text.split()
        if not (number.isascii() and number.isdigit() and len(number) <= 19):
            raise ValueError(number)
        position = int(number)
    except ValueError:
        log.warning(
            "source %s: position_file %s does not hold a position: starting as replay says", who, path
        )
        return 0
    if name != stream:
        log.warning(
            "source %s: position_file %s is for stream %s, not %s: starting as replay says",
            who,
            path,
            name,
            stream,
        )
        return 0
    return max(0, position)


def _msg_id(node: str, seq: int) -> str:
    return f"{node}-{seq}"


def _node_id() -> str:
    """A publishing connection's id: new for each, so an edge tells a restarted core
    (new id, sequence from 1) from lost messages."""
    return _random.token_hex(8)


class _Edges(ClientState):
    """The clients of a NATS endpoint seen as one: every edge's client messages arrive on
    its upstream subject (each edge applies its own routes' limits to its clients)."""

    def __init__(self, subject: str) -> None:
        self.label = f"NATS {subject}"
        self.transport = None


class NatsEndpoint(Endpoint):
    """Publishes each message routed to it to its subject, once, with the frame type, its
    node id and a sequence number in headers; takes client messages from edges on its
    upstream subject. It has no clients of its own."""

    wire = NATS_WIRE

    def __init__(
        self, spec: EndpointSpec, stats: EndpointStats | None = None, budget: Budget | None = None
    ) -> None:
        super().__init__(spec, stats, budget)
        listen = spec.listen
        assert isinstance(listen, NatsListen)
        self.subject = listen.subject
        self.node = _node_id()
        self.seq = 0
        kind = StreamOutbox if listen.stream else Outbox
        self.outbox = kind(self.subject, spec.client_buffer, True, self.node, too_large=self._too_large)
        self.link: NatsLinkListener | None = None
        self.edges = _Edges(listen.upstream_subject)
        self._full_log = CountedLog(log)

    def update(self, spec: EndpointSpec) -> None:
        super().update(spec)
        self.outbox.limit = spec.client_buffer

    def enqueue(self, frame: bytes | None, data: bytes, is_text: bool) -> bool:
        self.seq += 1
        stats = self.stats
        if not self.outbox.add(data, is_text, self.seq):
            stats.dropped += 1
            self._full_log.add(
                1,
                "endpoint %s: more than %s waiting to be published to NATS (client_buffer): messages dropped",
                self.name,
                format_size(self.spec.client_buffer),
            )
            return False
        stats.messages += 1
        stats.messages_out += 1
        stats.bytes_out += len(data)
        if self.scheduled:
            return False
        self.scheduled = True
        return True

    def flush(self) -> None:
        self.outbox.kick()

    def _too_large(self, size: int) -> None:
        self.stats.dropped += 1
        self._bad_log(
            "endpoint %s: NATS refused a message of %d bytes: larger than the server's max_payload "
            "(raise max_payload in nats-server's configuration)",
            self.name,
            size,
        )

    def status(self) -> dict[str, Any]:
        link = self.link.status() if self.link is not None else {"state": "connecting"}
        return {
            "state": link["state"],
            "url": link.get("url"),
            "last_error": link.get("last_error"),
            "waiting": len(self.outbox.items),
            "node": self.node,
            "sequence": self.seq,
            **self._stream_status(),
        }

    def _stream_status(self) -> dict[str, Any]:
        box = self.outbox
        if not isinstance(box, StreamOutbox):
            return {}
        return {
            "stream_ready": box.ready.is_set(),
            "acked": box.acked,
            "resent": box.resent,
            "last_failure": box.last_failure,
        }

    def stop(self) -> None:
        self._full_log.flush()

    # An endpoint without clients of its own: nothing to close or disconnect.
    @staticmethod
    def is_open(client: Any) -> bool:
        return True

    def disconnect_slow(self, client: Any) -> None:  # pragma: no cover - it has no clients
        pass

    def close_client(self, client: Any, code: int, reason: str) -> None:
        pass

    def close_clients(self, code: int, reason: str) -> None:
        pass

    async def from_edges(self, msg: Msg) -> None:
        """A client message from an edge (its upstream subject): to the sources of this
        endpoint's routes with ``upstream: true``, as from one client."""
        data = msg.data
        if len(data) > self.spec.max_message_size:
            self.malformed(
                self.edges.label, ValueError(f"a message of {len(data)} bytes exceeds max_message_size")
            )
            return
        kind = (msg.headers or {}).get(HEADER_TYPE)
        is_text = kind == TEXT if kind in (TEXT, BINARY) else valid_utf8(data)
        if is_text and not valid_utf8(data):
            self.stats.invalid_utf8 += 1
            self._bad_log(
                "endpoint %s: a text message from %s is not UTF-8: not forwarded", self.name, self.edges.label
            )
            return
        self.from_client(self.edges, data, is_text)


class NatsLinkListener:
    """A NATS endpoint's connection (what a listener is to the other kinds): publishes
    its endpoint's outbox and subscribes to its upstream subject."""

    def __init__(self, key: ListenerKey) -> None:
        self.key = key
        _, listen = key
        self.listen: NatsListen = listen
        self.link: NatsLink = listen.link
        self.subject: str = listen.subject
        self.upstream_subject: str = listen.upstream_subject
        self.endpoint: NatsEndpoint | None = None
        self.conn: Connection | None = None
        self.sub: Any = None
        self.accepting = True
        self.stream_task: asyncio.Task[None] | None = None
        self.generation = 0  # of the connection's client that self.sub belongs to

    def attach(self, endpoints: Sequence[Endpoint]) -> None:
        (endpoint,) = endpoints  # (one endpoint per subject: the loader sees to it)
        assert isinstance(endpoint, NatsEndpoint)
        old, self.endpoint = self.endpoint, endpoint
        endpoint.link = self
        if self.conn is not None and old is not endpoint:
            endpoint.outbox.run(self.conn)

    async def start(self) -> None:
        endpoint = self.endpoint
        assert endpoint is not None
        self.conn = Connection(
            self.link,
            f"endpoint {endpoint.name}",
            f"veylor endpoint {endpoint.name}",
            self._up,
            lambda: None,
            received=lambda: self.endpoint.stats.received if self.endpoint is not None else 0,
            on_stalled=self._stalled,
        )
        endpoint.outbox.run(self.conn)
        self.conn.start()

    def _stalled(self, reason: str) -> None:
        if self.endpoint is not None:
            _count_stall(self.endpoint.stats, reason)

    async def _up(self) -> None:
        conn = self.conn
        assert conn is not None and conn.nc is not None
        if self.generation != conn.generation:  # a new client (the last one stalled): subscribe again
            self.generation, self.sub = conn.generation, None
        box = self.endpoint.outbox if self.endpoint is not None else None
        if isinstance(box, StreamOutbox):
            box.stream_lost = lambda: self._ensure(conn, box)
            self._ensure(conn, box)
        if self.sub is None and self.accepting:
            self.sub = await conn.nc.subscribe(
                self.upstream_subject, cb=self._from_edges, **SUBSCRIPTION_LIMITS
            )
        if self.endpoint is not None:
            self.endpoint.outbox.kick()

    def _ensure(self, conn: Connection, box: StreamOutbox) -> None:
        if not box.ready.is_set() and self.stream_task is None and self.accepting:
            self.stream_task = asyncio.get_running_loop().create_task(self._ensure_stream(conn, box))

    async def _ensure_stream(self, conn: Connection, box: StreamOutbox) -> None:
        """Create the stream (or find it, capturing the subject), retrying until it is there:
        until then the messages wait in the outbox."""
        listen = self.listen
        assert listen.stream is not None
        warn = Throttled(log, interval=60.0)
        who = self.endpoint.name if self.endpoint is not None else listen.subject
        try:
            while True:
                nc = conn.nc
                if nc is not None and conn.connected:
                    problem = await _stream_problem(nc, listen)
                    if problem is None:
                        log.info("endpoint %s: publishing into JetStream stream %s", who, listen.stream)
                        box.ready.set()
                        box.wake.set()
                        return
                    box.last_failure = problem
                    warn(
                        "endpoint %s: JetStream stream %s: %s (messages wait meanwhile)",
                        who,
                        listen.stream,
                        problem,
                    )
                await asyncio.sleep(1.0)
        finally:
            warn.cancel()
            self.stream_task = None

    async def _from_edges(self, msg: Msg) -> None:
        if self.endpoint is not None and self.accepting:
            await self.endpoint.from_edges(msg)

    def stop_accepting(self) -> None:
        self.accepting = False

    async def close(self) -> None:
        self.accepting = False
        if self.stream_task is not None:
            self.stream_task.cancel()
        conn = self.conn
        if conn is None:
            return
        ep = self.endpoint
        if ep is not None:
            lost = await ep.outbox.close(conn)
            if lost:
                ep.stats.dropped += lost
                log.warning(
                    "endpoint %s: %s not published to NATS before it closed", ep.name, plural(lost, "message")
                )
        await conn.close()

    def status(self) -> dict[str, Any]:
        return self.conn.status() if self.conn is not None else {"state": "connecting"}

    def describe(self) -> str:
        who = f" for {self.endpoint.name}" if self.endpoint is not None else ""
        return f"NATS subject {self.subject} at {', '.join(self.link.safe_servers)}{who}"


class NatsSource:
    """Subscribes to a subject and hands each message to the fan-out, its frame type
    restored; counts the gaps in each publisher's sequence numbers."""

    def __init__(
        self,
        spec: NatsSourceSpec,
        dispatch: Dispatch,
        on_disconnect: Callable[[Any], None] = lambda s: None,
        stats: SourceStats | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.stats = stats if stats is not None else SourceStats()
        self._dispatch = dispatch
        self._on_disconnect = on_disconnect
        self.conn: Connection | None = None
        self.sub: Any = None
        self.outbox = Outbox(
            spec.upstream_subject or "",
            spec.upstream_queue,
            False,
            stats=self.stats,
            too_large=self._too_large,
        )
        self.sequences = SequenceTracker(time.monotonic, MAX_SUBJECTS_TRACKED)
        self._gap_log = CountedLog(log)
        self._outlier_log = Throttled(log, interval=60.0)
        self._invalid_log = Throttled(log)
        self._drop_log = Throttled(log)
        self._publisher_log = Throttled(log, logging.INFO, 60.0)
        # JetStream (spec.stream): the stream sequence of the last message delivered
        # (``position``; ``saved``: as last written to position_file, both set by
        # _load_position below), and where this run resumed (for /graph)
        self.position = self.saved = 0
        self.resumed_from: int | None = None
        self.duplicates = 0  # stream messages at or below the position (not delivered again)
        self._subscriber: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._saver: asyncio.TimerHandle | None = None
        self.generation = 0  # of the connection's client that self.sub belongs to
        self._stalled_at = -1  # the position at the last stall of the read loop (stream)
        self._stalled_here = 0  # ... and how many in a row there
        self._skip_next = False  # skip the message after the position (it ends the read loop)
        self._load_position(spec)

    @property
    def state(self) -> str:
        conn = self.conn
        return "stopped" if conn is None else conn.state

    def status(self) -> dict[str, Any]:
        status = self.conn.status() if self.conn is not None else {"state": "stopped"}
        status["url"] = f"{status.get('url', '')} {self.spec.subject}"
        if self.spec.stream:
            subscribed = self.sub is not None
            if status["state"] == "connected" and not subscribed:
                status["state"] = "subscribing"  # (connected; the stream is not there yet)
            status.update(
                stream=self.spec.stream,
                position=self.position,
                resumed_from=self.resumed_from,
                duplicates=self.duplicates,
            )
        return status

    def start(self) -> None:
        self.conn = Connection(
            self.spec.link,
            f"source {self.name}",
            f"veylor source {self.name}",
            self._up,
            self._down,
            received=lambda: self.stats.messages_in,
            on_stalled=self._stalled,
        )
        self.outbox.run(self.conn)
        self.conn.start()
        self.stats.attempts += 1

    async def restart(self, spec: NatsSourceSpec) -> None:
        await self.stop()
        if spec.stream != self.spec.stream:  # another stream: its sequence numbers are its own
            self._load_position(spec)
        moved = spec.position_file != self.spec.position_file
        self.spec = spec
        if moved and spec.stream and spec.position_file:
            self.saved = -1  # (the new file gets the position now, whatever the old one had)
            self._save()
        self.outbox.limit = spec.upstream_queue
        self.outbox.subject = spec.upstream_subject or ""
        self.start()

    async def stop(self) -> None:
        conn, self.conn = self.conn, None
        self.sub = None
        if self._subscriber is not None:
            self._subscriber.cancel()
            self._subscriber = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._saver is not None:
            self._saver.cancel()
            self._saver = None
        self._save()
        if conn is not None:
            lost = await self.outbox.close(conn)
            await conn.close()
            if lost:
                self.stats.queued_dropped += lost
                log.warning(
                    "source %s: %s not sent to NATS before it stopped",
                    self.name,
                    plural(lost, "client message"),
                )
        self._gap_log.flush()

    async def _up(self) -> None:
        conn = self.conn
        assert conn is not None and conn.nc is not None
        self.stats.connects += 1
        if self.generation != conn.generation:  # a new client (the last one stalled): subscribe again
            self.generation, self.sub = conn.generation, None
        if self.spec.stream:
            if self.sub is None and self._subscriber is None:
                self._subscriber = asyncio.get_running_loop().create_task(self._subscribe_stream(conn))
        elif self.sub is None:
            self.sub = await conn.nc.subscribe(
                self.spec.subject, queue=self.spec.queue or "", cb=self._message, **SUBSCRIPTION_LIMITS
            )
        self.outbox.kick()

    async def _subscribe_stream(self, conn: Connection) -> None:
        """An ordered consumer of the stream (in order, no gap: the library recreates it
        after a failover), from after the last message delivered; retried until the
        stream is there."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        spec = self.spec
        warn = Throttled(log, interval=60.0)
        try:
            while self.sub is None:
                nc = conn.nc
                if nc is None or not conn.connected:
                    await asyncio.sleep(1.0)
                    continue
                js = nc.jetstream(timeout=5.0)
                try:
                    info = await js.stream_info(spec.stream)
                    self._check_position(info.state.first_seq, info.state.last_seq)
                    self._skip_unreadable(info.state.last_seq)
                    if self.position:
                        config = ConsumerConfig(
                            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.position + 1
                        )
                        start = self.position + 1
                    elif spec.replay == "last":
                        config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST)
                        start = None
                    else:
                        if isinstance(spec.replay, tuple):
                            start = spec.replay[1]
                        else:
                            start = max(1, info.state.last_seq - int(spec.replay) + 1)
                        config = ConsumerConfig(
                            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
                        )
                    self.sub = await js.subscribe(
                        spec.subject,
                        stream=spec.stream,
                        ordered_consumer=True,
                        idle_heartbeat=1.0,
                        config=config,
                        cb=self._stream_message,
                        **SUBSCRIPTION_LIMITS,
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    warn(
                        "source %s: cannot read JetStream stream %s yet: %s (retrying)",
                        self.name,
                        spec.stream,
                        _describe(exc),
                    )
                    await asyncio.sleep(1.0)
                    continue
                self.resumed_from = start
                self._guard_resets(self.sub)
                log.info(
                    "source %s: reading JetStream stream %s from %s",
                    self.name,
                    spec.stream,
                    f"sequence {start}" if start else "its last message",
                )
                if self._watcher is None:
                    self._watcher = asyncio.get_running_loop().create_task(self._watch_stream(conn))
        finally:
            warn.cancel()
            self._subscriber = None

    def _guard_resets(self, sub: Any) -> None:
        """nats-py's ordered consumer takes a stored message with a status line in its
        headers (``NATS/1.0 100 ...``: anyone allowed to publish on the subject can store
        one) for a control message and recreates the consumer at that same message, again
        and again, thousands of consumers a second. After ``RESETS_TO_SKIP`` resets at
        one sequence within ``RESETS_WITHIN`` seconds, the reset goes past it: that message is
        skipped, counted as missed.
        (This reaches into the library's subscription, through :mod:`.compat`. Should
        a release rename what it hooks, :meth:`_watch_stream` still notices the silence and
        reads the stream again, but cannot get past such a message.)"""
        jsi = compat.ordered_consumer(sub)
        if jsi is None:
            return
        seen = [0, 0, 0.0]  # the sequence of the last resets, how many in a row, since when

        def reset_at(sseq: int | None) -> int | None:
            now = time.monotonic()
            if sseq is not None and sseq == seen[0] and now - seen[2] < RESETS_WITHIN:
                seen[1] += 1
                if seen[1] >= RESETS_TO_SKIP:
                    seen[0], seen[1] = sseq + 1, 0
                    if sseq > self.position:
                        self.position = sseq
                        self.stats.gaps += 1
                    log.warning(
                        "source %s: stream %s: message %d cannot be read (the client library takes it for "
                        "a control message): skipped, counted as missed",
                        self.name,
                        self.spec.stream,
                        sseq,
                    )
                    return sseq + 1
            else:
                seen[0], seen[1], seen[2] = sseq or 0, 1, now
            return sseq

        compat.guard_resets(jsi, reset_at)

    async def _watch_stream(self, conn: Connection) -> None:
        """Every ``STREAM_CHECK`` seconds: if the stream holds messages past the position
        and none came since the last look, read it again from after the position (a new
        consumer). Nothing is skipped here (a failover can take that long); a consumer in
        a loop on one message is :meth:`_guard_resets`'s."""
        spec = self.spec
        seen = self.position
        while True:
            await asyncio.sleep(STREAM_CHECK)
            if self.position != seen or self.sub is None or conn.nc is None or not conn.connected:
                seen = self.position
                continue
            try:
                info = await conn.nc.jetstream(timeout=5.0).stream_info(spec.stream)
            except Exception:  # (the cluster is failing over: next time)
                continue
            if info.state.last_seq <= self.position:
                continue
            log.warning(
                "source %s: stream %s holds messages past %d and none came for %.0fs: reading it again",
                self.name,
                spec.stream,
                self.position,
                STREAM_CHECK,
            )
            sub, self.sub = self.sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if self._subscriber is None:
                self._subscriber = asyncio.get_running_loop().create_task(self._subscribe_stream(conn))

    def _check_position(self, first: int, last: int) -> None:
        """Before resuming: a position past the stream's end (another stream of that name,
        or a damaged file) is forgotten, and messages the stream discarded (its limits)
        before this source read them are counted as missed."""
        if self.position > last:
            log.warning(
                "source %s: its position (%d) is past the end of stream %s (%d): starting as replay says",
                self.name,
                self.position,
                self.spec.stream,
                last,
            )
            self.position = 0
        elif self.position and first > self.position + 1:
            missed = first - self.position - 1
            self.stats.gaps += missed
            log.warning(
                "source %s: %d messages were discarded by stream %s (its limits) before they were read; "
                "resuming at %d",
                self.name,
                missed,
                self.spec.stream,
                first,
            )
            self.position = first - 1

    async def _stream_message(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.position:
            self.duplicates += 1
            return
        if self.resumed_from is None:
            self.resumed_from = seq
        self.position = seq
        if self.spec.position_file and self._saver is None:
            self._saver = asyncio.get_running_loop().call_later(SAVE_EVERY, self._save)
        await self._message(msg)

    def _load_position(self, spec: NatsSourceSpec) -> None:
        """The position kept in ``spec``'s position_file (0: none, or no stream)."""
        position = 0
        if spec.stream and spec.position_file:
            position = _read_position(spec.position_file, self.name, spec.stream)
        self.position = self.saved = position

    def _save(self) -> None:
        """Keep the position in ``position_file`` (a rename: never half written)."""
        self._saver = None
        path = self.spec.position_file
        if not path or not self.spec.stream or self.position == self.saved:
            return
        try:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as fh:
                fh.write(f"{self.spec.stream} {self.position}\n")
            os.replace(tmp, path)
            self.saved = self.position
        except OSError as exc:
            self._drop_log(
                "source %s: cannot write position_file %s: %s", self.name, path, exc.strerror or exc
            )

    def _down(self) -> None:
        self.stats.disconnects += 1
        self._on_disconnect(self)

    def _stalled(self, reason: str) -> None:
        """The connection stopped reading (it is made again). Reading a stream, the
        client library's read loop ending ``STALLS_TO_SKIP`` times in a row at one
        position is a stored message it cannot parse (nats-py ends its read loop on it:
        see :mod:`.compat`), which every new connection would get first: skipped
        (once the stream is seen to hold it), counted as missed."""
        _count_stall(self.stats, reason)
        if not self.spec.stream or reason != READ_LOOP:
            return
        if self.position != self._stalled_at:
            self._stalled_at, self._stalled_here = self.position, 0
        self._stalled_here += 1
        if self._stalled_here >= STALLS_TO_SKIP:
            self._stalled_here = 0
            self._skip_next = True  # (once the stream is seen to hold it: _skip_unreadable)

    def _skip_unreadable(self, last: int) -> None:
        """After :meth:`_stalled`: the message after the position, if the stream holds it."""
        if not self._skip_next:
            return
        self._skip_next = False
        if last <= self.position:
            return
        self.position += 1
        self._stalled_at = self.position
        self.stats.gaps += 1
        log.warning(
            "source %s: stream %s: message %d stops the client library from reading (it cannot parse it): "
            "skipped, counted as missed",
            self.name,
            self.spec.stream,
            self.position,
        )

    async def _message(self, msg: Msg) -> None:
        data = msg.data
        stats = self.stats
        stats.messages_in += 1
        stats.bytes_in += len(data)
        headers = msg.headers
        if headers:
            seq = headers.get(HEADER_SEQ)
            if seq is not None:
                self._sequence(msg.subject, headers.get(HEADER_NODE), seq)
            kind = headers.get(HEADER_TYPE)
            if kind != TEXT and kind != BINARY:  # (not a type Veylor writes: told by the bytes)
                kind = None
        else:
            kind = None
        if len(data) > self.spec.max_message_size:
            stats.oversize += 1
            self._drop_log(
                "source %s: dropped a message of %d bytes on %s: larger than max_message_size",
                self.name,
                len(data),
                msg.subject,
            )
            return
        if kind is None:
            is_text = valid_utf8(data)  # (not from Veylor: text if it reads as text)
        else:
            is_text = kind != BINARY
            if is_text and not valid_utf8(data):
                stats.invalid_utf8 += 1
                self._invalid_log(
                    "source %s: dropped a text message of %d bytes on %s that is not valid UTF-8",
                    self.name,
                    len(data),
                    msg.subject,
                )
                return
        self._dispatch(self.name, data, is_text)

    def _sequence(self, subject: str, node: str | None, seq_text: str) -> None:
        """Follow the publisher's sequence numbers on ``subject``
        (:class:`~veylor.sequence.SequenceTracker`): a jump its rate explains is that
        many messages lost, counted and logged; one it does not explain, a message under
        another node id, and late ones are not followed (one forged message changes
        nothing), until several in a row agree on a new sequence (a restarted
        publisher: not a loss). Only plain decimal numbers count (``int()`` would take
        "1_000" and other scripts' digits)."""
        if not (seq_text.isascii() and seq_text.isdigit() and len(seq_text) <= 19):
            return
        verdict = self.sequences.observe(subject, node, int(seq_text))
        seen = verdict.seen
        if seen is Seen.NEXT or seen is Seen.FIRST:
            pass
        elif seen is Seen.LOSS:
            self.stats.gaps += verdict.n
            self._gap_log.add(
                verdict.n,
                "source %s: messages lost between the publisher and here (gaps in its sequence on %s)",
                self.name,
                subject,
            )
        elif seen is Seen.LATE:
            self.stats.out_of_order += 1
        elif seen is Seen.IMPLAUSIBLE:
            self._outlier_log(
                "source %s: a message on %s is %d ahead in its publisher's sequence, more than the "
                "publisher's rate can explain (forged?): not counted as missed; still following the "
                "publisher's sequence",
                self.name,
                subject,
                verdict.n,
            )
        elif seen is Seen.NEW:
            self.stats.publisher_changes += 1
            if verdict.new_id:
                self._publisher_log(
                    "source %s: a new publisher on %s (it restarted, or another took over)",
                    self.name,
                    subject,
                )
            else:
                self._publisher_log(
                    "source %s: the publisher's sequence on %s moved by %+d and the messages after it "
                    "agree (it restarted): following it, not counted as missed",
                    self.name,
                    subject,
                    verdict.n,
                )
        if verdict.dropped:
            self.stats.outliers += verdict.dropped
            self._outlier_log(
                "source %s: %s on %s did not fit the publisher's sequence and the messages after them "
                "did not follow them (forged, or another publisher's): delivered, not counted",
                self.name,
                plural(verdict.dropped, "message"),
                subject,
            )

    def _too_large(self, size: int) -> None:
        self.stats.queued_dropped += 1
        self._drop_log(
            "source %s: NATS refused a client message of %d bytes: larger than the server's max_payload",
            self.name,
            size,
        )

    def send(self, data: bytes, is_text: bool) -> None:
        """A client's message to the core's endpoint (its upstream subject), queued while
        disconnected (bounded by ``upstream_queue``)."""
        subject = self.spec.upstream_subject
        if subject is None:  # (the loader refuses routes that would send here)
            self.stats.queued_dropped += 1
            return
        if not self.outbox.add(data, is_text):
            self.stats.queued_dropped += 1
            self._drop_log(
                "source %s: %s client messages wait for NATS (upstream_queue): dropped one",
                self.name,
                self.spec.upstream_queue,
            )
            return
        self.outbox.kick()


KIND = RuntimeKind(endpoint=NatsEndpoint, listener=NatsLinkListener, source=NatsSource)
