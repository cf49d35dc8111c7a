"""The fast path stays a correct WebSocket: coalesced writes hold whole frames, control
frames interleave only between frames, nothing follows a close frame. Not timed."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest
from helpers import Upstream, eventually, free_port, pump, raw_handshake, veylor_inprocess, ws_client

from veylor.runtime.downstream import DownstreamConnection

pytestmark = pytest.mark.timeout(60)
ASYNCIO_LOOP = "asyncio"  # instruments transports (see conftest.py); the rest runs on uvloop


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Strictly parse server-to-client frames: (opcode, payload) list and the unparsed rest."""
    frames, pos = [], 0
    while len(data) - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        assert b0 & 0x70 == 0, "RSV bits set"
        assert b1 & 0x80 == 0, "server frames are not masked"
        assert b0 & 0x80, "every frame is final (no fragmentation)"
        n, start = b1 & 0x7F, pos + 2
        if n == 126:
            if len(data) - pos < 4:
                break
            (n,) = struct.unpack_from("!H", data, pos + 2)
            start = pos + 4
        elif n == 127:
            if len(data) - pos < 10:
                break
            (n,) = struct.unpack_from("!Q", data, pos + 2)
            start = pos + 10
        if len(data) - start < n:
            break
        frames.append((b0 & 0x0F, data[start : start + n]))
        pos = start + n
    return frames, data[pos:]


def config(up: Upstream, port: int) -> str:
    # (client_buffer: the client reads in this process's event loop, after bursts of 1 MB:
    # these tests are about frames, not slow clients)
    return f"""
sources:
  up: {{url: {up.url}}}
endpoints:
  ws: {{websocket: {{port: {port}}}, client_buffer: 64MiB}}
routes:
  r: {{from: up, to: ws}}
"""


def payloads(n: int) -> list[bytes | str]:
    sizes = [0, 1, 125, 126, 200, 65535, 65536, 70000]
    return [
        (f"{i:08d}" + "t" * sizes[i % len(sizes)]) if i % 2 else (b"%08d" % i + b"b" * sizes[i % len(sizes)])
        for i in range(n)
    ]


async def test_every_coalesced_write_holds_whole_frames(tmp_path, upstream, monkeypatch):
    writes: list[bytes] = []
    real_attach = DownstreamConnection.connection_made

    def spy(self, transport):
        real_attach(self, transport)
        real_write = transport.write

        def recording_write(data):
            if self.protocol.state.name == "OPEN":
                writes.append(bytes(data))
            return real_write(data)

        # Instrumentation of the real transport (the bytes still go to the real socket).
        try:
            transport.write = recording_write
        except AttributeError:  # uvloop transports have read-only methods
            pytest.skip("cannot instrument this transport")

    monkeypatch.setattr(DownstreamConnection, "connection_made", spy)
    port = free_port()
    async with veylor_inprocess(tmp_path, config(upstream, port)):
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/", max_size=None, max_queue=None)
        await asyncio.sleep(0.05)
        sent = payloads(400)
        for i in range(0, len(sent), 40):  # bursts: several messages per event-loop pass
            await asyncio.gather(*(upstream.connections[0].send(m) for m in sent[i : i + 40]))
        got = [await asyncio.wait_for(client.recv(), 5) for _ in sent]
        assert got == sent
        await client.close()
    data_writes = [w for w in writes if w[:1] in (b"\x81", b"\x82")]
    assert data_writes, "no data writes were recorded"
    assert any(len(parse_frames(w)[0]) > 1 for w in data_writes), "nothing was coalesced"
    for w in data_writes:
        frames, rest = parse_frames(w)
        assert rest == b"", "a write ended inside a frame"
        assert all(op in (1, 2) for op, _ in frames)


@pytest.mark.latency
async def test_ping_pong_and_close_work_while_streaming_at_full_rate(tmp_path, upstream):
    port = free_port()
    async with veylor_inprocess(tmp_path, config(upstream, port)):
        await upstream.wait_connected()
        # The client pings every 50 ms and gives up after 2 s without a pong.
        client = await ws_client(
            f"ws://127.0.0.1:{port}/", ping_interval=0.05, ping_timeout=2, max_queue=None
        )
        others = [await ws_client(f"ws://127.0.0.1:{port}/", max_queue=None) for _ in range(5)]
        stop = asyncio.Event()

        async def drain(c):
            n = 0
            try:
                async for _ in c:
                    n += 1
            except Exception:
                pass
            return n

        pumping = asyncio.create_task(pump(upstream, stop, size=200, burst=50))
        draining = [asyncio.create_task(drain(c)) for c in others]
        received = 0
        deadline = asyncio.get_running_loop().time() + 1.5
        # 1.5 s of the stream and at least 200 messages (a count, not a rate: a machine
        # starved of CPU, the suite running in parallel, once gave 86 in 1.5 s).
        while received < 200 or asyncio.get_running_loop().time() < deadline:
            await asyncio.wait_for(client.recv(), 5)
            received += 1
        latency = await asyncio.wait_for(await client.ping(), 5)  # answered mid-stream
        assert latency < 2
        await asyncio.wait_for(client.close(), 5)  # the closing handshake completes mid-stream
        assert client.close_code == 1000
        stop.set()
        await pumping
        for c in others:
            await c.close()
        counts = await asyncio.gather(*draining)
        assert received > 100 and min(counts) > 100


async def test_client_closing_mid_stream_never_receives_a_partial_frame(tmp_path, upstream):
    port = free_port()
    async with veylor_inprocess(tmp_path, config(upstream, port)) as rt:
        await upstream.wait_connected()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw_handshake())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        await eventually(lambda: any(c.protocol.state.name == "OPEN" for c in rt.endpoints["ws"].clients))
        stop = asyncio.Event()

        pumping = asyncio.create_task(pump(upstream, stop, size=3000, burst=20))
        stream = await asyncio.wait_for(reader.readexactly(200_000), 10)  # mid-stream
        mask = os.urandom(4)
        payload = struct.pack("!H", 1000)
        writer.write(
            bytes((0x88, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        )
        await writer.drain()
        stream += await asyncio.wait_for(reader.read(), 10)  # until Veylor closes the TCP connection
        stop.set()
        await pumping
        frames, rest = parse_frames(stream)
        assert rest == b"", "the stream ended inside a frame"
        opcodes = [op for op, _ in frames]
        assert opcodes[-1] == 8, "the last frame is the close frame"
        assert 8 not in opcodes[:-1] and all(op == 1 for op in opcodes[:-1])
        numbers = [int(p[:8]) for op, p in frames if op == 1]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # whole, in order
        writer.close()
