"""The WebSocket endpoint kind: endpoints at paths of shared host:port listeners
(:mod:`veylor.runtime.wslistener`), their clients :class:`DownstreamConnection`s
(:mod:`veylor.runtime.downstream`)."""

from __future__ import annotations

import asyncio
import logging

from ..config.access import WebSocketAccess
from ..config.common import format_size
from ..config.model import EndpointSpec
from ..config.websocketspec import WebSocketListen
from .budget import Budget
from .clients import ClientEndpoint
from .deflate import SharedDeflate, kind_of
from .downstream import MAX_CONTROL_FRAMES, DownstreamConnection, close_websocket
from .kinds import RuntimeKind
from .stats import EndpointStats
from .wire import WS
from .wsconn import OPEN
from .wslistener import WebSocketListener

log = logging.getLogger("veylor.endpoint")
PING_FRAME = b"\x89\x00"  # an empty ping, built once


class WebSocketEndpoint(ClientEndpoint[DownstreamConnection]):
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
        # compression: shared (runtime/deflate.py): the clients that can take the shared
        # compressed frame, the endpoint's compressor, this pass's compressed frames.
        self.shareable: set[DownstreamConnection] = set()
        self.deflate = SharedDeflate(spec.compression_min_size) if spec.shared_compression else None
        self.pending_shared: list[bytes] = []
        self.per_message = False  # per_client, or shared frames to make: enqueue() keeps more
        self._keepalive: asyncio.TimerHandle | None = None
        self._serving = False
        self.listener: WebSocketListener | None = None  # the one that serves it (set by attach)

    def update(self, spec: EndpointSpec) -> None:
        changed = (spec.ping_interval, spec.ping_timeout) != (self.spec.ping_interval, self.spec.ping_timeout)
        old: WebSocketAccess = self.spec.access
        if (spec.shared_compression, spec.compression_min_size) != (
            self.spec.shared_compression,
            self.spec.compression_min_size,
        ):
            self.flush()  # (this pass's compressed frames as they were made)
            self.deflate = SharedDeflate(spec.compression_min_size) if spec.shared_compression else None
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
        gone = [c for c in self.clients if c.token not in allowed and c.protocol.state is OPEN]
        for conn in gone:
            close_websocket(conn, 1008, "token revoked")
        if gone:
            self.stats.revoked += len(gone)
            log.warning(
                "endpoint %s: closed %d clients whose token is no longer allowed (1008)", self.name, len(gone)
            )

    def close_client(self, client: DownstreamConnection, code: int, reason: str) -> None:
        close_websocket(client, code, reason)

    def start(self) -> None:
        self._serving = True
        self.start_keepalive()

    def stop(self) -> None:
        self._serving = False
        self.stop_keepalive()

    def joined(self, conn: DownstreamConnection) -> None:
        """The handshake is over: a client that negotiated compression gets compressed
        frames (made for it alone) while the endpoint's ``compression`` is on; then what
        the routes into the endpoint keep (a snapshot)."""
        if conn in self.clients:  # (not already gone)
            kind = kind_of(conn.protocol.extensions)
            if self.spec.shared_compression:  # (how it is served, counted by kind)
                stats = self.stats
                if kind == "shared":
                    stats.compression_shared += 1
                elif kind == "none":
                    stats.compression_none += 1
                else:
                    stats.compression_params += 1
            if kind != "none":
                self.compressed.add(conn)
                if kind == "shared":
                    self.shareable.add(conn)
                self._compression_changed()
        super().joined(conn)

    def write_one(
        self, client: DownstreamConnection, data: bytes, messages: list[tuple[bytes, bool]]
    ) -> None:
        """A snapshot to one client: compressed for it alone if it negotiated compression
        and ``compression`` is on (its context is its own), else the shared frames."""
        if self.spec.compression and client in self.compressed:
            send_own(client, messages, data)
        else:
            client.transport.write(data)

    def remove(self, client: DownstreamConnection) -> None:
        super().remove(client)
        if client in self.compressed:
            self.compressed.discard(client)
            self.shareable.discard(client)
            self._compression_changed()

    def _compression_changed(self) -> None:
        """The one place that decides the wire path: per client (compressed) for the
        clients that negotiated permessage-deflate, while ``compression`` is on; the
        shared frame for every other client. Turned off by a reload, the clients that
        had negotiated it get the shared, uncompressed frames (RFC 7692 allows them);
        turned on, new clients negotiate it and get compressed frames."""
        per_client = self.spec.compression and bool(self.compressed)
        shared = self.deflate is not None and bool(self.shareable)
        if self.pending and (per_client, shared) != (
            self.per_client,
            self.per_message and not self.per_client,
        ):
            self.flush()  # this pass's frames as they were made for the way that ends: out now
        self.per_client = per_client
        self.per_message = per_client or shared

    def enqueue(self, frame: bytes | None, data: bytes, is_text: bool) -> bool:
        if self.per_message:
            if self.per_client:
                self.pending_messages.append((data, is_text))
            elif self.deflate is not None and frame is not None:
                self.pending_shared.append(self.deflate.frame(data, is_text, frame))
        return super().enqueue(frame, data, is_text)

    def drop_pending(self) -> None:
        super().drop_pending()
        self.pending_messages, self.pending_shared = [], []

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
        listen = self.spec.listen
        if not isinstance(listen, WebSocketListen):
            raise TypeError(f"endpoint {self.name}: not a WebSocket endpoint")
        return listen.path

    @staticmethod
    def is_open(client: DownstreamConnection) -> bool:
        return client.protocol.state is OPEN

    def flush(self) -> None:
        shared = self.pending_shared
        messages = self.pending_messages
        if not messages and not shared:
            super().flush()
            return
        # Compressed clients: with compression: shared, the frames compressed once for all
        # of them (runtime/deflate.py); with compression: true, their own frames (websockets
        # compresses per connection, with a context of its own: costly, off by default).
        # The other clients get the plain frames, as always.
        self.pending_shared, self.pending_messages = [], []
        frames, self.pending, self.pending_bytes = self.pending, [], 0
        data = b"".join(frames)
        writable = self.writable(frames, data)
        zipped = b"".join(shared)
        compressed = self.shareable if shared else self.compressed if self.spec.compression else ()
        sent = 0  # bytes written: a compressed client's are not the plain frames'
        for conn in writable:
            try:
                if conn not in compressed:
                    conn.transport.write(data)
                    sent += len(data)
                elif shared:
                    conn.transport.write(zipped)
                    # (what it was not given: the budget's count of what it took stays exact)
                    conn.unwritten += len(data) - len(zipped)
                    sent += len(zipped)
                else:
                    sent += send_own(conn, messages, data)
            except Exception as exc:
                self.broken(conn, exc)
        self.written += len(data)
        stats = self.stats
        stats.messages += len(frames)
        stats.messages_out += len(writable) * len(frames)
        stats.bytes_out += sent

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
        self.closing_every_client(code, reason)
        for conn in list(self.clients):
            close_websocket(conn, code, reason)


KIND = RuntimeKind(endpoint=WebSocketEndpoint, listener=WebSocketListener)


def send_own(conn: DownstreamConnection, messages: list[tuple[bytes, bool]], shared: bytes) -> int:
    """Send ``messages`` to a client in frames of its own (compressed with its own
    context), in place of the ``shared`` frames: what it was not given of them (or given
    beyond them) keeps the budget's count of what it took exact. The bytes written."""
    for payload, is_text in messages:
        if is_text:
            conn.protocol.send_text(payload)
        else:
            conn.protocol.send_binary(payload)
    sent = conn.send_data()
    conn.unwritten += len(shared) - sent
    return sent
