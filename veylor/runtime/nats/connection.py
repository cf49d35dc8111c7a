"""One NATS connection of a component (made with ``nats-py``, async), kept up and watched.

Until the first connection succeeds, the library tries each server every
``RECONNECT_WAIT`` seconds (its errors logged once a minute, with a count); an error it
gives up on is retried by Veylor with backoff. After it, reconnection and failover
between the cluster's servers are the library's. A component never fails Veylor's start
or a reload because NATS is down.

Each connection is watched (:meth:`Connection._watch`): one on which nothing arrived
and no PONG answered Veylor's ping for ``stall_timeout``, or whose client library
stopped reading (:func:`..compat.reader_ended`), is closed and made again, counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from ...backoff import backoff_delay
from ...config.common import Reconnect
from ...config.natsspec import NatsLink, mask_url
from ...observe.logs import SECRETS
from ...report import plural
from .. import compat
from ..stats import EndpointStats, SourceStats
from ..util import Throttled

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
TEXT, BINARY = "text", "binary"
# What the library may hold for a subscription that Veylor has not taken yet (a flood on
# the subject): beyond it, the library drops (a slow consumer, reported to the error
# callback) and the gap shows in the sequence numbers. Its defaults are 512k and 128 MiB.
PENDING_MSGS, PENDING_BYTES = 65_536, 32 * 2**20


def _ssl(link: NatsLink) -> ssl.SSLContext | None:
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
        on_up: Callable[[], Awaitable[None]],
        on_down: Callable[[], None],
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
                await self._back_off(nc, describe(exc))
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
        self.last_error = describe(exc)
        self._error_log("%s: NATS: %s", self.who, self.last_error)

    async def _disconnected(self) -> None:
        if self.state == "closed" or self.nc is None:  # (nats-py calls it for a failed first attempt too)
            return
        self.state = "reconnecting"
        self.connected_since = None
        error = self.nc.last_error
        if error is not None:
            self.last_error = describe(error)
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
        async with asyncio.timeout(timeout):  # (the library takes whole seconds)
            await nc.rtt(math.ceil(timeout))
    except Exception:
        return None
    return asyncio.get_running_loop().time()


async def _close_quietly(nc: NatsClient) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await nc.close()
    except Exception:  # (closing a connection that never opened, or a dead one)
        pass


def describe(exc: BaseException) -> str:
    """An error of the client library, for people (credentials in URLs masked)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, nats.errors.NoServersError):
        text = "no server could be reached"
    return mask_url(text) if "://" in text else text


def count_stall(stats: SourceStats | EndpointStats, reason: str) -> None:
    """Count a replaced connection under its reason (``veylor_*_stalls_total``)."""
    if reason == READ_LOOP:
        stats.stalled_read_loop += 1
    elif reason == NO_PONG:
        stats.stalled_no_pong += 1
