"""A source's connection to its upstream: websockets' sans-I/O ``ClientProtocol`` driven
by Veylor's own ``asyncio.Protocol`` (:mod:`veylor.runtime.wsconn`).

Data frames go straight to the fan-out as they are parsed: no receive queue, no
decoding of text to ``str`` (the relay takes the payload bytes and the frame type, and
decodes only if a filter asks, see :class:`veylor.message.Message`). Keepalive is one
timer per connection: a ping every ``ping_interval``; no pong within ``ping_timeout``
fails the connection (1011), as websockets' own client does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidMessage
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from .frames import is_data
from .wsconn import OPEN, PONG, WebSocketConnection

USER_AGENT = "Veylor"


class UpstreamConnection(WebSocketConnection):
    """One connection to an upstream, from the TCP connect to its close.

    Frames that arrive with the handshake response, before the source attaches, are
    kept and handed over by :meth:`attach`.
    """

    protocol: ClientProtocol
    on_message: Callable[[bytes, bool], None] | None = None
    _early: list[tuple[bytes, bool]] | None = None
    _closing = False  # its abort is scheduled, should the server not close in time
    # seconds: the round trip of the last keepalive ping (None: none answered yet; 0.0 is a
    # round trip shorter than the event loop's clock tells: uvloop's counts milliseconds)
    latency: float | None = None

    def __init__(
        self,
        protocol: ClientProtocol,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
    ) -> None:
        self.protocol = protocol
        self.loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = self.loop.create_future()
        self.ended: asyncio.Future[None] = self.loop.create_future()
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.close_timeout = close_timeout
        self._ping: tuple[bytes, float] | None = None  # the ping awaiting its pong: payload, sent at
        self._timers: list[asyncio.TimerHandle] = []

    # ------------------------------------------------------------------ transport callbacks

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if self.opened.done():
            self.receive(data)
            return
        protocol.receive_data(data)
        events = protocol.events_received()
        if events and isinstance(events[0], Response):
            if protocol.handshake_exc is not None:
                self.opened.set_exception(protocol.handshake_exc)
            else:
                self.opened.set_result(None)
                self._start_keepalive()
            events = events[1:]
            if events and protocol.state is OPEN:
                self.frames(events)
        self.send_data()
        if protocol.close_expected():
            self.closing()

    def frames(self, events: list[Any]) -> None:
        for event in events:
            if is_data(event):
                message = self.message_of(event)
                if message is None:
                    continue
                if self.on_message is not None:
                    self.on_message(*message)
                else:  # frames that arrived with the handshake response, before the source attached
                    if self._early is None:
                        self._early = []
                    self._early.append(message)
            elif event.opcode is PONG and self._ping is not None and event.data == self._ping[0]:
                self.latency = self.loop.time() - self._ping[1]
                self._ping = None

    def closing(self) -> None:
        """A client waits for the server to close the TCP connection; not forever."""
        if not self._closing:
            self._closing = True
            self._later(self.close_timeout, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.lost()
        if not self.opened.done():
            error = self.protocol.handshake_exc
            if error is None:
                error = InvalidMessage("did not receive a valid HTTP response")
                error.__cause__ = exc or EOFError("connection closed during the handshake")
            self.opened.set_exception(error)
            self.opened.exception()  # (retrieved: open() may be gone already, on its timeout)
        if not self.ended.done():
            self.ended.set_result(None)

    # ------------------------------------------------------------------ for the source

    @property
    def subprotocol(self) -> Subprotocol | None:
        return self.protocol.subprotocol

    def attach(self, on_message: Callable[[bytes, bool], None]) -> None:
        self.on_message = on_message
        early, self._early = self._early or [], None
        for data, is_text in early:
            on_message(data, is_text)

    async def wait_closed(self) -> None:
        await asyncio.shield(self.ended)

    async def close(self, code: int, reason: str) -> None:
        """The closing handshake; the TCP connection is aborted if it does not end in
        ``close_timeout`` seconds."""
        if self.protocol.state is OPEN:
            self.protocol.send_close(code, reason)
            self.send_data()
            self.closing()
        await self.wait_closed()

    # ------------------------------------------------------------------ keepalive

    def _later(self, delay: float, callback: Callable[[], Any]) -> None:
        if not self.closed:
            self._timers = [t for t in self._timers if not t.cancelled() and t.when() > self.loop.time()]
            self._timers.append(self.loop.call_later(delay, callback))

    def _start_keepalive(self) -> None:
        if self.ping_interval is not None:
            self._later(self.ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        if self.closed or self.protocol.state is not OPEN:
            return
        payload = os.urandom(4)
        self._ping = (payload, self.loop.time())
        self.protocol.send_ping(payload)
        self.send_data()
        if self.ping_timeout is not None:
            self._later(self.ping_timeout, lambda: self._check_pong(payload))
        self._start_keepalive()

    def _check_pong(self, payload: bytes) -> None:
        if self._ping is not None and self._ping[0] == payload and self.protocol.state is OPEN:
            self.protocol.fail(1011, "keepalive ping timeout")
            self.send_data()
            self.closing()


async def open_upstream(
    url: str,
    *,
    headers: Sequence[tuple[str, str]],
    subprotocols: Sequence[str],
    open_timeout: float | None,
    ping_interval: float | None,
    ping_timeout: float | None,
    close_timeout: float,
    max_size: int | None,
    context: ssl.SSLContext | None,
    logger: logging.Logger,
) -> UpstreamConnection:
    """Connect to ``url`` and complete the opening handshake within ``open_timeout``
    (TCP, TLS and HTTP together). Raises what went wrong: ``InvalidURI``, ``OSError``,
    ``ssl.SSLError``, ``TimeoutError``, ``InvalidStatus`` and the other
    ``InvalidHandshake`` errors of websockets."""
    uri = parse_uri(url)
    protocol = ClientProtocol(
        uri,
        extensions=enable_client_permessage_deflate(None),
        subprotocols=[Subprotocol(p) for p in subprotocols] or None,
        max_size=max_size,
        logger=logger,
    )
    conn = UpstreamConnection(protocol, ping_interval, ping_timeout, close_timeout)
    loop = asyncio.get_running_loop()
    tls: dict[str, Any] = {}
    if uri.secure:
        tls = {"ssl": context or ssl.create_default_context(), "server_hostname": uri.host}
    try:
        async with asyncio.timeout(open_timeout):
            await loop.create_connection(lambda: conn, uri.host, uri.port, **tls)
            request = protocol.connect()
            request.headers.update(headers)
            request.headers.setdefault("User-Agent", USER_AGENT)
            protocol.send_request(request)
            conn.send_data()
            await conn.opened
    except BaseException:
        if conn.transport is not None:
            conn.transport.abort()
        raise
    return conn
