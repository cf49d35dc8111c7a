"""Sources: one upstream WebSocket connection each, kept up with backoff and jitter."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State

from ..backoff import backoff_delay
from ..config.model import SourceSpec
from .frames import DataFrames, is_data
from .util import Throttled

log = logging.getLogger("veylor.source")
OPEN = State.OPEN

STABLE_AFTER = 10.0  # a connection that stayed up this long resets the backoff
UPSTREAM_WRITE_LIMIT = 4 * 2**20  # client->source bytes buffered on a live connection before dropping
CLOSE_TIMEOUT = 2.0

Dispatch = Callable[[str, bytes, bool], None]


class UpstreamConnection(DataFrames, ClientConnection):
    """A client connection whose data frames go straight to the fan-out as they are parsed.

    websockets' default path queues frames and has ``recv()`` decode text to ``str``;
    the relay needs neither: it takes the payload bytes and the frame type, and
    decodes only if a filter asks (see :class:`veylor.message.Message`).
    """

    on_message: Callable[[bytes, bool], None] | None = None
    _early: list[tuple[bytes, bool]] | None = None

    def process_event(self, event: Any) -> None:
        if not is_data(event):
            super().process_event(event)
            return
        message = self.message_of(event)
        if message is None:
            return
        if self.on_message is not None:
            self.on_message(*message)
        else:  # frames that arrived with the handshake response, before the source attached
            if self._early is None:
                self._early = []
            self._early.append(message)

    def attach(self, on_message: Callable[[bytes, bool], None]) -> None:
        self.on_message = on_message
        early, self._early = self._early or [], None
        for data, is_text in early:
            on_message(data, is_text)


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
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self._dispatch = dispatch
        self._on_disconnect = on_disconnect
        self.conn: UpstreamConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.queue: collections.deque[tuple[bytes, bool]] = collections.deque()
        self.state = "connecting"
        self.next_attempt_at: float | None = None  # wall clock
        self.last_error: str | None = None
        self.connected_since: float | None = None
        # Counters
        self.connects = 0
        self.attempts = 0
        self.failures = 0  # consecutive failed attempts (drives the backoff)
        self.messages_in = 0
        self.bytes_in = 0
        self.sent_up = 0
        self.queued_dropped = 0
        self._drop_log = Throttled(log)

    @property
    def url(self) -> str:
        return self.spec.safe_url

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
        self.state = "stopped"

    def _on_message(self, data: bytes, is_text: bool) -> None:
        self.messages_in += 1
        self.bytes_in += len(data)
        self._dispatch(self.name, data, is_text)

    # ------------------------------------------------------------------ client -> source

    def send(self, data: bytes, is_text: bool) -> None:
        """Send a client's message upstream now, or queue it (bounded) while disconnected."""
        conn = self.conn
        if conn is not None and conn.protocol.state is OPEN:
            if conn.transport.get_write_buffer_size() > UPSTREAM_WRITE_LIMIT:
                self.queued_dropped += 1
                self._drop_log(
                    "source %s (%s): upstream is not reading: dropped a client message", self.name, self.url
                )
                return
            self._write(conn, data, is_text)
            return
        if len(self.queue) >= self.spec.upstream_queue:
            self.queued_dropped += 1
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
        self.sent_up += 1

    # ------------------------------------------------------------------ connection loop

    async def _run(self) -> None:
        spec = self.spec
        loop = asyncio.get_running_loop()
        try:
            while True:
                self.state = "connecting"
                self.attempts += 1
                self.next_attempt_at = None
                log.log(
                    logging.INFO if self.failures == 0 else logging.DEBUG,
                    "source %s: connecting to %s (attempt %d)",
                    self.name,
                    self.url,
                    self.attempts,
                )
                up_since = None
                try:
                    conn = await connect(
                        spec.url,
                        additional_headers=list(spec.headers),
                        subprotocols=list(spec.subprotocols) or None,  # type: ignore[arg-type]
                        open_timeout=spec.open_timeout,
                        ping_interval=spec.ping_interval,
                        ping_timeout=spec.ping_timeout,
                        close_timeout=CLOSE_TIMEOUT,
                        max_size=spec.max_message_size,
                        user_agent_header="Veylor",
                        proxy=None,
                        create_connection=UpstreamConnection,
                        logger=logging.getLogger("veylor.websockets"),
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.last_error = _describe(exc)
                    log.warning("source %s: cannot connect to %s: %s", self.name, self.url, self.last_error)
                else:
                    assert isinstance(conn, UpstreamConnection)
                    up_since = loop.time()
                    await self._connected(conn)
                    up_for = loop.time() - up_since
                    self.last_error = f"closed (code {conn.close_code}{_reason(conn)}) after {up_for:.1f}s"
                    log.warning("source %s: connection to %s %s", self.name, self.url, self.last_error)
                    self._on_disconnect(self)
                if up_since is not None and loop.time() - up_since >= STABLE_AFTER:
                    self.failures = 0
                self.failures += 1
                if spec.reconnect.max_attempts and self.failures >= spec.reconnect.max_attempts:
                    log.error(
                        "source %s: giving up on %s after %d failed attempts (reconnect.max_attempts)",
                        self.name,
                        self.url,
                        self.failures,
                    )
                    self.state = "stopped"
                    return
                delay = backoff_delay(spec.reconnect, self.failures)
                self.next_attempt_at = time.time() + delay
                self.state = "backoff"
                log.info("source %s: reconnecting to %s in %.2fs", self.name, self.url, delay)
                await asyncio.sleep(delay)
        finally:
            self.next_attempt_at = None

    async def _connected(self, conn: UpstreamConnection) -> None:
        """Relay until the connection closes; on cancellation close it (1001), bounded."""
        self.conn = conn
        self.connects += 1
        self.connected_since = time.time()
        self.state = "connected"
        log.info(
            "source %s: connected to %s%s",
            self.name,
            self.url,
            f" (subprotocol {conn.subprotocol})" if conn.subprotocol else "",
        )
        try:
            for message in self.spec.on_connect:
                data = message.data
                if isinstance(data, str):
                    conn.protocol.send_text(data.encode())
                else:
                    conn.protocol.send_binary(data)
            conn.send_data()
            queued = len(self.queue)
            while self.queue and conn.protocol.state is OPEN:
                self._write(conn, *self.queue.popleft())
            if queued:
                log.info("source %s: sent %d client messages queued while it was down", self.name, queued)
            conn.attach(self._on_message)
            await conn.wait_closed()
        except asyncio.CancelledError:
            await _close_bounded(conn)
            raise
        finally:
            self.conn = None
            self.connected_since = None


async def _close_bounded(conn: ClientConnection) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT + 0.5):
            await conn.close(1001, "Veylor is shutting down")
    except (TimeoutError, Exception):
        conn.transport.abort()


def _reason(conn: ClientConnection) -> str:
    return f", {conn.close_reason}" if conn.close_reason else ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"server answered HTTP {exc.response.status_code}"
    if isinstance(exc, InvalidURI):
        return f"invalid URL: {exc}"
    if isinstance(exc, InvalidHandshake):
        return f"handshake failed: {exc}"
    if isinstance(exc, TimeoutError):
        return "timed out (open_timeout)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"
