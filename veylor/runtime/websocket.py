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
import asyncio.sslproto
import fcntl
import functools
import logging
import socket
import ssl
import struct
import termios
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from ..config.access import ServerTLS, WebSocketAccess, token_digest
from ..config.common import format_size
from ..config.model import EndpointSpec, WebSocketListen
from ..observe.logs import DOWNSTREAM_LOGGER
from ..printable import printable
from .budget import Budget
from .endpoints import (
    BACKLOG,
    CLOSE_GRACE,
    ClientState,
    Endpoint,
    StartupError,
    os_reason,
    release,
    set_send_buffer,
)
from .frames import NO_RECEIVE_QUEUE, DataFrames, is_data, valid_utf8
from .kinds import RuntimeKind
from .stats import EndpointStats
from .util import Throttled
from .wire import WS

log = logging.getLogger("veylor.endpoint")
OPEN, CONNECTING = State.OPEN, State.CONNECTING
PING, PONG = Opcode.PING, Opcode.PONG
SLOW_CLOSE_CHECK = 0.25  # seconds between checks that a closing client still drains its buffer
CLOSE_DEADLINE = 10.0  # seconds a closing client may take to drain its buffer and answer, at most
CLOSE_STALLED = 1.0  # seconds a closing client may read nothing before it is aborted
MAX_CONTROL_FRAMES = 50  # pings and pongs a client may send per second; more closes it (1008)


class DownstreamConnection(ClientState, DataFrames, ServerConnection):
    """A client connection on a WebSocket endpoint.

    Incoming data frames go straight to the endpoint (no per-message coroutine, no
    receive queue); the endpoint learns of the connection before the handshake
    completes, so ``max_clients`` counts handshakes in progress too. Until its request
    has been read it is one of its listener's pending handshakes (bounded in number
    and in time: ``max_pending``, ``max_pending_per_ip``, ``handshake_timeout``).
    """

    endpoint: WebSocketEndpoint | None = None
    listener: WebSocketListener | None = None  # while its handshake is pending
    made = False  # connection_made has run (through TLS: once the TLS handshake is done)
    raw: Any = None  # its TCP transport, while TLS is being set up (wss://)
    handshake_timer: asyncio.TimerHandle | None = None
    source: Any = None  # what max_pending_per_ip counts it by, while pending
    pending_since = 0.0  # loop time of its TCP accept
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
        ep.from_client(self, data, is_text)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # websockets answers pings: pongs are queued for the client
        ep = self.endpoint
        if ep is None:
            return
        size = self.transport.get_write_buffer_size() + self.held
        if not size:
            self.control_bytes = 0  # it reads: what it was sent has gone
        elif size > ep.spec.client_buffer and self.protocol.state is OPEN:
            ep.over_buffer(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.made = True
        self.recv_messages = NO_RECEIVE_QUEUE  # type: ignore[assignment]
        if self.listener is None:  # (through TLS, its handshake is pending since the TCP accept)
            self.label = peer_label(transport)
            listener = getattr(self.server, "veylor_listener", None)
            if listener is not None and not listener.opening(self, transport):
                transport.abort()

    def request_read(self) -> None:
        """Its handshake request has arrived: it is no longer pending."""
        listener = self.listener
        if listener is not None:
            self.listener = None
            listener.unpend(self)
            if self.handshake_timer is not None:
                self.handshake_timer.cancel()
                self.handshake_timer = None

    def resume_writing(self) -> None:
        super().resume_writing()
        # What Veylor held while the transport was paused (Endpoint.hold) goes now, unless
        # the connection is closing (websockets wrote a close frame: nothing may follow).
        release(self, self.protocol.state is OPEN)

    def connection_lost(self, exc: Exception | None) -> None:
        self.request_read()
        if not self.made:  # its TLS handshake failed: the TLS layer tells it all the same
            return
        release(self, write=False)
        super().connection_lost(exc)
        # Once websockets is done with it (its handshake task re-raises the error it
        # stored): drop the tracebacks it keeps, which tie the connection to itself.
        self.loop.call_later(UNTANGLE_AFTER, _untangle, self.protocol)
        if self.endpoint is not None:
            self.endpoint.remove(self)


def source_of(transport: asyncio.BaseTransport) -> Any:
    """What ``max_pending_per_ip`` counts a connection by: its IPv4 address, or its IPv6
    address's /64 (one host commonly holds a whole /64: counting each address would let
    it take every slot); an IPv4-mapped IPv6 address counts as the IPv4 address."""
    addr = transport.get_extra_info("peername")
    if not isinstance(addr, tuple):
        return addr
    host = addr[0]
    if ":" not in host:
        return host
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except OSError:  # pragma: no cover - the kernel gave it
        return host
    if packed[:12] == V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return packed[:8]


V4_MAPPED = bytes(10) + b"\xff\xff"


def peer_label(transport: asyncio.BaseTransport) -> str:
    """A client's address for log lines (read when it connects: later the transport may
    be closed already)."""
    addr = transport.get_extra_info("peername")
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)


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
            release(conn)  # what Veylor held for it (its transport paused), before the close frame
            conn.send_data()
        except Exception:  # the transport is already broken
            conn.transport.abort()
            return
    else:
        release(conn, write=False)
    if not conn.connection_lost_waiter.done():
        now = conn.loop.time()
        left = _unsent(conn)
        conn.loop.call_later(
            SLOW_CLOSE_CHECK, _watch_close, conn, now, grace, left, now, None if left else now
        )


def send_counted(conn: ServerConnection) -> int:
    """``conn.send_data()``, returning the bytes it wrote."""
    n = 0
    for data in conn.protocol.data_to_send():
        if data:
            conn.transport.write(data)
            n += len(data)
        elif conn.transport.can_write_eof():  # (what send_data does with the end of the stream)
            try:
                conn.transport.write_eof()
            except Exception:  # pragma: no cover - as websockets: uvloop may raise RuntimeError
                pass
        else:  # pragma: no cover - TLS: no half-close
            conn.transport.close()
    return n


def _unsent(conn: ServerConnection) -> int:
    """Bytes not yet read by the client: in Veylor's buffers and in the kernel's send queue."""
    left = conn.transport.get_write_buffer_size() + conn.held
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


def _untangle(protocol: Any) -> None:
    """Drop the tracebacks of the errors a closed connection's protocol keeps (a client
    that left without a closing handshake, or in the middle of its request: EOFError,
    InvalidMessage). Each traceback holds the frames of the protocol's parser, which
    hold the protocol: a cycle, which only a full collection frees, and never if a
    reload moved it out of the collector's sight (``heap.settle_heap``) while the client
    was connected. The soak leaked 30 MiB in 30 minutes of churn that way. The parser
    itself, suspended in ``discard()`` once the connection closed, holds the protocol
    too: it is closed."""
    parser = getattr(protocol, "parser", None)
    if parser is not None and hasattr(parser, "close"):
        parser.close()
    for name in ("parser_exc", "handshake_exc"):
        exc = getattr(protocol, name, None)
        seen = 0
        while exc is not None and seen < 8:
            exc.__traceback__ = None
            exc = exc.__cause__ or exc.__context__
            seen += 1


UNTANGLE_AFTER = 1.0  # seconds after connection_lost (its handshake task has ended by then)
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
        self.listener: WebSocketListener | None = None  # the one that serves it (set by attach)

    def update(self, spec: EndpointSpec) -> None:
        changed = (spec.ping_interval, spec.ping_timeout) != (self.spec.ping_interval, self.spec.ping_timeout)
        old: WebSocketAccess = self.spec.access
        super().update(spec)
        self._compression_changed()
        if changed and self._serving:
            self.start_keepalive()  # (also when pings were off: ping_interval null before)
        new: WebSocketAccess = spec.access
        if new.auth != old.auth and new.auth is not None:
            self.revoke(new.auth.digests)
        if self.listener is not None:
            self.listener.settings_changed()

    def revoke(self, allowed: frozenset[bytes]) -> None:
        """Close (1008) the clients whose token is not among ``allowed`` any more (a client
        that connected while auth was off has none)."""
        gone = [c for c in self.clients if c.token not in allowed and c.protocol.state in (OPEN, CONNECTING)]
        for conn in gone:
            if conn.protocol.state is OPEN:
                close_websocket(conn, 1008, "token revoked")
            else:  # its handshake is still being answered: it never gets in
                conn.transport.abort()
        if gone:
            self.stats.revoked += len(gone)
            log.warning(
                "endpoint %s: closed %d clients whose token is no longer allowed (1008)", self.name, len(gone)
            )

    def close_client(self, client: DownstreamConnection, code: int, reason: str) -> None:  # type: ignore[override]
        close_websocket(client, code, reason)

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
        # (websockets may complete a handshake after it sent EOF for a bad frame that came
        # with the request: a write to such a connection raises, and the endpoint aborts
        # it (``broken``) until its handler does. Not checked here: this runs per client
        # per pass.)
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
        writable = self.writable(len(frames), data)
        compressed = self.compressed if self.spec.compression else ()
        for conn in writable:
            try:
                if conn in compressed:
                    for payload, is_text in messages:
                        if is_text:
                            conn.protocol.send_text(payload)
                        else:
                            conn.protocol.send_binary(payload)
                    # Its frames, not the shared ones: what it was not given (or given
                    # beyond them) keeps the budget's count of what it took exact.
                    conn.unwritten += len(data) - send_counted(conn)
                else:
                    conn.transport.write(data)
            except Exception as exc:
                self.broken(conn, exc)
        self.written += len(data)
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


class TLSGate(asyncio.BufferedProtocol):
    """A wss:// connection at its TCP accept, before any byte is read: it counts as a
    pending handshake from then (``max_pending``, ``max_pending_per_ip``) under one
    deadline (``handshake_timeout``) for the TLS handshake and the WebSocket request
    that follows; then it hands the connection to the TLS layer (the event loop's own
    ``SSLProtocol``, as ``ssl=`` on the server would), with its
    :class:`DownstreamConnection` above it. (With ``ssl=`` on the server, a connection
    would be seen only once TLS is done: a client that never sends a ClientHello would
    hold a file descriptor, uncounted, for the loop's TLS timeout.)"""

    def __init__(self, listener: WebSocketListener, conn: DownstreamConnection) -> None:
        self.listener = listener
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        listener, conn = self.listener, self.conn
        conn.label = peer_label(transport)
        conn.raw = transport
        if listener.context is None or not listener.opening(conn, transport):
            transport.abort()
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        waiter.add_done_callback(functools.partial(self._handshaken, conn))
        tls = _ssl_protocol(loop)(
            loop,
            conn,
            listener.context,
            waiter,
            True,  # server side
            None,
            ssl_handshake_timeout=listener.handshake_timeout + 1,  # (the listener's timer comes first)
        )
        transport.set_protocol(tls)  # type: ignore[attr-defined]
        tls.connection_made(transport)

    def _handshaken(self, conn: DownstreamConnection, done: asyncio.Future[None]) -> None:
        exc = None if done.cancelled() else done.exception()
        if exc is not None and conn.listener is not None:  # (not its handshake_timeout: counted there)
            conn.request_read()
            self.listener.tls_failed(conn.label, exc)

    # Nothing is read before the TLS layer takes the connection over.
    def get_buffer(self, sizehint: int) -> bytearray:
        return bytearray(max(sizehint, 1))

    def buffer_updated(self, nbytes: int) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def _ssl_protocol(loop: asyncio.AbstractEventLoop) -> Any:
    """The TLS layer of ``loop``: uvloop's own (its fast path), else asyncio's."""
    try:
        import uvloop
        import uvloop.loop

        if isinstance(loop, uvloop.Loop):
            return uvloop.loop.SSLProtocol
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    return asyncio.sslproto.SSLProtocol


class WebSocketListener:
    """One ``websockets`` server on a host:port, dispatching handshakes to endpoints by path.

    During the handshake, in this order: an unknown path gets HTTP 404; an ``Origin``
    not allowed, 403; a missing or wrong token, 401; a full endpoint, 503. Before that,
    a connection is one of the listener's pending handshakes: at ``max_pending``, a new
    one closes the oldest, or is closed at once if its source has ``max_pending_per_ip``
    pending already (see :meth:`opening`); one that has not sent its request within
    ``handshake_timeout`` is dropped. With TLS (wss://) the context is the listener's:
    a reload that renews the certificate loads it into the same context, for new
    connections; no connection is closed.
    """

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.host, self.port = key[1], key[2]
        self.secure = len(key) > 3
        self.paths: dict[str, WebSocketEndpoint] = {}
        self.server: Server | None = None
        # Connections whose handshake request has not been read yet, oldest first; how
        # many of them each source has.
        self.pending_conns: dict[DownstreamConnection, None] = {}
        self.sources: dict[Any, int] = {}
        self.max_pending = 256
        self.max_pending_per_ip = 16
        self.handshake_timeout = 10.0
        self.tls: ServerTLS | None = None  # what the context holds
        self.context: ssl.SSLContext | None = None
        self._refused_log = Throttled(log)
        self._per_ip_log = Throttled(log)
        self._evicted_log = Throttled(log)

    @property
    def pending(self) -> int:
        """Connections whose handshake request has not been read yet."""
        return len(self.pending_conns)

    def describe(self) -> str:
        served = ", ".join(f"{ep.name} ({ep.path})" for ep in self.paths.values())
        return f"{'wss' if self.secure else 'ws'}://{self.address} for {served}"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def attach(self, endpoints: Sequence[WebSocketEndpoint]) -> None:  # type: ignore[override]
        """Serve these endpoints from now on (new handshakes; clients stay where they are)."""
        self.paths = {ep.path: ep for ep in endpoints}
        for ep in endpoints:
            ep.listener = self
        self.settings_changed()

    def settings_changed(self) -> None:
        """Take the endpoints' settings for the port: the largest ``max_pending``,
        ``max_pending_per_ip`` and ``handshake_timeout`` among them, and their certificate (the loader made sure they
        agree), loaded anew if it changed on disk."""
        accesses: list[WebSocketAccess] = [ep.spec.access for ep in self.paths.values()]
        if not accesses:
            return
        self.max_pending = max(a.max_pending for a in accesses)
        self.max_pending_per_ip = max(a.max_pending_per_ip for a in accesses)
        self.handshake_timeout = max(a.handshake_timeout for a in accesses)
        tls = accesses[0].tls
        if self.context is not None and tls is not None and tls != self.tls:
            try:
                # A new context: the one serving is never changed (a key that changed
                # again since the loader checked it must not break every handshake).
                self.context = tls.context()
            except (OSError, ValueError) as exc:  # (changed again since the reload checked it)
                log.error(
                    "listener %s: could not load the new certificate %s: %s; new connections still get "
                    "the previous one",
                    self.address,
                    tls.cert,
                    exc,
                )
                return
            self.tls = tls
            log.info(
                "listener %s: certificate %s loaded anew (new connections get it)", self.address, tls.cert
            )

    def lookup(self, path: str) -> WebSocketEndpoint | None:
        return self.paths.get(path) or self.paths.get("*")

    def _first(self) -> WebSocketEndpoint | None:
        """The endpoint that counts what happens before a request names one."""
        return min(self.paths.values(), key=lambda ep: ep.name, default=None)

    def connection_for(self, protocol: Any, server: Any, **kwargs: Any) -> asyncio.Protocol:
        """websockets' ``create_connection``: the connection, behind a :class:`TLSGate`
        on a wss:// listener."""
        conn = DownstreamConnection(protocol, server, **kwargs)
        return TLSGate(self, conn) if self.secure else conn

    def opening(self, conn: DownstreamConnection, transport: asyncio.BaseTransport) -> bool:
        """A new TCP connection: one more pending handshake (True), or False if it must be
        closed at once, before anything is read (counted, logged).

        At ``max_pending``, the oldest pending handshake is closed to make room (counted,
        logged) rather than the newcomer refused: otherwise a few hundred connections that
        never finish their request (a slowloris) would lock every new client out for as
        long as they keep coming. The oldest, not the one that sent the fewest bytes:
        bytes are what an attacker controls (it can send a large half request at once,
        while a real client's request is one round trip away), and a handshake takes a
        round trip or two, so the one pending longest has had the most time to finish.

        But a newcomer whose source already has ``max_pending_per_ip`` pending closes
        nobody's: it is refused. A source may take free slots (a burst of clients behind
        one address, a load test), never another's: to evict a real client, attackers
        must open ``max_pending`` connections within that client's handshake, from at
        least ``max_pending / max_pending_per_ip`` sources."""
        source = source_of(transport)
        held = self.sources.get(source, 0)
        if len(self.pending_conns) >= self.max_pending:
            if held >= self.max_pending_per_ip:
                ep = self._first()
                if ep is not None:
                    ep.stats.refused_pending += 1
                self._per_ip_log(
                    "listener %s: closed a new connection from %s at once: %d handshakes are pending "
                    "(max_pending), %d of them from its address (max_pending_per_ip)",
                    self.address,
                    conn.label,
                    len(self.pending_conns),
                    held,
                )
                return False
            while len(self.pending_conns) >= self.max_pending:
                self.evict(next(iter(self.pending_conns)))
        self.pending_conns[conn] = None
        self.sources[source] = held + 1
        conn.source = source
        conn.listener = self
        conn.pending_since = conn.loop.time()
        conn.handshake_timer = conn.loop.call_later(self.handshake_timeout, self.expired, conn)
        return True

    def unpend(self, conn: DownstreamConnection) -> None:
        """``conn`` is no longer pending (its request arrived, or it is gone)."""
        del self.pending_conns[conn]
        left = self.sources[conn.source] - 1
        if left:
            self.sources[conn.source] = left
        else:
            del self.sources[conn.source]

    def evict(self, conn: DownstreamConnection) -> None:
        """Close the oldest pending handshake to make room for a new connection."""
        ep = self._first()
        if ep is not None:
            ep.stats.pending_evicted += 1
        self._evicted_log(
            "listener %s: closed the oldest pending handshake (%s, pending for %.1fs) to make room for a "
            "new connection: %d handshakes are pending (max_pending)",
            self.address,
            conn.label,
            conn.loop.time() - conn.pending_since,
            self.pending,
        )
        conn.request_read()
        (conn.transport if conn.made else conn.raw).abort()

    def timed_out(self, label: str) -> None:
        """A connection did not complete its handshake in time: counted and logged."""
        ep = self._first()
        if ep is not None:
            ep.stats.handshake_timeouts += 1
        self._refused_log(
            "listener %s: dropped %s: no complete handshake within %gs (handshake_timeout)",
            self.address,
            label,
            self.handshake_timeout,
        )

    def tls_failed(self, label: str, exc: BaseException) -> None:
        """A TLS handshake failed (a plain ws:// client, an old TLS version, garbage)."""
        ep = self._first()
        if ep is not None:
            ep.stats.tls_failed += 1
        reason = getattr(exc, "reason", None) or type(exc).__name__
        self._refused_log("listener %s: TLS handshake with %s failed: %s", self.address, label, reason)

    def expired(self, conn: DownstreamConnection) -> None:
        """A connection's handshake_timeout: it is dropped (TLS included)."""
        conn.handshake_timer = None
        if conn.listener is None:
            return
        self.timed_out(conn.label)
        conn.request_read()
        (conn.transport if conn.made else conn.raw).abort()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        assert isinstance(conn, DownstreamConnection)
        conn.request_read()
        if conn.connection_lost_waiter.done() or conn.transport.is_closing():
            # The client left while its request was being read: its connection_lost has
            # run, so it must not be counted (it would never be removed).
            log.debug("listener %s: client %s left during its handshake", self.address, conn.label)
            return _respond(conn, 400, "Connection closed during the handshake\n")
        path, _, query = request.path.partition("?")
        ep = self.lookup(path)
        if ep is None:
            first = self._first()
            if first is not None:
                first.stats.refused_path += 1
            self._refused_log(
                "listener %s: refused client %s: no endpoint at path %s (404)",
                self.address,
                conn.label,
                clipped(path),
            )
            return _respond(conn, 404, f"No Veylor endpoint at {clipped(path)}\n")
        refusal = _check_access(ep, conn, request, query)
        if refusal is not None:
            return refusal
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
        conn.sndbuf = set_send_buffer(conn.transport, ep.spec.socket_buffer)
        return None

    async def _handler(self, conn: ServerConnection) -> None:
        assert isinstance(conn, DownstreamConnection)
        ep = conn.endpoint
        if ep is None:  # pragma: no cover - refused in process_request
            return
        if conn.protocol.eof_sent:
            # A malformed frame came with its request: websockets gave up on the connection
            # (and sent EOF) yet completed the handshake. It is not a client.
            ep.remove(conn)
            ep.malformed(conn.label, ValueError("a malformed frame came with the handshake request"))
            conn.transport.abort()
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
        names = ", ".join(sorted(ep.name for ep in self.paths.values()))
        if self.secure:
            tls = next(iter(self.paths.values())).spec.access.tls
            try:
                self.context = tls.context()
            except (OSError, ValueError) as exc:
                raise StartupError(
                    f"endpoint {names}: cannot use the certificate {tls.cert}: {exc}"
                ) from None
            self.tls = tls
        try:
            self.server = await serve(
                self._handler,
                self.host,
                self.port,
                process_request=self._process_request,
                create_connection=self.connection_for,  # type: ignore[arg-type]
                compression="deflate",  # offered only where an endpoint enables it (process_request)
                server_header="Veylor",
                open_timeout=None,  # handshake_timeout: the listener's timer, changed by reloads
                close_timeout=CLOSE_GRACE,
                ping_interval=None,  # keepalive is per endpoint (WebSocketEndpoint), not a task per client
                max_size=2**20,
                logger=logging.getLogger(DOWNSTREAM_LOGGER),
                backlog=BACKLOG,
            )
        except OSError as exc:
            raise StartupError(
                f"endpoint {names}: cannot listen on {self.address}: {os_reason(exc)}"
            ) from None
        self.server.veylor_listener = self  # type: ignore[attr-defined] # its connections find it

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


def _check_access(
    ep: WebSocketEndpoint, conn: DownstreamConnection, request: Request, query: str
) -> Response | None:
    """The endpoint's access rules for one handshake: None to let it in (its token noted
    for revocation), else the refusal (403 or 401), counted by reason and logged
    (rate limited). No token is ever logged."""
    access: WebSocketAccess = ep.spec.access
    origins = request.headers.get_all("Origin")
    origin = origins[0] if len(origins) == 1 else None
    if len(origins) > 1 or not access.origin_ok(origin):
        why = (
            "no Origin header (require_origin)"
            if not origins
            else f"Origin {clipped(origin or '')!r} is not allowed"
        )
        if len(origins) > 1:
            why = "several Origin headers"
        ep.refused("refused_origin", conn.label, why + " (403)")
        return _respond(conn, 403, "Origin not allowed\n")
    auth = access.auth
    if auth is None:
        return None
    token = _presented_token(request, query)
    if token is None:
        ep.refused("refused_no_token", conn.label, "no token (401)")
        response = _respond(conn, 401, "A token is required: Authorization: Bearer TOKEN, or ?token=TOKEN\n")
        response.headers["WWW-Authenticate"] = 'Bearer realm="veylor"'
        return response
    digest = token_digest(token)
    if digest not in auth.digests:  # a lookup by SHA-256: nothing learned from timing
        ep.refused("refused_token", conn.label, "wrong token (401)")
        response = _respond(conn, 401, "Wrong token\n")
        response.headers["WWW-Authenticate"] = 'Bearer realm="veylor", error="invalid_token"'
        return response
    conn.token = digest
    return None


def clipped(text: str, limit: int = 100) -> str:
    """A string a client chose, fit for a log line: control characters escaped, at most
    ``limit`` characters (a request path may be 8 KB, and every line is masked on the
    event loop)."""
    text = printable(text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _presented_token(request: Request, query: str) -> str | None:
    """The token of ``Authorization: Bearer TOKEN``, else of the ``token`` query parameter."""
    for value in request.headers.get_all("Authorization"):
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    if query:
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key == "token" and value:
                return value
    return None


KIND = RuntimeKind(endpoint=WebSocketEndpoint, listener=WebSocketListener)
