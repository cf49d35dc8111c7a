"""Nothing lost or skipped in silence: every message not delivered to a client is
counted with its reason and logged (rate limited), and a slow client that is
disconnected is told why (1008)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct

import pytest
from helpers import eventually, free_port, raw_handshake, stalled_ws_client, veylor_inprocess
from websockets.asyncio.client import connect

from veylor.runtime import clients as runtime_clients

pytestmark = pytest.mark.timeout(60)


def read_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse unmasked server-to-client frames: [(opcode, payload)]."""
    out = []
    pos = 0
    while pos + 2 <= len(data):
        opcode = data[pos] & 0x0F
        n = data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        if pos + n > len(data):
            break
        out.append((opcode, data[pos : pos + n]))
        pos += n
    return out


def paused_client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(raw_handshake("/"))
    sock.settimeout(5)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    sock.settimeout(10)
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def test_slow_client_disconnect_sends_close_1008(tmp_path, upstream):
    """A client that fell behind and is disconnected receives a close frame with 1008
    (policy violation) after what was queued for it, if it reads within the grace."""
    port = free_port()
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  ws: {{websocket: {{port: {port}}}, client_buffer: 64KiB, slow_client: disconnect}}
routes:
  r: {{from: up, to: ws}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        sock = await asyncio.to_thread(paused_client, port)
        ep = rt.endpoints["ws"]
        await eventually(lambda: len(ep.clients) == 1)
        i = 0
        while ep.stats.slow_disconnects == 0 and i < 5000:
            await upstream.send(f"{i:06d}" + "p" * 2000)
            i += 1
            if i % 20 == 0:
                await asyncio.sleep(0.001)
        assert ep.stats.slow_disconnects == 1
        data = await asyncio.to_thread(read_to_eof, sock)  # the client wakes up and reads
        sock.close()
    frames = read_frames(data)
    closes = [payload for opcode, payload in frames if opcode == 8]
    assert closes, f"no close frame among {len(frames)} frames"
    assert struct.unpack("!H", closes[0][:2])[0] == 1008
    seqs = [int(p[:6]) for op, p in frames if op == 1]
    assert seqs == list(range(len(seqs)))  # what it got came in order, nothing in between lost


async def test_dropped_messages_for_a_slow_client_are_counted_and_logged_with_the_count(
    tmp_path, upstream, caplog, monkeypatch
):
    """slow_client: drop used to lose messages without a word."""
    monkeypatch.setattr(runtime_clients, "LOSS_LOG_INTERVAL", 0.3)
    caplog.set_level(logging.INFO, "veylor.endpoint")
    port = free_port()
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  ws: {{websocket: {{port: {port}}}, client_buffer: 64KiB, slow_client: drop}}
routes:
  r: {{from: up, to: ws}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        stalled = await asyncio.to_thread(stalled_ws_client, port)
        ep = rt.endpoints["ws"]
        await eventually(lambda: len(ep.clients) == 1)
        client = next(iter(ep.clients))
        for i in range(3000):
            await upstream.send(f"{i:06d}" + "d" * 2000)
            if i % 50 == 0:
                await asyncio.sleep(0.02)  # spread over more than one log interval
        await eventually(
            lambda: ep.stats.messages_out + ep.stats.dropped == 3000, what="every message accounted for"
        )
        assert ep.stats.dropped > 0 and client.dropped == ep.stats.dropped
        assert ep.stats.undelivered()["slow_client_drop"] == ep.stats.dropped
        stalled.close()
        await eventually(lambda: not ep.clients, what="the client gone")
    lines = [r.getMessage() for r in caplog.records]
    reports = [m for m in lines if "dropped for it so far" in m]
    assert reports, lines
    counts = [int(m.split("buffered): ")[1].split(" ")[0]) for m in reports]
    assert counts == sorted(counts) and counts[-1] <= ep.stats.dropped  # the count so far, growing
    assert any(f"{ep.stats.dropped} messages dropped for it while slow" in m for m in lines)


async def test_lines_framing_counts_and_logs_what_it_cannot_carry(tmp_path, upstream, caplog):
    caplog.set_level(logging.INFO, "veylor.endpoint")
    sock = str(tmp_path / "l.sock")
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  lines: {{unix: {{path: {sock}, framing: lines}}}}
routes:
  r: {{from: up, to: lines}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        readers = [await asyncio.open_unix_connection(sock) for _ in range(2)]
        ep = rt.endpoints["lines"]
        await eventually(lambda: len(ep.clients) == 2)
        for m in ("a", b"bin1", "two\nlines", b"bin2", "three\nmore\nlines", "z"):
            await upstream.send(m)
        for reader, _ in readers:
            assert await asyncio.wait_for(reader.readline(), 5) == b"a\n"
            assert await asyncio.wait_for(reader.readline(), 5) == b"z\n"
        assert ep.stats.unframeable == 8  # four messages, two clients
        assert ep.stats.undelivered()["framing"] == 8
        for _, writer in readers:
            writer.close()
    lines = [r.getMessage() for r in caplog.records]
    binary = [m for m in lines if "cannot carry binary messages" in m]
    newline = [m for m in lines if "cannot carry messages that contain a newline" in m]
    assert len(binary) == 1 and "(2 so far" in binary[0]  # once per interval, with the count
    assert len(newline) == 1 and "its 2 clients" in newline[0]


async def test_a_burst_of_losses_that_stops_is_reported_whole(tmp_path, upstream, caplog, monkeypatch):
    """400 messages a lines endpoint could not carry were logged as '1 so far', twice,
    and never again: the count of a burst that stops is reported when its interval ends."""
    caplog.set_level(logging.INFO, "veylor.endpoint")
    sock = str(tmp_path / "l.sock")
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  lines: {{unix: {{path: {sock}, framing: lines}}}}
routes:
  r: {{from: up, to: lines}}
"""
    monkeypatch.setattr(runtime_clients, "LOSS_LOG_INTERVAL", 0.5)
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        _reader, writer = await asyncio.open_unix_connection(sock)
        await eventually(lambda: len(rt.endpoints["lines"].clients) == 1)
        for i in range(200):
            await upstream.send(b"binary %d" % i)
        await eventually(lambda: rt.endpoints["lines"].stats.unframeable == 200)
        await asyncio.sleep(1.0)  # the burst has stopped; its interval ends
        writer.close()
    reports = [r.getMessage() for r in caplog.records if "cannot carry binary messages" in r.getMessage()]
    assert "(1 so far" in reports[0]
    assert "(200 so far" in reports[-1], reports


async def test_a_client_that_pauses_reading_gets_everything_in_order_from_what_veylor_held(
    tmp_path, upstream
):
    """While a client's transport is paused (the kernel takes nothing more), Veylor keeps
    what it would write (one write request per loop turn for each such client made
    closing it cost every client a pause); when the client reads again, all of it goes,
    in order, before anything newer (WebSocket and Unix; the close frame of a slow client
    comes after it: test_slow_client_disconnect_sends_close_1008)."""
    port = free_port()
    sock_path = tmp_path / "u.sock"
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  ws: {{websocket: {{port: {port}}}}}
  ux: {{unix: {{path: {sock_path}}}}}
routes:
  r: {{from: up, to: [ws, ux]}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        ws_sock = await asyncio.to_thread(paused_client, port)
        ux_sock = socket.socket(socket.AF_UNIX)
        ux_sock.connect(str(sock_path))
        ws, ux = rt.endpoints["ws"], rt.endpoints["ux"]
        await eventually(lambda: len(ws.clients) == 1 and len(ux.clients) == 1)
        clients = [next(iter(ws.clients)), next(iter(ux.clients))]
        held = [0, 0]
        n = 1500
        for i in range(n):  # 1.5 MB each, not read: past the kernel's buffers and the transports'
            await upstream.send(f"{i:06d}" + "h" * 1000)
            if i % 20 == 0:
                await asyncio.sleep(0.001)
                held = [max(h, c.held) for h, c in zip(held, clients, strict=True)]
        await eventually(
            lambda: ws.stats.messages == n and ux.stats.messages == n, what="every message written"
        )
        assert all(held), f"Veylor held nothing for a paused client: {held}"

        def read_all(sock: socket.socket, size: int) -> bytes:
            sock.settimeout(10)
            got = bytearray()
            while len(got) < size:
                chunk = sock.recv(1 << 16)
                assert chunk, "closed early"
                got += chunk
            return bytes(got)

        ws_data, ux_data = await asyncio.gather(
            asyncio.to_thread(read_all, ws_sock, n * 1010), asyncio.to_thread(read_all, ux_sock, n * 1010)
        )
        assert not any(c.held for c in clients)
        ws_seqs = [int(p[:6]) for op, p in read_frames(ws_data) if op == 1]
        assert ws_seqs == list(range(n))
        ux_seqs, pos = [], 0
        while pos + 4 <= len(ux_data):
            (size,) = struct.unpack_from("!I", ux_data, pos)
            ux_seqs.append(int(ux_data[pos + 4 : pos + 10]))
            pos += 4 + size
        assert ux_seqs == list(range(n))
        assert ws.stats.dropped == ux.stats.dropped == 0
        ws_sock.close()
        ux_sock.close()


async def test_a_compressed_client_that_pauses_reading_gets_everything_in_order(tmp_path, upstream):
    """The same for a client that negotiated permessage-deflate (its own frames while it
    reads; the shared frames, uncompressed, which RFC 7692 allows, for what Veylor held)."""
    port = free_port()
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  ws: {{websocket: {{port: {port}}}, compression: true, socket_buffer: 64KiB}}
routes:
  r: {{from: up, to: ws}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        # (max_queue 1: it stops reading its socket while a message waits for recv())
        client = await connect(f"ws://127.0.0.1:{port}/", compression="deflate", max_queue=1, max_size=None)
        ep = rt.endpoints["ws"]
        await eventually(lambda: len(ep.compressed) == 1, what="a compressed client")
        conn = next(iter(ep.clients))
        n, held = 1500, 0
        for i in range(n):
            await upstream.send(f"{i:06d}" + os.urandom(1000).hex())  # (hex: deflate halves it, no more)
            if i % 20 == 0:
                await asyncio.sleep(0.001)
                held = max(held, conn.held)
        assert held, "Veylor held nothing for the paused client"
        got = [int((await asyncio.wait_for(client.recv(), 5))[:6]) for _ in range(n)]
        assert got == list(range(n))
        assert ep.stats.dropped == 0
        await client.close()


async def test_a_tls_client_that_pauses_reading_gets_everything_in_order(tmp_path, upstream):
    """The same through TLS (wss://): what Veylor held goes through the TLS layer's
    transport when it resumes."""
    from test_access_adversarial import _self_signed, _trusting

    cert, key = _self_signed(tmp_path / "pki", "server")
    port = free_port()
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  ws: {{websocket: {{port: {port}, tls: {{cert: "{cert}", key: "{key}"}}}}, socket_buffer: 64KiB}}
routes:
  r: {{from: up, to: ws}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        client = await connect(
            f"wss://127.0.0.1:{port}/", ssl=_trusting(cert), compression=None, max_queue=1, max_size=None
        )
        ep = rt.endpoints["ws"]
        await eventually(lambda: len(ep.clients) == 1)
        conn = next(iter(ep.clients))
        n, held = 1500, 0
        for i in range(n):
            await upstream.send(f"{i:06d}" + "t" * 2000)
            if i % 20 == 0:
                await asyncio.sleep(0.001)
                held = max(held, conn.held)
        assert held, "Veylor held nothing for the paused client"
        got = [int((await asyncio.wait_for(client.recv(), 5))[:6]) for _ in range(n)]
        assert got == list(range(n))
        assert ep.stats.dropped == 0
        await client.close()
