"""The listener of WebSocket endpoints: one TCP port (ws:// or wss://), its pending
handshakes, and the answer to each handshake request (which endpoint, access, room)."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from websockets.http11 import Request, Response

from ..config.access import ServerTLS, WebSocketAccess, token_digest
from ..printable import printable
from ..report import plural
from .downstream import DEFAULT_MAX_SIZE, DownstreamConnection, peer_label, server_protocol, source_of
from .endpoints import BACKLOG, StartupError, os_reason, set_send_buffer
from .util import Throttled

if TYPE_CHECKING:
    from websockets.server import ServerProtocol

    from .websocket import WebSocketEndpoint

log = logging.getLogger("veylor.endpoint")
SERVER_HEADER = "Veylor"


class TLSAccept:
    """A wss:// connection from its TCP accept until its TLS handshake is done: it counts
    as a pending handshake from then (``max_pending``, ``max_pending_per_ip``) under one
    deadline (``handshake_timeout``) for the TLS handshake and the WebSocket request that
    follows. The listener accepts the socket itself and hands it to
    ``loop.connect_accepted_socket`` with its TLS context, which calls the connection's
    ``connection_made`` once TLS is done. (With ``ssl=`` on the server, a connection would
    be seen only then: a client that never sends a ClientHello would hold a file
    descriptor, uncounted, for the loop's TLS timeout.) It stands for the transport
    until then: ``abort`` ends the TLS handshake."""

    def __init__(self, addr: Any) -> None:
        self.addr = addr
        self.task: asyncio.Task[None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.addr if name == "peername" else default

    def abort(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def handshake(
        self, listener: WebSocketListener, conn: DownstreamConnection, sock: socket.socket
    ) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: conn,
                sock,
                ssl=listener.context,
                # (the listener's timer comes first)
                ssl_handshake_timeout=listener.handshakes.handshake_timeout + 1,
            )
        except asyncio.CancelledError:  # its handshake_timeout, or evicted, or the listener closed
            conn.request_read()
            listener.untrack(conn)
            raise
        except Exception as exc:  # (ssl.SSLError, ConnectionResetError, TimeoutError, ...)
            if conn.listener is not None:
                conn.request_read()
                listener.tls_failed(conn.label, exc)
            listener.untrack(conn)
            sock.close()


class WebSocketListener:
    """One TCP server on a host:port, dispatching handshakes to endpoints by path.

    During the handshake, in this order: an unknown path gets HTTP 404; an ``Origin``
    not allowed, 403; a missing or wrong token, 401; a full endpoint, 503. Before that,
    a connection is one of the listener's pending handshakes (its
    :class:`PendingHandshakes`): at ``max_pending``, a new one closes the oldest, or is
    closed at once if its source has ``max_pending_per_ip`` pending already; one that has
    not sent its request within ``handshake_timeout`` is dropped. With TLS (wss://) the context is the listener's:
    a reload that renews the certificate loads a new context, for new connections; no
    connection is closed.
    """

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.host, self.port = key[1], key[2]
        self.secure = len(key) > 3
        self.paths: dict[str, WebSocketEndpoint] = {}
        self.server: asyncio.AbstractServer | None = None
        self.tls_tasks: set[asyncio.Task[None]] = set()  # TLS handshakes under way
        self.sockets: list[socket.socket] = []  # wss://: its listening sockets (it accepts itself)
        self.acceptors: list[asyncio.Task[None]] = []
        self._accept_log = Throttled(log)
        self.conns: set[DownstreamConnection] = set()  # every connection it accepted, until it is gone
        self._idle: asyncio.Event | None = None  # set when the last one is gone (close)
        self.handshakes = PendingHandshakes(self)
        self.tls: ServerTLS | None = None  # what the context holds
        self.context: ssl.SSLContext | None = None
        self.refused_log = Throttled(log)

    @property
    def pending(self) -> int:
        """Connections whose handshake request has not been read yet."""
        return len(self.handshakes.conns)

    def describe(self) -> str:
        served = ", ".join(f"{ep.name} ({ep.path})" for ep in self.paths.values())
        return f"{'wss' if self.secure else 'ws'}://{self.address} for {served}"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def attach(self, endpoints: Sequence[WebSocketEndpoint]) -> None:
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
        handshakes = self.handshakes
        handshakes.max_pending = max(a.max_pending for a in accesses)
        handshakes.max_pending_per_ip = max(a.max_pending_per_ip for a in accesses)
        handshakes.handshake_timeout = max(a.handshake_timeout for a in accesses)
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

    def count(self, counter: str) -> None:
        """One more of what happened before a request named an endpoint (``counter``),
        counted by the listener's first endpoint."""
        ep = self._first()
        if ep is not None:
            setattr(ep.stats, counter, getattr(ep.stats, counter) + 1)

    def _first(self) -> WebSocketEndpoint | None:
        """The endpoint that counts what happens before a request names one."""
        return min(self.paths.values(), key=lambda ep: ep.name, default=None)

    def protocol_for(self, path: str) -> ServerProtocol:
        """The protocol object of a connection whose request line names ``path``: its
        endpoint's size limit and compression."""
        ep = self.lookup(path)
        if ep is None:
            return server_protocol(DEFAULT_MAX_SIZE, False)
        return server_protocol(ep.spec.max_message_size, ep.spec.compression, ep.spec.shared_compression)

    def tls_failed(self, label: str, exc: BaseException) -> None:
        """A TLS handshake failed (a plain ws:// client, an old TLS version, garbage)."""
        self.count("tls_failed")
        reason = getattr(exc, "reason", None) or type(exc).__name__
        self.refused_log("listener %s: TLS handshake with %s failed: %s", self.address, label, reason)

    def handshake(self, conn: DownstreamConnection, request: Request) -> None:
        """Answer a connection's handshake request: refused (404, 403, 401, 503, or what
        the protocol finds wrong with it), or accepted and added to its endpoint."""
        conn.request_read()
        protocol = conn.protocol
        ep, response = self._answer(conn, request)
        response.headers["Server"] = SERVER_HEADER
        protocol.send_response(response)
        if ep is None or response.status_code != 101:
            conn.send_data()
            conn.closing()
            return
        conn.endpoint = ep
        conn.last_seen = asyncio.get_running_loop().time()
        ep.add(conn)
        conn.sndbuf = set_send_buffer(conn.transport, ep.spec.socket_buffer)
        conn.send_data()
        ep.stats.accepted += 1
        log.info(
            "endpoint %s: client %s connected (%s)", ep.name, conn.label, plural(len(ep.clients), "client")
        )
        ep.joined(conn)

    def _answer(
        self, conn: DownstreamConnection, request: Request
    ) -> tuple[WebSocketEndpoint | None, Response]:
        protocol = conn.protocol
        path, _, query = request.path.partition("?")
        ep = self.lookup(path)
        if ep is None:
            self.count("refused_path")
            self.refused_log(
                "listener %s: refused client %s: no endpoint at path %s (404)",
                self.address,
                conn.label,
                clipped(path),
            )
            return None, protocol.reject(404, f"No Veylor endpoint at {clipped(path)}\n")
        refusal = _check_access(ep, conn, request, query)
        if refusal is not None:
            return None, refusal
        if ep.histories:  # a client that comes back says after what (?since=V, Veylor-Since: V)
            since, wrong = resume_point(query, request.headers.get_all("Veylor-Since"))
            if wrong is not None:
                ep.stats.refused_since += 1
                return None, protocol.reject(400, wrong)
            conn.resume_from = since
        if not ep.admits(conn.label, " (503)"):
            return None, protocol.reject(503, "Too many clients on this endpoint\n")
        return ep, protocol.accept(request)

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
        loop = asyncio.get_running_loop()
        try:
            if self.secure:
                self.sockets = await _listening_sockets(self.host, self.port)
                self.acceptors = [loop.create_task(self._accept(sock)) for sock in self.sockets]
            else:
                self.server = await loop.create_server(
                    lambda: DownstreamConnection(self), self.host, self.port, backlog=BACKLOG
                )
        except OSError as exc:
            raise StartupError(
                f"endpoint {names}: cannot listen on {self.address}: {os_reason(exc)}"
            ) from None

    async def _accept(self, listening: socket.socket) -> None:
        """wss://: accept connections; each is a pending handshake from now (see
        :class:`TLSAccept`)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, addr = await loop.sock_accept(listening)
            except OSError as exc:  # out of file descriptors, say: the kernel keeps the backlog
                self._accept_log("listener %s: cannot accept a connection: %s", self.address, os_reason(exc))
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            pending = TLSAccept(addr)
            conn = DownstreamConnection(self)
            self.conns.add(conn)
            conn.label = peer_label(pending)  # type: ignore[arg-type]
            conn.raw = pending
            if self.context is None or not self.handshakes.opening(conn, pending):  # type: ignore[arg-type]
                self.untrack(conn)
                sock.close()
                continue
            pending.task = loop.create_task(pending.handshake(self, conn, sock))
            self.tls_tasks.add(pending.task)
            pending.task.add_done_callback(self.tls_tasks.discard)

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.acceptors:
            task.cancel()
        self.acceptors = []
        for sock in self.sockets:
            sock.close()
        self.sockets = []

    async def close(self) -> None:
        """Stop accepting and wait until its endpoints' clients are gone (each endpoint
        bounds its clients' closes) and its TLS handshakes are over."""
        self.stop_accepting()
        for task in list(self.tls_tasks):
            task.cancel()
        if self.tls_tasks:
            await asyncio.gather(*self.tls_tasks, return_exceptions=True)
        if self.conns:
            self._idle = asyncio.Event()
            await self._idle.wait()

    def untrack(self, conn: DownstreamConnection) -> None:
        """A connection it accepted is gone."""
        self.conns.discard(conn)
        if not self.conns and self._idle is not None:
            self._idle.set()


class PendingHandshakes:
    """A listener's connections whose handshake request has not been read yet, oldest
    first, and how many of them each source (client address) has: bounded in number
    (``max_pending``, ``max_pending_per_ip``: see :meth:`opening`) and in time
    (``handshake_timeout``, TLS included). The listener takes the limits from its
    endpoints' settings."""

    def __init__(self, listener: WebSocketListener) -> None:
        self.listener = listener
        self.conns: dict[DownstreamConnection, None] = {}
        self.sources: dict[Any, int] = {}
        self.max_pending = 256
        self.max_pending_per_ip = 16
        self.handshake_timeout = 10.0
        self._per_ip_log = Throttled(log)
        self._evicted_log = Throttled(log)

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
        if len(self.conns) >= self.max_pending:
            if held >= self.max_pending_per_ip:
                self.listener.count("refused_pending")
                self._per_ip_log(
                    "listener %s: closed a new connection from %s at once: %d handshakes are pending "
                    "(max_pending), %d of them from its address (max_pending_per_ip)",
                    self.listener.address,
                    conn.label,
                    len(self.conns),
                    held,
                )
                return False
            while len(self.conns) >= self.max_pending:
                self.evict(next(iter(self.conns)))
        self.conns[conn] = None
        self.sources[source] = held + 1
        conn.source = source
        conn.listener = self.listener
        conn.pending_since = conn.loop.time()
        conn.handshake_timer = conn.loop.call_later(self.handshake_timeout, self.expired, conn)
        return True

    def unpend(self, conn: DownstreamConnection) -> None:
        """``conn`` is no longer pending (its request arrived, or it is gone)."""
        del self.conns[conn]
        left = self.sources[conn.source] - 1
        if left:
            self.sources[conn.source] = left
        else:
            del self.sources[conn.source]

    def evict(self, conn: DownstreamConnection) -> None:
        """Close the oldest pending handshake to make room for a new connection."""
        self.listener.count("pending_evicted")
        self._evicted_log(
            "listener %s: closed the oldest pending handshake (%s, pending for %.1fs) to make room for a "
            "new connection: %d handshakes are pending (max_pending)",
            self.listener.address,
            conn.label,
            conn.loop.time() - conn.pending_since,
            len(self.conns),
        )
        conn.request_read()
        (conn.transport if conn.made else conn.raw).abort()

    def expired(self, conn: DownstreamConnection) -> None:
        """A connection's handshake_timeout: it is dropped (TLS included)."""
        conn.handshake_timer = None
        if conn.listener is None:
            return
        self.timed_out(conn.label)
        conn.request_read()
        (conn.transport if conn.made else conn.raw).abort()

    def timed_out(self, label: str) -> None:
        """A connection did not complete its handshake in time: counted and logged."""
        self.listener.count("handshake_timeouts")
        self.listener.refused_log(
            "listener %s: dropped %s: no complete handshake within %gs (handshake_timeout)",
            self.listener.address,
            label,
            self.handshake_timeout,
        )


ACCEPT_RETRY = 0.1  # seconds before accepting again after accept() failed


async def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host`` (every address it resolves
    to) and ``port``, as ``loop.create_server`` makes them."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


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
        return conn.protocol.reject(403, "Origin not allowed\n")
    auth = access.auth
    if auth is None:
        return None
    token = _presented_token(request, query)
    if token is None:
        ep.refused("refused_no_token", conn.label, "no token (401)")
        response = conn.protocol.reject(
            401, "A token is required: Authorization: Bearer TOKEN, or ?token=TOKEN\n"
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="veylor"'
        return response
    digest = token_digest(token)
    if digest not in auth.digests:  # a lookup by SHA-256: nothing learned from timing
        ep.refused("refused_token", conn.label, "wrong token (401)")
        response = conn.protocol.reject(401, "Wrong token\n")
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


def resume_point(query: str, headers: Sequence[str]) -> tuple[float | None, str | None]:
    """Where a client comes back from: ``?since=V`` or the header ``Veylor-Since: V``
    (None: it does not say), or why that cannot be read (the 400's text). Said twice,
    it is one number or refused: ``?since=1`` with ``Veylor-Since: 1.0`` is one (a
    client library may write it either way), two headers are read as two values (not
    the error that reading one header of two raised in the handshake)."""
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "since"]
    values.extend(headers)
    if not values:
        return None, None
    numbers: set[float] = set()
    for value in values:
        try:
            number = float(value)
        except ValueError:
            return None, f"since is not a number: {clipped(value)}\n"
        if not math.isfinite(number):
            return None, "since is not a finite number\n"
        numbers.add(number)
    if len(numbers) > 1:
        return None, "since is given twice, with two values\n"
    return numbers.pop(), None
