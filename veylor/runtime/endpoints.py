"""Endpoints: where local clients connect (WebSocket paths on shared listeners, Unix sockets).

An endpoint owns its set of clients. The fan-out appends frames to ``pending`` and
calls :meth:`Endpoint.flush` once per event-loop pass; the endpoint writes the joined
frames to each client with one ``transport.write``, applying the slow-client policy
from the transport's write-buffer size.

Veylor writes downstream WebSocket data frames itself (built once in
:mod:`veylor.runtime.wire`) straight to the connection's transport, bypassing
``Connection.send()``: websockets' ``send()`` and ``broadcast()`` build one frame per
connection, and ``send()`` costs a coroutine per message. This stays correct because
everything runs on the event loop thread: every write, ours and the library's
(ping, pong, close), is a whole frame, so frames never interleave mid-frame; and we
write only while the connection's protocol state is OPEN, so nothing follows a close
frame.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
import stat
import struct
import termios
import time
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..config.model import EndpointSpec, UnixListen, WebSocketListen, format_size
from ..observe.logs import DOWNSTREAM_LOGGER
from ..report import plural
from .budget import NOTABLE, Budget
from .frames import NO_RECEIVE_QUEUE, DataFrames, is_data, valid_utf8
from .util import CountedLog, Throttled
from .wire import LENGTH_PREFIXED, LINES, WS, FrameError, LengthPrefixedDecoder, LineDecoder

if TYPE_CHECKING:
    from .source import Source

log = logging.getLogger("veylor.endpoint")
OPEN = State.OPEN
PING, PONG = Opcode.PING, Opcode.PONG
DEFLATE = "websocket+deflate"  # wire tag: frames are built per client by websockets (compression)
CLOSE_GRACE = 2.0  # seconds a closing client has to answer before its connection is aborted
BACKLOG = 1024  # pending connections per listener (asyncio's default, 100, refuses bursts)
LOSS_LOG_INTERVAL = 60.0  # seconds between two reports of messages dropped for one client
SLOW_CLOSE_CHECK = 0.25  # seconds between checks that a closing client still drains its buffer
CLOSE_DEADLINE = 10.0  # seconds a closing client may take to drain its buffer and answer, at most
CLOSE_STALLED = 1.0  # seconds a closing client may read nothing before it is aborted
MAX_CONTROL_FRAMES = 50  # pings and pongs a client may send per second; more closes it (1008)
UNFRAMEABLE = {"binary": "binary messages", "newline": "messages that contain a newline"}


class StartupError(Exception):
    """A listener could not be bound; the message names the endpoint and the address."""


class Endpoint:
    """State and counters shared by both kinds of endpoint."""

    wire: str
    slow_close_code = ""  # for the log line: how a slow client is closed

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.clients: set[Any] = set()
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.pending_messages: list[tuple[bytes, bool]] = []
        self.scheduled = False
        self.upstream: tuple[Source, ...] = ()  # sources its clients may send to
        # Counters (metrics and the TUI read them).
        self.accepted = 0
        self.refused = 0
        self.messages_out = 0  # messages written, summed over clients
        self.bytes_out = 0
        # Deliveries not made (a message times a client), by reason: see undelivered().
        self.dropped = 0  # the client was over client_buffer (slow_client: drop)
        self.lost_slow = 0  # the client was being disconnected for being slow
        self.unframeable = 0  # this endpoint's framing cannot carry the message (lines)
        self.slow_disconnects = 0
        self.received = 0  # messages from clients
        self.discarded = 0  # messages from clients with no upstream route
        self.bad_frames = 0
        self._discard_log = Throttled(log)
        self._bad_log = Throttled(log)
        self.invalid_utf8 = 0  # text messages from clients that were not UTF-8 (client closed)
        self.control_closed = 0  # clients closed for flooding pings (or not reading the pongs)
        self.memory_limited = 0  # clients given the policy for the process-wide limits.buffered
        self.budget: Budget = NO_BUDGET  # the runtime's, set when the endpoint is made
        self._unframeable_log = {
            reason: CountedLog(log, interval=LOSS_LOG_INTERVAL) for reason in UNFRAMEABLE
        }

    # Settings that may change on reload without rebinding.
    def update(self, spec: EndpointSpec) -> None:
        self.spec = spec

    def flush(self) -> None:
        frames = self.pending
        if frames:
            self.pending = []
            self.pending_bytes = 0
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            self.write_all(data, len(frames))

    def write_all(self, data: bytes, count: int) -> None:
        """Write ``data`` (``count`` whole frames) to every client that can take it."""
        writable = self.writable(count)
        for client in writable:
            client.transport.write(data)
        self.messages_out += len(writable) * count
        self.bytes_out += len(writable) * len(data)

    def writable(self, count: int) -> list[Any]:
        """The open clients whose unsent bytes are within ``client_buffer``. The others get
        the ``slow_client`` policy for these ``count`` messages: skipped and counted
        (``drop``), or disconnected (``disconnect``)."""
        limit = self.spec.client_buffer
        notable = min(limit, NOTABLE)
        drop = self.spec.slow_client == "drop"
        is_open = self.is_open
        budget = self.budget
        ok: list[Any] = []
        slow: list[Any] = []
        for client in self.clients:
            if not is_open(client):
                continue
            size = client.transport.get_write_buffer_size()
            if size <= notable:  # nearly every client: nothing more to look at
                ok.append(client)
                continue
            budget.note(self, client, size)
            if size <= limit and not client.shed:
                ok.append(client)
            elif drop or client.shed:
                self.dropped += count
                self._note_dropped(client, count)
            else:
                slow.append(client)
        for client in slow:
            self.slow_disconnects += 1
            self.lost_slow += count
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

    def over_budget(self, client: Any) -> bool:
        """The process-wide ``limits.buffered`` is reached and this client is among those
        holding the most: its ``slow_client`` policy applies now, whatever its own
        buffer. ``drop``: no data for it until it drains (False: its bytes stay);
        ``disconnect``: aborted at once (True: its bytes are freed): it is behind by
        more than any other, and memory is short."""
        self.memory_limited += 1
        if self.spec.slow_client == "drop":
            client.shed = True
            return False
        self.slow_disconnects += 1
        self.abort(client)
        return True

    def abort(self, client: Any) -> None:
        """Drop a client's connection at once: what is queued for it is thrown away."""
        client.transport.abort()

    def _note_dropped(self, client: Any, count: int) -> None:
        """Count messages dropped for a slow client; log at most once per
        ``LOSS_LOG_INTERVAL`` per client, with the count so far."""
        client.dropped += count
        now = time.monotonic()
        if now - client.dropped_logged_at >= LOSS_LOG_INTERVAL:
            client.dropped_logged_at = now
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
        self.unframeable += n
        self._unframeable_log[reason].add(
            n,
            "endpoint %s (framing: lines): a message not delivered to its %s: lines cannot carry %s",
            self.name,
            plural(n, "client"),
            UNFRAMEABLE[reason],
        )

    def control_flood(self, conn: DownstreamConnection) -> None:
        """A client sent more than ``MAX_CONTROL_FRAMES`` pings or pongs in a second."""
        self.control_closed += 1
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
            self.slow_disconnects += 1
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
        self.control_closed += 1
        self._bad_log(
            "endpoint %s: disconnecting client %s: it does not read, and what is queued for it "
            "(answers to its pings) passed client_buffer (%s)",
            self.name,
            conn.label,
            format_size(self.spec.client_buffer),
        )
        self.abort(conn)

    def malformed(self, who: str, why: Exception) -> None:
        """A client broke its framing: it is closed; counted and logged (rate limited)."""
        self.bad_frames += 1
        self._bad_log("endpoint %s: closing client %s: malformed input: %s", self.name, who, why)

    def invalid_text(self, who: str) -> None:
        """A client sent text that is not UTF-8: it is closed (WebSocket: 1007) and the
        message never goes upstream."""
        self.invalid_utf8 += 1
        self._bad_log(
            "endpoint %s: closing client %s: it sent text that is not valid UTF-8 (not forwarded)",
            self.name,
            who,
        )

    def undelivered(self) -> dict[str, int]:
        """Deliveries not made (a message times a client), by reason."""
        return {
            "slow_client_drop": self.dropped,
            "slow_client_disconnect": self.lost_slow,
            "framing": self.unframeable,
        }

    def departed(self, client: Any) -> str:
        """The tail of a 'client disconnected' line: what it missed, if anything."""
        return f"; {plural(client.dropped, 'message')} dropped for it while slow" if client.dropped else ""

    @staticmethod
    def is_open(client: Any) -> bool:
        raise NotImplementedError

    def disconnect_slow(self, client: Any) -> None:
        raise NotImplementedError

    def from_client(self, who: str, data: bytes, is_text: bool) -> None:
        """A message from one of this endpoint's clients: to every source that allows it."""
        self.received += 1
        targets = self.upstream
        if not targets:
            self.discarded += 1
            self._discard_log(
                "endpoint %s: discarded a message from %s: no route to this endpoint has upstream: true",
                self.name,
                who,
            )
            return
        for source in targets:
            source.send(data, is_text)

    def close_clients(self, code: int, reason: str) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- WebSocket


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
            self.endpoint.clients.discard(self)


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

    def __init__(self, spec: EndpointSpec) -> None:
        super().__init__(spec)
        self.wire = DEFLATE if spec.compression else WS
        self.keepalive_closed = 0
        self._keepalive: asyncio.TimerHandle | None = None

    def update(self, spec: EndpointSpec) -> None:
        changed = (spec.ping_interval, spec.ping_timeout) != (self.spec.ping_interval, self.spec.ping_timeout)
        super().update(spec)
        if changed and self._keepalive is not None:
            self.start_keepalive()

    def start_keepalive(self) -> None:
        self.stop_keepalive()
        if self.spec.ping_interval is not None:
            loop = asyncio.get_running_loop()
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
                self.keepalive_closed += 1
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

    slow_close_code = " (1008)"

    @staticmethod
    def is_open(client: DownstreamConnection) -> bool:
        return client.protocol.state is OPEN

    def flush(self) -> None:
        if self.wire is not DEFLATE:
            super().flush()
            return
        # Compression: websockets compresses per connection (its context is per
        # connection), so each client gets its own frames. Costly; off by default.
        messages, self.pending_messages = self.pending_messages, []
        writable = self.writable(len(messages))
        for conn in writable:
            for data, is_text in messages:
                if is_text:
                    conn.protocol.send_text(data)
                else:
                    conn.protocol.send_binary(data)
            conn.send_data()
        self.messages_out += len(writable) * len(messages)
        self.bytes_out += len(writable) * sum(len(d) for d, _ in messages)

    def disconnect_slow(self, client: DownstreamConnection) -> None:
        close_websocket(client, 1008, "client too slow")

    def close_clients(self, code: int, reason: str) -> None:
        for conn in list(self.clients):
            close_websocket(conn, code, reason)


class WebSocketListener:
    """One ``websockets`` server on a host:port, dispatching handshakes to endpoints by path.

    Unknown paths get HTTP 404, a full endpoint HTTP 503, both during the handshake.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.paths: dict[str, WebSocketEndpoint] = {}
        self.server: Server | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def set_endpoints(self, endpoints: list[WebSocketEndpoint]) -> None:
        self.paths = {ep.path: ep for ep in endpoints}

    def lookup(self, path: str) -> WebSocketEndpoint | None:
        return self.paths.get(path) or self.paths.get("*")

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        assert isinstance(conn, DownstreamConnection)
        if conn.connection_lost_waiter.done() or conn.transport.is_closing():
            # The client left while its request was being read: its connection_lost has
            # run, so it must not be counted (it would never be removed).
            log.debug("listener %s: %s left during its handshake", self.address, conn.label)
            return _respond(conn, 400, "Connection closed during the handshake\n")
        path = request.path.partition("?")[0]
        ep = self.lookup(path)
        if ep is None:
            log.info("listener %s: refused %s: no endpoint at path %s (404)", self.address, conn.label, path)
            return _respond(conn, 404, f"No Veylor endpoint at {path}\n")
        if len(ep.clients) >= ep.spec.max_clients:
            ep.refused += 1
            log.warning(
                "endpoint %s: refused %s: max_clients (%d) reached (503)",
                ep.name,
                conn.label,
                ep.spec.max_clients,
            )
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
        ep.clients.add(conn)
        set_send_buffer(conn.transport, ep.spec.socket_buffer)
        return None

    async def _handler(self, conn: ServerConnection) -> None:
        assert isinstance(conn, DownstreamConnection)
        ep = conn.endpoint
        if ep is None:  # pragma: no cover - refused in process_request
            return
        ep.accepted += 1
        # The handshake is over: keep the path, free the headers (memory per idle client).
        conn.request = Request(conn.request.path, Headers())  # type: ignore[union-attr]
        conn.response = None
        log.info("endpoint %s: client %s connected (%d clients)", ep.name, conn.label, len(ep.clients))
        try:
            await conn.wait_closed()
        finally:
            ep.clients.discard(conn)
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
                f"endpoint {names}: cannot listen on {self.address}: {_os_reason(exc)}"
            ) from None

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.server.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            self.server.close(close_connections=False)
            await self.server.wait_closed()


def set_send_buffer(transport: Any, size: int | None) -> None:
    """Fix the kernel's send buffer of a client's socket. Left to itself, Linux grows it
    to several MiB per TCP connection: copying that much into the buffers of clients
    that never read stalled the event loop for 100 ms and more (300 such clients), and
    the kernel held it for each. Throughput to a reading client is unchanged here (max
    rate to 1,000 clients: as fast or faster, with lower latency)."""
    if size is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        except OSError:  # pragma: no cover - refused by the system: its default stays
            pass


def _respond(conn: ServerConnection, status: int, text: str) -> Response:
    return conn.respond(status, text)


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (another process listens there)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    return exc.strerror or str(exc)


# ---------------------------------------------------------------- Unix


class UnixClient(asyncio.Protocol):
    """A client of a Unix endpoint: reads frames as they arrive, no task per client."""

    def __init__(self, endpoint: UnixEndpoint, number: int) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.dropped = 0
        self.dropped_logged_at = -LOSS_LOG_INTERVAL
        self.shed = False
        self.closing = False
        self.label = f"unix#{number}"
        spec = endpoint.spec.listen
        assert isinstance(spec, UnixListen)
        size = endpoint.spec.max_message_size
        self.decoder = LineDecoder(size) if spec.framing == LINES else LengthPrefixedDecoder(size)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # uvloop's transports are not asyncio's classes
        ep = self.endpoint
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
                self.label += f" (pid {pid}, uid {uid})"
            except OSError:  # pragma: no cover - not Linux
                pass
        if len(ep.clients) >= ep.spec.max_clients:
            ep.refused += 1
            log.warning(
                "endpoint %s: refused %s: max_clients (%d) reached", ep.name, self.label, ep.spec.max_clients
            )
            self.closing = True
            transport.close()
            return
        ep.clients.add(self)
        ep.accepted += 1
        set_send_buffer(transport, ep.spec.socket_buffer)
        log.info("endpoint %s: client %s connected (%d clients)", ep.name, self.label, len(ep.clients))

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        ep = self.endpoint
        lines = isinstance(self.decoder, LineDecoder)
        try:
            for payload in self.decoder.feed(data):
                if lines:
                    if not valid_utf8(payload):
                        # A line is text; one that is not UTF-8 would make the upstream
                        # close the shared connection (1007) if sent as text.
                        ep.invalid_text(self.label)
                        self.close()
                        return
                    ep.from_client(self.label, payload, True)
                else:
                    # 1.x framing has no frame type: valid UTF-8 goes upstream as text.
                    ep.from_client(self.label, payload, valid_utf8(payload))
        except FrameError as exc:
            ep.malformed(self.label, exc)
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        ep = self.endpoint
        if self in ep.clients:
            ep.clients.discard(self)
            log.info(
                "endpoint %s: client %s disconnected (%d clients%s)",
                ep.name,
                self.label,
                len(ep.clients),
                ep.departed(self),
            )

    def close(self, grace: float = CLOSE_GRACE) -> None:
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.transport.close()  # flushes what is buffered, then closes
        asyncio.get_running_loop().call_later(grace, self.transport.abort)


class UnixEndpoint(Endpoint):
    """A Unix domain socket endpoint (its own listener)."""

    def __init__(self, spec: EndpointSpec) -> None:
        super().__init__(spec)
        assert isinstance(spec.listen, UnixListen)
        self.wire = LENGTH_PREFIXED if spec.listen.framing == LENGTH_PREFIXED else LINES
        self.server: asyncio.AbstractServer | None = None
        self._bound: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file we made
        self._acceptor: _Acceptor | None = None

    @property
    def path(self) -> str:
        assert isinstance(self.spec.listen, UnixListen)
        return self.spec.listen.path

    @staticmethod
    def is_open(client: UnixClient) -> bool:
        return not client.closing

    def abort(self, client: UnixClient) -> None:
        client.closing = True  # connection_lost comes later: never count or write it again
        client.transport.abort()

    def disconnect_slow(self, client: UnixClient) -> None:
        self.abort(client)  # no close message in these framings; what is buffered would never leave

    def close_clients(self, code: int, reason: str) -> None:
        for client in list(self.clients):
            client.close()

    def adopt(self, old: UnixEndpoint) -> None:
        """Take over ``old``'s listening socket at the same path (a reload that changed the
        framing or the mode): new connections come to this endpoint, with this mode."""
        self.server, self._bound, self._acceptor = old.server, old._bound, old._acceptor
        old.server, old._bound, old._acceptor = None, None, None
        if self._acceptor is not None:
            self._acceptor.endpoint = self
        assert isinstance(self.spec.listen, UnixListen)
        os.chmod(self.path, self.spec.listen.mode)

    async def start(self) -> None:
        path = self.path
        where = f"endpoint {self.name}: cannot listen on unix:{path}"
        _clear_stale_socket(path, where)
        assert isinstance(self.spec.listen, UnixListen)
        mode = self.spec.listen.mode
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o777 & ~mode)  # the file is created with its final mode: no window
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.ENOENT:
                raise StartupError(
                    f"{where}: directory {os.path.dirname(path) or '.'} does not exist "
                    "(create it; under systemd, RuntimeDirectory=veylor makes /run/veylor)"
                ) from None
            raise StartupError(f"{where}: {_os_reason(exc)}") from None
        finally:
            os.umask(old_umask)
        try:
            os.chmod(path, mode)
            st = os.stat(path)
            self._bound = (st.st_dev, st.st_ino)
            loop = asyncio.get_running_loop()
            self._acceptor = _Acceptor(self)
            self.server = await loop.create_unix_server(self._acceptor, sock=sock, backlog=BACKLOG)
        except OSError as exc:
            sock.close()
            self.remove_socket_file()
            raise StartupError(f"{where}: {_os_reason(exc)}") from None

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def remove_socket_file(self) -> None:
        """Remove the socket file if it is still the one this endpoint created."""
        if self._bound is None:
            return
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._bound:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("endpoint %s: could not remove %s: %s", self.name, self.path, exc)
        self._bound = None


class _Acceptor:
    """The protocol factory of a Unix listener; a reload may point it at a new endpoint."""

    def __init__(self, endpoint: UnixEndpoint) -> None:
        self.endpoint = endpoint
        self.numbers = 0

    def __call__(self) -> UnixClient:
        self.numbers += 1
        return UnixClient(self.endpoint, self.numbers)


def _clear_stale_socket(path: str, where: str) -> None:
    """Remove a socket file left by a dead process; refuse anything else at ``path``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError(f"{where}: {path} exists and is not a socket (it was left untouched)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # nobody listens: stale
        log.info("removed stale socket file %s", path)
        return
    except OSError as exc:
        raise StartupError(f"{where}: {path} exists and cannot be checked: {_os_reason(exc)}") from None
    finally:
        probe.close()
    raise StartupError(f"{where}: another process is listening on {path}")


NO_BUDGET = Budget(limit=2**62)  # endpoints made outside a runtime (tests)


def make_endpoint(spec: EndpointSpec) -> Endpoint:
    if isinstance(spec.listen, WebSocketListen):
        return WebSocketEndpoint(spec)
    return UnixEndpoint(spec)
