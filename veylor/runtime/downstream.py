"""A client connection on a WebSocket endpoint: websockets' sans-I/O ``ServerProtocol``
driven by Veylor's own ``asyncio.Protocol`` (:mod:`veylor.runtime.wsconn`).

Veylor writes downstream data frames itself (built once in :mod:`veylor.runtime.wire`)
straight to the connection's transport: websockets' ``send_*()`` would build one frame
per connection. This stays correct because everything runs on the event loop thread:
every write, ours and the protocol's (pong, close), is a whole frame, so frames never
interleave mid-frame; and we write only while the protocol's state is OPEN, so nothing
follows a close frame. Clients that negotiated permessage-deflate (where
``compression`` is on) are the exception: the protocol frames for them, one client at
a time.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import struct
import termios
from typing import TYPE_CHECKING, Any

from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import MAX_LINE_LENGTH, Request
from websockets.server import ServerProtocol

from ..observe.logs import DOWNSTREAM_LOGGER
from ..report import plural
from .clients import CLOSE_GRACE, release
from .endpoints import ClientState
from .frames import is_data, valid_utf8
from .wsconn import CONNECTING, OPEN, PING, PONG, WebSocketConnection

if TYPE_CHECKING:
    from .websocket import WebSocketEndpoint
    from .wslistener import WebSocketListener

log = logging.getLogger("veylor.endpoint")
protocol_log = logging.getLogger(DOWNSTREAM_LOGGER)
SLOW_CLOSE_CHECK = 0.25  # seconds between checks that a closing client still drains its buffer
CLOSE_DEADLINE = 10.0  # seconds a closing client may take to drain its buffer and answer, at most
CLOSE_STALLED = 1.0  # seconds a closing client may read nothing before it is aborted
MAX_CONTROL_FRAMES = 50  # pings and pongs a client may send per second; more closes it (1008)
END_OF_HEAD = b"\r\n\r\n"
DEFAULT_MAX_SIZE = 2**20  # a request for no endpoint: what its frames could be (none come)


class DownstreamConnection(ClientState, WebSocketConnection):
    """A client connection on a WebSocket endpoint.

    Its handshake is answered as its request arrives, in the same callback (no task);
    incoming data frames go straight to the endpoint (no per-message coroutine, no
    receive queue). Until its request has been read it is one of its listener's
    pending handshakes (bounded in number and in time: ``max_pending``,
    ``max_pending_per_ip``, ``handshake_timeout``). The protocol object is made once
    the request line names a path: its size limit and extensions are its endpoint's.
    """

    endpoint: WebSocketEndpoint | None = None
    listener: WebSocketListener | None = None  # while its handshake is pending
    protocol: ServerProtocol = None  # type: ignore[assignment] # made when its request line is read
    made = False  # connection_made has run (through TLS: once the TLS handshake is done)
    raw: Any = None  # its TCP transport, while TLS is being set up (wss://)
    handshake_timer: asyncio.TimerHandle | None = None
    source: Any = None  # what max_pending_per_ip counts it by, while pending
    pending_since = 0.0  # loop time of its TCP accept
    last_seen = 0.0  # loop time of the last frame received (any kind): the keepalive's clock
    control_window = 0.0  # start of the current second of control-frame counting
    control_count = 0
    control_bytes = 0  # pong bytes queued for it since its buffer was last empty
    head: bytes = b""  # what came before its request line ended
    tail: bytes = b""  # the last bytes of its request fed so far (to find where it ends)
    watching = False  # a close is under way and watched (close_websocket)
    resume_from: float | None = None  # ?since=V (or Veylor-Since: V): it comes back after V

    label = "?"  # the client's address, set when the TCP connection is made (read later,
    # the transport may be closed already)

    def __init__(self, owner: WebSocketListener) -> None:
        self.owner = owner
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.made = True
        if self.raw is None:  # (through TLS, its handshake is pending since the TCP accept)
            self.owner.conns.add(self)
            self.label = peer_label(transport)
            if not self.owner.handshakes.opening(self, transport):
                transport.abort()
                return

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if protocol is None or protocol.state is CONNECTING:
            self.handshake_data(data)
            return
        self.receive(data)
        ep = self.endpoint
        if ep is None:
            return
        size = self.transport.get_write_buffer_size() + self.held
        if not size:
            self.control_bytes = 0  # it reads: what it was sent has gone
        elif size > ep.spec.client_buffer and protocol.state is OPEN:
            ep.over_buffer(self)

    def eof_received(self) -> bool | None:
        if self.protocol is None:  # it sent no request line: nothing to answer
            return None  # (the transport closes itself)
        return super().eof_received()

    def handshake_data(self, data: bytes) -> None:
        """Bytes of its request: the request line picks the endpoint whose settings the
        protocol gets; the request is fed up to its blank line, answered, and only then
        what followed it (frames sent with the request are parsed as frames of an open
        connection, never before the answer)."""
        if self.protocol is None:
            head = self.head + data
            line_end = head.find(b"\r\n")
            if line_end < 0 and len(head) <= MAX_LINE_LENGTH:
                self.head = head
                return
            self.head = b""
            self.protocol = self.owner.protocol_for(_path_of(head[: max(line_end, 0)]))
            data = head
        protocol = self.protocol
        seen = self.tail + data
        end = seen.find(END_OF_HEAD)
        if end < 0:
            self.tail = seen[-3:]
            protocol.receive_data(data)
            rest = b""
        else:
            cut = end + 4 - len(self.tail)
            self.tail = b""
            protocol.receive_data(data[:cut])
            rest = data[cut:]
        events = protocol.events_received()
        if events and isinstance(events[0], Request):
            self.owner.handshake(self, events[0])
        elif protocol.state is not CONNECTING or protocol.close_expected():
            self.request_read()  # it could not be parsed: the protocol answered (400, 414, 431)
            self.send_data()
            self.closing()
            return
        if rest and not self.closed and protocol.state is OPEN:
            self.data_received(rest)

    def frames(self, events: list[Any]) -> None:
        now = self.last_seen = self.loop.time()
        ep = self.endpoint
        for event in events:
            if not is_data(event):
                opcode = event.opcode
                if opcode is PING or opcode is PONG:
                    if now - self.control_window >= 1.0:
                        self.control_window, self.control_count = now, 0
                    self.control_count += 1
                    if opcode is PING:
                        self.control_bytes += len(event.data) + 2  # the pong the protocol queued
                    if self.control_count > MAX_CONTROL_FRAMES and ep is not None:
                        ep.control_flood(self)
                        return
                continue
            message = self.message_of(event)
            if message is None or ep is None or self.protocol.state is not OPEN:
                continue  # incomplete, or the client is being closed: nothing more goes upstream
            data, is_text = message
            if is_text and not valid_utf8(data):
                ep.invalid_text(self.label)
                close_websocket(self, 1007, "invalid UTF-8 in a text frame")
                return
            ep.from_client(self, data, is_text)

    def closing(self) -> None:
        if not self.watching:
            watch_close(self, CLOSE_GRACE)

    def request_read(self) -> None:
        """Its handshake request has arrived (or it is gone): it is no longer pending."""
        listener = self.listener
        if listener is not None:
            self.listener = None
            listener.handshakes.unpend(self)
            if self.handshake_timer is not None:
                self.handshake_timer.cancel()
                self.handshake_timer = None

    def resume_writing(self) -> None:
        self.paused = False
        # What Veylor held while the transport was paused (ClientEndpoint.hold) goes now, unless
        # the connection is closing (a close frame went: nothing may follow).
        release(self, self.protocol is not None and self.protocol.state is OPEN)

    def connection_lost(self, exc: Exception | None) -> None:
        self.request_read()
        self.closed = True
        self.owner.untrack(self)
        if not self.made:  # its TLS handshake failed: the TLS gate counted it
            return
        release(self, write=False)
        if self.protocol is None:
            return
        breach = self.lost()
        ep = self.endpoint
        if ep is not None and self in ep.clients:
            if breach is not None:
                ep.malformed(self.label, breach)  # (closed by the protocol: 1002, 1007, 1009)
            level = ep.departure_level()  # (before the last one's removal ends the one-line mode)
            ep.remove(self)
            log.log(
                level,
                "endpoint %s: client %s disconnected (code %s, %s%s)",
                ep.name,
                self.label,
                self.close_code,
                plural(len(ep.clients), "client"),
                ep.departed(self),
            )


def _path_of(line: bytes) -> str:
    """The path of a request line (``GET /path HTTP/1.1``); empty if it is not one."""
    parts = line.split(b" ")
    if len(parts) != 3:
        return ""
    return parts[1].decode("ascii", "replace").partition("?")[0]


def server_protocol(max_size: int, compression: bool, shared: bool = False) -> ServerProtocol:
    """The protocol object of one client connection: the endpoint's size limit, and
    permessage-deflate offered only where the endpoint enables it (``shared``: without
    context takeover on Veylor's side, whatever the client offered: runtime/deflate.py)."""
    extensions: list[ServerPerMessageDeflateFactory] | None = None
    if shared:
        extensions = [ServerPerMessageDeflateFactory(server_no_context_takeover=True)]
    elif compression:
        extensions = [ServerPerMessageDeflateFactory()]
    return ServerProtocol(
        extensions=extensions,
        max_size=max_size,
        logger=protocol_log,
    )


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


def close_websocket(conn: DownstreamConnection, code: int, reason: str, grace: float = CLOSE_GRACE) -> None:
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
    watch_close(conn, grace)


def watch_close(conn: DownstreamConnection, grace: float) -> None:
    """Bound a close under way (see :func:`close_websocket`)."""
    if conn.closed or conn.watching:
        return
    conn.watching = True
    loop = asyncio.get_running_loop()
    now = loop.time()
    left = _unsent(conn)
    loop.call_later(SLOW_CLOSE_CHECK, _watch_close, conn, now, grace, left, now, None if left else now)


def _unsent(conn: DownstreamConnection) -> int:
    """Bytes not yet read by the client: in Veylor's buffers and in the kernel's send queue."""
    left: int = conn.transport.get_write_buffer_size() + conn.held
    sock = conn.transport.get_extra_info("socket")
    if sock is not None:
        try:
            queued: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
            left += queued
        except OSError:
            pass
    return left


def _watch_close(
    conn: DownstreamConnection,
    began: float,
    grace: float,
    last_left: int,
    progress_at: float,
    drained_at: float | None,
) -> None:
    if conn.closed:
        return
    loop = asyncio.get_running_loop()
    now = loop.time()
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
    loop.call_later(SLOW_CLOSE_CHECK, _watch_close, conn, began, grace, left, progress_at, drained_at)
