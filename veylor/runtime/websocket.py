"""The WebSocket endpoint kind: endpoints at paths of shared host:port listeners.

Veylor writes downstream WebSocket data frames itself (built once in
:mod:`veylor.runtime.wire`) straight to the connection's transport, bypassing
``Connection.send()``: websockets' ``send()`` and ``broadcast()`` build one frame per
connection, and ``send()`` costs a coroutine per message. This stays correct because
everything runs on the event loop thread: every write, ours and the library's
(ping, pong, close), is a whole frame, so frames never interleave mid-frame; and we
write only while the connection's protocol state is OPEN, so nothing follows a close
frame. Clients that negotiated permessage-deflate (where ``compression`` is on) are
the exception: websockets frames for them, one client at a time.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import struct
import termios
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..config.model import EndpointSpec, WebSocketListen, format_size
from ..observe.logs import DOWNSTREAM_LOGGER
from .budget import Budget
from .endpoints import (
    BACKLOG,
    CLOSE_GRACE,
    LOSS_LOG_INTERVAL,
    Endpoint,
    StartupError,
    os_reason,
    set_send_buffer,
)
from .frames import NO_RECEIVE_QUEUE, DataFrames, is_data, valid_utf8
from .kinds import RuntimeKind
from .stats import EndpointStats
from .wire import WS

log = logging.getLogger("veylor.endpoint")
OPEN = State.OPEN
PING, PONG = Opcode.PING, Opcode.PONG
SLOW_CLOSE_CHECK = 0.25  # seconds between checks that a closing client still drains its buffer
CLOSE_DEADLINE = 10.0  # seconds a closing client may take to drain its buffer and answer, at most
CLOSE_STALLED = 1.0  # seconds a closing client may read nothing before it is aborted
MAX_CONTROL_FRAMES = 50  # pings and pongs a client may send per second; more closes it (1008)


class DownstreamConnection(DataFrames, ServerConnection):
    """A client connection on a WebSocket endpoint.

    Incoming data frames go straight to the endpoint (no per-message coroutine, no
    receive queue); the endpoint learns of the connection before the handshake
    completes, so ``max_clients`` counts handshakes in progress too.
    """

    endpoint: WebSocketEndpoint | None = None
    dropped = 0  # messages dropped for it while it was slow (slow_client: drop)
    dropped_logged_at = -LOSS_LOG_INTERVAL
    shed = False  # the process-wide limit is reached: no data for it until it drains
    last_seen = 0.0  # loop time of the last frame received (any kind): the keepalive's clock
    control_window = 0.0  # start of the current second of control-frame counting
    control_count = 0
    control_bytes = 0  # pong bytes queued for it since its buffer was last empty

    label = "?"  # the client's address, set when the TCP connection is made (read later,
    # the transport may be closed already)

    def process_event(self, event: Any) -> None:
        now = self.last_seen = self.loop.time()
        if not is_data(event):
            opcode = getattr(event, "opcode", None)  # the handshake's events are not frames
            if opcode is PING or opcode is PONG:
                if now - self.control_window >= 1.0:
                    self.control_window, self.control_count = now, 0
                self.control_count += 1
                if opcode is PING:
                    self.control_bytes += len(event.data) + 2  # the pong websockets will queue
                if self.control_count > MAX_CONTROL_FRAMES and self.endpoint is not None:
                    self.endpoint.control_flood(self)
                    return
            super().process_event(event)
            return
        message = self.message_of(event)
        ep = self.endpoint
        if message is None or ep is None or self.protocol.state is not OPEN:
            return  # incomplete, or the client is being closed: nothing more goes upstream
        data, is_text = message
        if is_text and not valid_utf8(data):
            ep.invalid_text(self.label)
            close_websocket(self, 1007, "invalid UTF-8 in a text frame")
            return
        ep.from_client(self.label, data, is_text)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # websockets answers pings: pongs are queued for the client
        ep = self.endpoint
        if ep is None:
            return
        size = self.transport.get_write_buffer_size()
        if not size:
            self.control_bytes = 0  # it reads: what it was sent has gone
        elif size > ep.spec.client_buffer and self.protocol.state is OPEN:
            ep.over_buffer(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.recv_messages = NO_RECEIVE_QUEUE  # type: ignore[assignment]
        addr = transport.get_extra_info("peername")
        self.label = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.endpoint is not None:
            self.endpoint.remove(self)


def close_websocket(conn: ServerConnection, code: int, reason: str, grace: float = CLOSE_GRACE) -> None:
    """Start the closing handshake without waiting for the write buffer to drain.

    The close frame goes after what is already queued for the client (frames are never
    cut or reordered), so a client that reads gets everything, then the code and the
    reason. Nothing more is written to it. The TCP connection is aborted when the client
    has read nothing (of Veylor's buffer or the kernel's) for ``CLOSE_STALLED`` seconds
    (a stalled client would never reach the close frame), ``grace`` seconds after all was
    read if the client has not answered the close, and at the latest ``CLOSE_DEADLINE``
    seconds after the close began.
    """
    if conn.protocol.state is OPEN:
        conn.protocol.send_close(code, reason)
        try:
            conn.send_data()
        except Exception:  # the transport is already broken
            conn.transport.abort()
            return
    if not conn.connection_lost_waiter.done():
        now = conn.loop.time()
        left = _unsent(conn)
        conn.loop.call_later(
            SLOW_CLOSE_CHECK, _watch_close, conn, now, grace, left, now, None if left else now
        )


def _unsent(conn: ServerConnection) -> int:
    """Bytes not yet read by the client: in Veylor's buffer and in the kernel's send queue."""
    left = conn.transport.get_write_buffer_size()
    sock = conn.transport.get_extra_info("socket")
    if sock is not None:
        try:
            left += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            pass
    return left


def _watch_close(
    conn: ServerConnection,
    began: float,
    grace: float,
    last_left: int,
    progress_at: float,
    drained_at: float | None,
) -> None:
    if conn.connection_lost_waiter.done():
        return
    now = conn.loop.time()
    left = _unsent(conn)
    if left < last_left:
        progress_at = now
    if left and now - progress_at >= CLOSE_STALLED:
        conn.transport.abort()  # it has read nothing for a while: it will not reach the close frame
        return
    if drained_at is None and not left:
        drained_at = now
    if now - began >= CLOSE_DEADLINE or (drained_at is not None and now - drained_at >= grace):
        conn.transport.abort()
        return
    conn.loop.call_later(SLOW_CLOSE_CHECK, _watch_close, conn, began, grace, left, progress_at, drained_at)


PING_FRAME = b"\x89\x00"  # an empty ping, built once


class WebSocketEndpoint(Endpoint):
    """An endpoint served at one path (or ``*``) of a :class:`WebSocketListener`.

    Keepalive is one timer per endpoint, not a task per client (websockets' own
    keepalive costs a task per connection: about 2 KiB each): every ``ping_interval``
    it writes one prebuilt ping frame to each open client and closes (1011) those
    from which nothing at all, not even a pong, arrived for ``ping_interval +
    ping_timeout`` seconds.
    """

    wire = WS
    slow_close_code = " (1008)"

    def __init__(
        self, spec: EndpointSpec, stats: EndpointStats | None = None, budget: Budget | None = None
    ) -> None:
        super().__init__(spec, stats, budget)
        self.compressed: set[DownstreamConnection] = set()  # clients that negotiated permessage-deflate
        self.per_client = False  # compression is on and some clients use it: see flush()
        self.pending_messages: list[tuple[bytes, bool]] = []
        self._keepalive: asyncio.TimerHandle | None = None
        self._serving = False

    def update(self, spec: EndpointSpec) -> None:
        changed = (spec.ping_interval, spec.ping_timeout) != (self.spec.ping_interval, self.spec.ping_timeout)
        super().update(spec)
        self._compression_changed()
        if changed and self._serving:
            self.start_keepalive()  # (also when pings were off: ping_interval null before)

    def start(self) -> None:
        self._serving = True
        self.start_keepalive()

    def stop(self) -> None:
        self._serving = False
        self.stop_keepalive()

    def joined(self, conn: DownstreamConnection) -> None:
        """The handshake is over: a client that negotiated compression gets compressed
        frames (made for it alone) while the endpoint's ``compression`` is on."""
        if conn.protocol.extensions and conn in self.clients:  # (not already gone)
            self.compressed.add(conn)
            self._compression_changed()

    def remove(self, client: DownstreamConnection) -> None:  # type: ignore[override]
        super().remove(client)
        if client in self.compressed:
            self.compressed.discard(client)
            self._compression_changed()

    def _compression_changed(self) -> None:
        """The one place that decides the wire path: per client (compressed) for the
        clients that negotiated permessage-deflate, while ``compression`` is on; the
        shared frame for every other client. Turned off by a reload, the clients that
        had negotiated it get the shared, uncompressed frames (RFC 7692 allows them);
        turned on, new clients negotiate it and get compressed frames."""
        per_client = self.spec.compression and bool(self.compressed)
        if per_client and not self.per_client and self.pending:
            self.flush()  # what is pending has no per-client copy: out now, as shared frames
        self.per_client = per_client

    def enqueue(self, frame: bytes | None, data: bytes, is_text: bool) -> bool:
        if self.per_client:
            self.pending_messages.append((data, is_text))
        return super().enqueue(frame, data, is_text)

    def start_keepalive(self) -> None:
        """(Re)start pinging. A client's silence counts from now at the earliest: one that
        was quiet while pings were off (or longer apart) gets a ping before it is judged."""
        self.stop_keepalive()
        if self.spec.ping_interval is not None:
            loop = asyncio.get_running_loop()
            now = loop.time()
            for conn in self.clients:
                if conn.last_seen < now:
                    conn.last_seen = now
            self._keepalive = loop.call_later(self.spec.ping_interval, self._ping_all)

    def stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def _ping_all(self) -> None:
        interval, timeout = self.spec.ping_interval, self.spec.ping_timeout
        if interval is None:
            self._keepalive = None
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self.clients):
            if conn.protocol.state is not OPEN:
                continue
            if timeout is not None and now - conn.last_seen > interval + timeout:
                self.stats.keepalive_closed += 1
                log.info(
                    "endpoint %s: client %s sent nothing for %.0fs, not even a pong: closing (1011)",
                    self.name,
                    conn.label,
                    now - conn.last_seen,
                )
                close_websocket(conn, 1011, "keepalive ping timeout")
            else:
                conn.transport.write(PING_FRAME)
        self._keepalive = loop.call_later(interval, self._ping_all)

    @property
    def path(self) -> str:
        assert isinstance(self.spec.listen, WebSocketListen)
        return self.spec.listen.path

    @staticmethod
    def is_open(client: DownstreamConnection) -> bool:
        return client.protocol.state is OPEN

    def flush(self) -> None:
        messages = self.pending_messages
        if not messages:
            super().flush()
            return
        # Compression: websockets compresses per connection (its context is per
        # connection), so each such client gets its own frames. Costly; off by default.
        # The other clients get the shared frames, as always.
        self.pending_messages = []
        frames, self.pending, self.pending_bytes = self.pending, [], 0
        data = b"".join(frames)
        writable = self.writable(len(frames))
        compressed = self.compressed if self.spec.compression else ()
        for conn in writable:
            if conn in compressed:
                for payload, is_text in messages:
                    if is_text:
                        conn.protocol.send_text(payload)
                    else:
                        conn.protocol.send_binary(payload)
                conn.send_data()
            else:
                conn.transport.write(data)
        stats = self.stats
        stats.messages += len(frames)
        stats.messages_out += len(writable) * len(frames)
        stats.bytes_out += len(writable) * len(data)

    def control_flood(self, conn: DownstreamConnection) -> None:
        """A client sent more than ``MAX_CONTROL_FRAMES`` pings or pongs in a second."""
        self.stats.control_closed += 1
        self._bad_log(
            "endpoint %s: closing client %s: more than %d pings or pongs in a second (1008)",
            self.name,
            conn.label,
            MAX_CONTROL_FRAMES,
        )
        close_websocket(conn, 1008, "too many control frames")

    def over_buffer(self, conn: DownstreamConnection) -> None:
        """What is queued for a client passed ``client_buffer`` outside a data write (the
        pongs it asked for with its pings count too). If the answers to its own pings
        alone fill it, it is disconnected whatever the policy; otherwise the policy
        applies (``drop``: its data is skipped at the next writes)."""
        if conn.control_bytes > self.spec.client_buffer:
            self.control_overflow(conn)
        elif self.spec.slow_client == "disconnect":
            self.stats.slow_disconnects += 1
            self._bad_log(
                "endpoint %s: client %s is too slow (more than %s buffered): disconnecting (1008)",
                self.name,
                conn.label,
                format_size(self.spec.client_buffer),
            )
            self.disconnect_slow(conn)

    def control_overflow(self, conn: DownstreamConnection) -> None:
        """The answers to a client's own pings, which it does not read, passed
        ``client_buffer``: it is disconnected at once, whatever the policy."""
        self.stats.control_closed += 1
        self._bad_log(
            "endpoint %s: disconnecting client %s: it does not read, and what is queued for it "
            "(answers to its pings) passed client_buffer (%s)",
            self.name,
            conn.label,
            format_size(self.spec.client_buffer),
        )
        self.abort(conn)

    def disconnect_slow(self, client: DownstreamConnection) -> None:
        close_websocket(client, 1008, "client too slow")

    def close_clients(self, code: int, reason: str) -> None:
        for conn in list(self.clients):
            close_websocket(conn, code, reason)


class WebSocketListener:
    """One ``websockets`` server on a host:port, dispatching handshakes to endpoints by path.

    Unknown paths get HTTP 404, a full endpoint HTTP 503, both during the handshake.
    """

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        _, self.host, self.port = key
        self.paths: dict[str, WebSocketEndpoint] = {}
        self.server: Server | None = None

    def describe(self) -> str:
        served = ", ".join(f"{ep.name} ({ep.path})" for ep in self.paths.values())
        return f"ws://{self.address} for {served}"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def attach(self, endpoints: Sequence[WebSocketEndpoint]) -> None:  # type: ignore[override]
        """Serve these endpoints from now on (new handshakes; clients stay where they are)."""
        self.paths = {ep.path: ep for ep in endpoints}

    def lookup(self, path: str) -> WebSocketEndpoint | None:
        return self.paths.get(path) or self.paths.get("*")

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        assert isinstance(conn, DownstreamConnection)
        if conn.connection_lost_waiter.done() or conn.transport.is_closing():
            # The client left while its request was being read: its connection_lost has
            # run, so it must not be counted (it would never be removed).
            log.debug("listener %s: client %s left during its handshake", self.address, conn.label)
            return _respond(conn, 400, "Connection closed during the handshake\n")
        path = request.path.partition("?")[0]
        ep = self.lookup(path)
        if ep is None:
            log.info(
                "listener %s: refused client %s: no endpoint at path %s (404)", self.address, conn.label, path
            )
            return _respond(conn, 404, f"No Veylor endpoint at {path}\n")
        if not ep.admits(conn.label, " (503)"):
            return _respond(conn, 503, "Too many clients on this endpoint\n")
        proto = conn.protocol
        if hasattr(proto, "max_message_size"):
            proto.max_message_size = ep.spec.max_message_size
        else:  # pragma: no cover - websockets < 15
            proto.max_size = ep.spec.max_message_size
        if not ep.spec.compression:
            proto.available_extensions = []  # type: ignore[attr-defined]
        conn.endpoint = ep
        conn.last_seen = conn.loop.time()
        ep.add(conn)
        set_send_buffer(conn.transport, ep.spec.socket_buffer)
        return None

    async def _handler(self, conn: ServerConnection) -> None:
        assert isinstance(conn, DownstreamConnection)
        ep = conn.endpoint
        if ep is None:  # pragma: no cover - refused in process_request
            return
        ep.stats.accepted += 1
        # The handshake is over: keep the path, free the headers (memory per idle client).
        conn.request = Request(conn.request.path, Headers())  # type: ignore[union-attr]
        conn.response = None
        log.info("endpoint %s: client %s connected (%d clients)", ep.name, conn.label, len(ep.clients))
        try:
            ep.joined(conn)
            await conn.wait_closed()
        finally:
            ep.remove(conn)
            log.info(
                "endpoint %s: client %s disconnected (code %s, %d clients%s)",
                ep.name,
                conn.label,
                conn.close_code,
                len(ep.clients),
                ep.departed(conn),
            )

    async def start(self) -> None:
        try:
            self.server = await serve(
                self._handler,
                self.host,
                self.port,
                process_request=self._process_request,
                create_connection=DownstreamConnection,
                compression="deflate",  # offered only where an endpoint enables it (process_request)
                server_header="Veylor",
                close_timeout=CLOSE_GRACE,
                ping_interval=None,  # keepalive is per endpoint (WebSocketEndpoint), not a task per client
                max_size=2**20,
                logger=logging.getLogger(DOWNSTREAM_LOGGER),
                backlog=BACKLOG,
            )
        except OSError as exc:
            names = ", ".join(sorted(ep.name for ep in self.paths.values()))
            raise StartupError(
                f"endpoint {names}: cannot listen on {self.address}: {os_reason(exc)}"
            ) from None

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.server.close()

    async def close(self) -> None:
        """Stop accepting and wait until its connections are gone."""
        if self.server is not None:
            self.server.close(close_connections=False)
            await self.server.wait_closed()


def _respond(conn: ServerConnection, status: int, text: str) -> Response:
    return conn.respond(status, text)


KIND = RuntimeKind(endpoint=WebSocketEndpoint, listener=WebSocketListener)
