"""Veylor's own ``asyncio.Protocol`` around websockets' sans-I/O protocol objects.

websockets parses and builds the protocol (``ServerProtocol`` for clients of an
endpoint, ``ClientProtocol`` for sources); this layer only moves bytes between it and
the transport, on the event loop, with no task and no queue per connection. Data
frames go straight to Veylor as they are parsed (:meth:`WebSocketConnection.frames`);
the fan-out writes its pre-built frames to the transport itself, never through the
protocol (see :mod:`veylor.runtime.websocket`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import Opcode
from websockets.protocol import Protocol, State

from . import compat
from .frames import DataFrames

OPEN, CONNECTING, CLOSED = State.OPEN, State.CONNECTING, State.CLOSED
PING, PONG = Opcode.PING, Opcode.PONG


WRITE_LIMIT = 2**15  # bytes in a transport's buffer that pause writing


class WebSocketConnection(DataFrames, asyncio.Protocol):
    """One WebSocket connection: a websockets protocol object (``protocol``) driven by the
    transport's callbacks. Subclasses take the events (:meth:`frames`)."""

    protocol: Protocol
    transport: Any = None  # asyncio's or uvloop's transport (through TLS: the TLS layer's)
    closed = False  # connection_lost has run
    paused = False  # the transport holds more than its high-water mark (pause_writing)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # Paused at 32 KiB, resumed at 8 KiB (websockets' own connections' limits): what
        # a client cannot take at once waits in Veylor (ClientEndpoint.hold), whole frames.
        transport.set_write_buffer_limits(WRITE_LIMIT)

    def send_data(self) -> int:
        """Write what the protocol has to send (pongs, close frames, handshake answers);
        the number of bytes written. An empty chunk is the end of the stream: the TCP
        connection is half-closed (through TLS, which cannot half-close: closed)."""
        n = 0
        transport = self.transport
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
                n += len(data)
            elif transport.can_write_eof():
                try:
                    transport.write_eof()
                except Exception:  # uvloop may raise RuntimeError on a closing transport
                    pass
            else:
                transport.close()
        return n

    def receive(self, data: bytes) -> None:
        """Feed bytes from the network to the protocol and act on what they made."""
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        if events:
            self.frames(events)
        self.send_data()
        if protocol.close_expected():
            self.closing()

    def frames(self, events: list[Any]) -> None:
        """Events the protocol parsed: data and control frames (the handshake's own are
        taken before, by the subclass)."""
        raise NotImplementedError

    def closing(self) -> None:
        """The protocol expects the TCP connection to close soon (a close frame was sent
        or received, or the protocol failed): the subclass bounds how long it may take."""

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self.send_data()
        return None  # the transport closes itself

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def lost(self) -> Exception | None:
        """The connection is gone: the protocol learns it (so its close code is known),
        then lets go of what it holds (see :func:`compat.release_protocol`). The peer's
        breach of the protocol that closed it, if one did (a malformed frame, a message
        over the size limit; not a connection that just ended)."""
        self.closed = True
        protocol = self.protocol
        protocol.receive_eof()
        protocol.data_to_send()  # (nothing can be sent any more)
        breach = None
        if protocol.state is CLOSED:
            cause = protocol.close_exc.__cause__
            if isinstance(cause, ProtocolError | PayloadTooBig | UnicodeDecodeError):
                breach = cause
        compat.release_protocol(protocol)
        return breach

    @property
    def close_code(self) -> int | None:
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        return self.protocol.close_reason
