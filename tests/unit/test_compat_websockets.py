"""What Veylor relies on inside websockets (veylor/runtime/compat.py): a closed
connection's protocol object is freed by reference counting once compat lets go of it.

When this fails, websockets changed under Veylor: read compat's docstring and fix
:func:`release_protocol` (a client connected during a reload would otherwise stay in
memory for good: the reload freezes the heap, and only the collector frees cycles)."""

from __future__ import annotations

import gc
import weakref

import pytest
from websockets.server import ServerProtocol

from veylor.runtime import compat

REQUEST = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
CLOSE_1000 = bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])


def _open() -> ServerProtocol:
    protocol = ServerProtocol()
    protocol.receive_data(REQUEST)
    [request] = protocol.events_received()
    protocol.send_response(protocol.accept(request))
    protocol.data_to_send()
    return protocol


def _closed_cleanly() -> ServerProtocol:
    protocol = _open()
    protocol.receive_data(CLOSE_1000)
    protocol.receive_eof()
    return protocol


def _cut_mid_frame() -> ServerProtocol:
    protocol = _open()
    protocol.receive_data(b"\x81\x85\x00")  # a text frame cut after its header's first bytes
    protocol.receive_eof()  # EOFError: kept, with its traceback
    return protocol


def _garbage_request() -> ServerProtocol:
    protocol = ServerProtocol()
    protocol.receive_data(b"\x16\x03\x01 not HTTP\r\n\r\n")  # handshake_exc, with its cause
    protocol.receive_eof()
    return protocol


@pytest.mark.parametrize("make", [_closed_cleanly, _cut_mid_frame, _garbage_request])
def test_a_released_protocol_is_freed_without_the_collector(make) -> None:
    gc.collect()
    gc.disable()
    try:
        protocol = make()
        protocol.data_to_send()
        ref = weakref.ref(protocol)
        compat.release_protocol(protocol)
        del protocol
        assert ref() is None, "a closed protocol is still held by a cycle: see compat.release_protocol"
    finally:
        gc.enable()


def test_without_the_release_the_protocol_is_in_a_cycle() -> None:
    """The reason compat exists: should websockets stop keeping its protocol in a cycle,
    release_protocol can go."""
    gc.collect()
    gc.disable()
    try:
        protocol = _cut_mid_frame()
        ref = weakref.ref(protocol)
        del protocol
        assert ref() is not None, "websockets no longer holds its protocol in a cycle: drop release_protocol"
    finally:
        gc.enable()
        gc.collect()
