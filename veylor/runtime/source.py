"""The WebSocket source kind: one upstream connection each, kept up with backoff and jitter."""

from __future__ import annotations

import asyncio
import collections
import errno
import functools
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI, WebSocketException

from ..backoff import backoff_delay
from ..config.access import SourceTLS
from ..config.websocketspec import SourceSpec
from ..observe.logs import MASK, SECRETS, TRACE_LOGGER, UPSTREAM_LOGGER, preview, tracing
from ..report import plural
from .frames import valid_utf8
from .kinds import RuntimeKind
from .stats import SourceStats
from .upstream import UpstreamConnection, open_upstream
from .util import Throttled
from .wsconn import OPEN

log = logging.getLogger("veylor.source")
trace_log = logging.getLogger(TRACE_LOGGER)

STABLE_AFTER = 10.0  # a connection that stayed up this long resets the backoff
UPSTREAM_WRITE_LIMIT = 4 * 2**20  # client->source bytes buffered on a live connection before dropping
CLOSE_TIMEOUT = 2.0
SUMMARY_INTERVAL = 60.0  # seconds between "still cannot connect" lines of one source

Dispatch = Callable[[str, bytes, bool], None]


class Source:
    """Keeps one connection to an upstream feed and hands its messages to the fan-out.

    States: ``connecting``, ``connected``, ``backoff`` (with ``next_attempt_at``),
    ``stopped``.
    """

    def __init__(
        self,
        spec: SourceSpec,
        dispatch: Dispatch,
        on_disconnect: Callable[[Source], None] = lambda s: None,
        stats: SourceStats | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.stats = stats if stats is not None else SourceStats()
        self._dispatch = dispatch
        self._on_disconnect = on_disconnect
        self.conn: UpstreamConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.queue: collections.deque[tuple[bytes, bool]] = collections.deque()
        self.state = "connecting"
        self.next_attempt_at: float | None = None  # wall clock
        self.last_error: str | None = None
        self.connected_since: float | None = None
        self.failures = 0  # consecutive failed attempts (drives the backoff)
        self._drop_log = Throttled(log)
        self._invalid_log = Throttled(log)
        self._attempts = AttemptLog(self)

    @property
    def url(self) -> str:
        return self.spec.safe_url

    def status(self) -> dict[str, Any]:
        conn = self.conn
        latency = conn.latency if conn is not None and self.state == "connected" else None
        return {
            "state": self.state,
            "url": self.url,
            "connected_since": self.connected_since,
            "next_attempt_at": self.next_attempt_at,
            "ping_rtt": latency,  # seconds, from the last keepalive ping (None: none yet)
            "failures": self.failures,
            "last_error": self._masked(self.last_error) if self.last_error else None,
        }

    def _masked(self, text: str) -> str:
        """``text`` without this source's secrets (an upstream may echo its API key in a
        close reason) nor any other the log masks."""
        for secret in sorted(self.spec.secrets(), key=len, reverse=True):
            text = text.replace(secret, MASK)
        return SECRETS.mask(text)

    def start(self) -> None:
        self.state = "connecting"
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"veylor-source-{self.name}")

    async def restart(self, spec: SourceSpec) -> None:
        """Reconnect with new settings; queued client messages and counters are kept."""
        await self.stop()
        self.spec = spec
        self.failures = 0
        self.start()

    async def stop(self) -> None:
        """Stop reconnecting and close the connection (1001), bounded in time."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # pragma: no cover - the loop catches everything; belt and braces
                log.exception("source %s: its connection loop had failed", self.name)
        self.state = "stopped"

    def _on_message(self, data: bytes, is_text: bool) -> None:
        self.stats.messages_in += 1
        self.stats.bytes_in += len(data)
        if is_text and not valid_utf8(data):
            self._invalid_text(data)
            return
        self._dispatch(self.name, data, is_text)

    def _invalid_text(self, data: bytes) -> None:
        """A text message that is not UTF-8 (the upstream broke RFC 6455): relayed as text,
        it would make every standard client close (1007). Dropped, counted, logged."""
        self.stats.invalid_utf8 += 1
        self._invalid_log(
            "source %s (%s): dropped a text message of %d bytes that is not valid UTF-8 "
            "(%d so far; clients would close on it)",
            self.name,
            self.url,
            len(data),
            self.stats.invalid_utf8,
        )

    # ------------------------------------------------------------------ client -> source

    def send(self, data: bytes, is_text: bool) -> None:
        """Send a client's message upstream now, or queue it (bounded) while disconnected."""
        conn = self.conn
        if conn is not None and conn.protocol.state is OPEN:
            if conn.transport.get_write_buffer_size() > UPSTREAM_WRITE_LIMIT:
                self.stats.queued_dropped += 1
                self._drop_log(
                    "source %s (%s): upstream is not reading: dropped a client message", self.name, self.url
                )
                return
            self._write(conn, data, is_text)
            return
        if len(self.queue) >= self.spec.upstream_queue:
            self.stats.queued_dropped += 1
            self._drop_log(
                "source %s (%s): down and its upstream_queue (%d) is full: dropped a client message",
                self.name,
                self.url,
                self.spec.upstream_queue,
            )
            return
        self.queue.append((data, is_text))

    def _write(self, conn: UpstreamConnection, data: bytes, is_text: bool) -> None:
        if is_text:
            conn.protocol.send_text(data)
        else:
            conn.protocol.send_binary(data)
        conn.send_data()
        self.stats.sent_up += 1
        if trace_log.isEnabledFor(logging.DEBUG):
            trace_log.debug(
                "source %s > %s %d bytes from a client: %s",
                self.name,
                "text" if is_text else "binary",
                len(data),
                preview(data),
            )

    # ------------------------------------------------------------------ connection loop

    async def _run(self) -> None:
        """Connect, relay, reconnect with backoff: forever (or until ``max_attempts``).

        Whatever an attempt does (refuses, fails the handshake, closes at once, makes
        an ``on_connect`` send fail, or hits a bug in Veylor), it ends as a failed or
        closed attempt with its reason logged, and the loop goes on.
        """
        spec = self.spec
        loop = asyncio.get_running_loop()
        try:
            while True:
                self.state = "connecting"
                self.stats.attempts += 1
                self.next_attempt_at = None
                if self.failures == 0:
                    log.info("source %s: connecting to %s", self.name, self.url)
                up_since: float | None = None
                connected = False
                try:
                    conn = await self._connect()
                    connected = True
                    up_since = loop.time()
                    await self._connected(conn)
                    self.last_error = _closed(conn, loop.time() - up_since)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    current = self.conn
                    if current is not None and current.close_code is not None and up_since is not None:
                        # It closed under us (during on_connect): say how it closed.
                        self.last_error = _closed(current, loop.time() - up_since)
                    else:
                        self.last_error = _describe(exc, secure=self.spec.url.startswith("wss:"))
                        if not _expected(exc):
                            self._attempts.unexpected()
                finally:
                    self.conn = None
                    self.connected_since = None
                    if connected:  # (a restart's cancellation too)
                        self.stats.disconnects += 1
                if connected:
                    self._on_disconnect(self)
                if up_since is not None and loop.time() - up_since >= STABLE_AFTER:
                    self.failures = 0
                self.failures += 1
                if spec.reconnect.max_attempts and self.failures >= spec.reconnect.max_attempts:
                    log.error(
                        "source %s: giving up on %s after %d failed attempts (reconnect.max_attempts); "
                        "last error: %s",
                        self.name,
                        self.url,
                        self.failures,
                        self.last_error,
                    )
                    self.state = "stopped"
                    return
                delay = backoff_delay(spec.reconnect, self.failures)
                self.next_attempt_at = time.time() + delay
                self.state = "backoff"
                self._attempts.failed(connected, delay)
                await asyncio.sleep(delay)
        finally:
            self.next_attempt_at = None

    async def _connect(self) -> UpstreamConnection:
        spec = self.spec
        context = None
        if spec.tls is not None and spec.url.startswith("wss:"):
            context = _context(spec.tls)
            if not spec.tls.verify:
                log.warning(
                    "source %s: connecting to %s WITHOUT checking its TLS certificate (tls.verify: false): "
                    "anyone on the path can read and change this feed",
                    self.name,
                    self.url,
                )
        conn = await open_upstream(
            spec.url,
            headers=spec.headers,
            subprotocols=spec.subprotocols,
            open_timeout=spec.open_timeout,
            ping_interval=spec.ping_interval,
            ping_timeout=spec.ping_timeout,
            close_timeout=CLOSE_TIMEOUT,
            max_size=spec.max_message_size,
            context=context,
            logger=logging.getLogger(UPSTREAM_LOGGER),
        )
        return conn

    async def _connected(self, conn: UpstreamConnection) -> None:
        """Relay until the connection closes; on cancellation close it (1001), bounded."""
        self.conn = conn
        self.stats.connects += 1
        self.connected_since = time.time()
        self.state = "connected"
        log.info(
            "source %s: connected to %s%s%s",
            self.name,
            self.url,
            f" (subprotocol {conn.subprotocol})" if conn.subprotocol else "",
            self._attempts.connected(),
        )
        try:
            trace = tracing()
            for i, message in enumerate(self.spec.on_connect, 1):
                data = message.data
                if isinstance(data, str):
                    payload = data.encode()
                    conn.protocol.send_text(payload)
                else:
                    payload = data
                    conn.protocol.send_binary(data)
                if trace:
                    trace_log.debug(
                        "source %s > on_connect message %d (%d bytes, not shown)", self.name, i, len(payload)
                    )
            conn.send_data()
            queued = len(self.queue)
            while self.queue and conn.protocol.state is OPEN:
                self._write(conn, *self.queue.popleft())
            if queued:
                log.info("source %s: sent %d client messages queued while it was down", self.name, queued)
            conn.attach(self._on_message_traced if trace else self._on_message)
            await conn.wait_closed()
        except asyncio.CancelledError:
            await _close_bounded(conn)
            raise
        except Exception:
            # The connection broke under us (an on_connect send on a connection that
            # just closed, say): make sure it is gone, then let the loop reconnect.
            conn.transport.abort()
            raise

    def _on_message_traced(self, data: bytes, is_text: bool) -> None:
        trace_log.debug(
            "source %s < %s %d bytes: %s",
            self.name,
            "text" if is_text else "binary",
            len(data),
            preview(data),
        )
        self._on_message(data, is_text)


class AttemptLog:
    """How one source's connection attempts are told in the log: a lost connection and
    the first failure of a streak at WARNING, later failures at DEBUG with a summary at
    INFO every ``SUMMARY_INTERVAL`` seconds, an unexpected error's traceback at most as
    often, and the recovery with the number of attempts it took. (A source whose upstream
    is down tries every few seconds for hours: a line each would bury everything else.)"""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._bug_logged_at = -SUMMARY_INTERVAL  # when an unexpected error's traceback was last logged
        self._streak_since: float | None = None  # wall clock of the first failure of a streak
        self._streak_failures = 0
        self._summary_at = 0.0

    def connected(self) -> str:
        """The end of a streak: what the "connected" line adds (the attempts it took)."""
        failures = self.source.failures
        after = f" after {plural(failures, 'failed attempt')}" if self._streak_since is not None else ""
        self._streak_since = None
        return after

    def unexpected(self) -> None:
        """An error nobody foresaw (in Veylor or in a library, e.g. an upstream that
        speaks before the handshake): with its traceback at most once a minute per
        source, otherwise in one line at DEBUG, so that a flapping upstream cannot flood
        the log."""
        source = self.source
        now = time.monotonic()
        if now - self._bug_logged_at < SUMMARY_INTERVAL:
            log.debug("source %s: unexpected error again: %s", source.name, source.last_error)
            return
        self._bug_logged_at = now
        log.error(
            "source %s: unexpected error (please report it, with this traceback); reconnecting",
            source.name,
            exc_info=True,
        )

    def failed(self, connected: bool, delay: float) -> None:
        """A lost connection and the first failure of a streak at WARNING; later failures
        at DEBUG, with a summary at INFO at most every ``SUMMARY_INTERVAL`` seconds."""
        source = self.source
        now = time.monotonic()
        if connected:
            log.warning(
                "source %s: connection to %s %s; reconnecting in %.2fs",
                source.name,
                source.url,
                source.last_error,
                delay,
            )
            self._streak_since = None
            return
        if self._streak_since is None:
            self._streak_since = time.time()
            self._streak_failures = 1
            self._summary_at = now
            log.warning(
                "source %s: cannot connect to %s: %s; retrying in %.2fs "
                "(further failures are summarized every %.0fs; -v shows each)",
                source.name,
                source.url,
                source.last_error,
                delay,
                SUMMARY_INTERVAL,
            )
            return
        self._streak_failures += 1
        log.debug(
            "source %s: attempt %d to %s failed: %s; retrying in %.2fs",
            source.name,
            source.stats.attempts,
            source.url,
            source.last_error,
            delay,
        )
        if now - self._summary_at >= SUMMARY_INTERVAL:
            self._summary_at = now
            log.info(
                "source %s: still cannot connect to %s: %d attempts failed since %s; last error: %s; "
                "next attempt in %.1fs",
                source.name,
                source.url,
                self._streak_failures,
                time.strftime("%H:%M:%S", time.localtime(self._streak_since)),
                source.last_error,
                delay,
            )


async def _close_bounded(conn: UpstreamConnection) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT + 0.5):
            await conn.close(1001, "Veylor is shutting down")
    except (TimeoutError, Exception):
        conn.transport.abort()


def _closed(conn: UpstreamConnection, up_for: float) -> str:
    reason = f", {conn.close_reason}" if conn.close_reason else ""
    return f"closed (code {conn.close_code}{reason}) after {up_for:.1f}s"


def _expected(exc: BaseException) -> bool:
    """Whether ``exc`` is something an upstream or the network can do (not a Veylor bug)."""
    return isinstance(exc, OSError | TimeoutError | WebSocketException | EOFError)


def _describe(exc: BaseException, secure: bool = False) -> str:
    """One line saying what went wrong with a connection attempt, never empty."""
    if isinstance(exc, InvalidStatus):
        return f"server answered HTTP {exc.response.status_code}"
    if isinstance(exc, InvalidURI):
        return f"invalid URL: {exc.msg}"  # not str(exc): it holds the URI, credentials and all
    if isinstance(exc, InvalidHandshake):
        return f"handshake failed: {exc}"
    if isinstance(exc, TimeoutError):
        return "timed out (open_timeout)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason or exc}"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").replace("_", " ").lower()
        if exc.reason == "WRONG_VERSION_NUMBER":
            return "TLS handshake failed: the server does not speak TLS (a ws:// server at a wss:// URL?)"
        return f"TLS handshake failed: {reason or exc}"
    if isinstance(exc, ConnectionResetError | EOFError) and secure:
        return (
            "connection reset during the TLS handshake (the server closed it: does it speak TLS? "
            "a ws:// server at a wss:// URL?)"
        )
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if text:
            return text
        name = errno.errorcode.get(exc.errno or 0, "") if exc.errno else ""
        return f"{type(exc).__name__}{f' ({name})' if name else ''}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@functools.lru_cache(maxsize=64)
def _context(tls: SourceTLS) -> ssl.SSLContext:
    """One client context per TLS setting (loading CAs takes milliseconds: not at every
    reconnect, on the event loop); a CA file changed on disk is a new setting."""
    return tls.context()


KIND = RuntimeKind(source=Source)
