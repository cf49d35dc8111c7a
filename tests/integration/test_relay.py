"""The relay's promises, with a real upstream and real clients on 127.0.0.1 and Unix sockets.

Veylor runs in this event loop (the runtime, not a mock); the process-level promises
(signals, exit codes, the demo) are in test_process.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct

import pytest
from helpers import (
    UnixClient,
    Upstream,
    eventually,
    free_port,
    raw_handshake,
    stalled_ws_client,
    veylor_inprocess,
    ws_client,
)
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(60)


def cfg(upstream: Upstream, port: int, sock: str = "", extra_routes: str = "", source_extra: str = "") -> str:
    unix = f"  ipc: {{unix: {{path: {sock}}}}}\n" if sock else ""
    to = "[ws, ipc]" if sock else "ws"
    return f"""
sources:
  up:
    url: {upstream.url}
    reconnect: {{initial_delay: 0.1, max_delay: 0.5, jitter: 0}}
{source_extra}
endpoints:
  ws: {{websocket: {{port: {port}, path: /feed}}}}
{unix}
routes:
  all: {{from: up, to: {to}, upstream: true}}
{extra_routes}
"""


async def collect(conn, n: int, timeout: float = 20.0, out: list | None = None) -> list:
    """``n`` messages from ``conn`` (into ``out``, if given, where the caller sees them come)."""
    out = [] if out is None else out
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.append(await conn.recv())
    return out


async def test_fanout_50_clients_2000_messages_in_order_text_and_binary(tmp_path, upstream):
    port = free_port()
    async with veylor_inprocess(tmp_path, cfg(upstream, port)) as rt:
        await upstream.wait_connected()
        clients = [await ws_client(f"ws://127.0.0.1:{port}/feed") for _ in range(50)]
        await eventually(lambda: len(rt.endpoints["ws"].clients) == 50)
        expected: list[str | bytes] = []
        for i in range(2000):
            expected.append(
                json.dumps({"seq": i, "pad": "x" * (i % 300)}) if i % 3 else struct.pack("!I", i) * 5
            )
        receivers = [asyncio.create_task(collect(c, len(expected))) for c in clients]
        for message in expected:
            await upstream.send(message)
        results = await asyncio.gather(*receivers)
        for got in results:
            assert got == expected  # all, in order, str stays str (text) and bytes stay bytes
        assert rt.sources["up"].stats.messages_in == 2000
        assert rt.endpoints["ws"].stats.messages_out == 2000 * 50
        for c in clients:
            await c.close()


async def test_mixed_websocket_and_unix_clients_get_the_same_stream(tmp_path, upstream):
    port, sock = free_port(), str(tmp_path / "v.sock")
    async with veylor_inprocess(tmp_path, cfg(upstream, port, sock)):
        await upstream.wait_connected()
        ws = await ws_client(f"ws://127.0.0.1:{port}/feed")
        unix = [await UnixClient.connect(sock) for _ in range(3)]
        await asyncio.sleep(0.1)
        messages = [f"m{i}" for i in range(300)] + [b"\x00\x01binary"]
        for m in messages:
            await upstream.send(m)
        assert await collect(ws, len(messages)) == messages
        for u in unix:
            got = [await u.recv() for _ in messages]
            assert got == [m.encode() if isinstance(m, str) else m for m in messages]
            await u.close()
        await ws.close()


async def test_filters_route_messages_to_endpoints_and_deliver_once(tmp_path, upstream):
    port = free_port()
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  btc: {{websocket: {{port: {port}, path: /btc}}}}
  eth: {{websocket: {{port: {port}, path: /eth}}}}
  both: {{websocket: {{port: {port}, path: /both}}}}
  bin: {{websocket: {{port: {port}, path: /bin}}}}
routes:
  btc: {{from: up, to: [btc, both], filter: {{json: {{path: s, equals: BTC}}}}}}
  eth: {{from: up, to: eth, filter: {{json: {{path: s, in: [ETH]}}}}}}
  majors: {{from: up, to: both, filter: {{json: {{path: s, in: [BTC, ETH]}}}}}}
  binary: {{from: up, to: bin, filter: {{type: binary}}}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        conns = {
            name: await ws_client(f"ws://127.0.0.1:{port}/{name}") for name in ("btc", "eth", "both", "bin")
        }
        await eventually(lambda: all(len(rt.endpoints[n].clients) == 1 for n in conns))
        sent = [json.dumps({"s": s, "i": i}) for i, s in enumerate(["BTC", "ETH", "XRP", "BTC", "not json"])]
        sent[4] = "not json {"
        for m in [*sent, b"\x01\x02"]:
            await upstream.send(m)
        await upstream.send(json.dumps({"s": "END"}))  # a marker nobody but... nobody gets
        assert await collect(conns["btc"], 2) == [sent[0], sent[3]]
        assert await collect(conns["eth"], 1) == [sent[1]]
        # BTC reaches "both" through two routes: delivered once each time.
        assert await collect(conns["both"], 3) == [sent[0], sent[1], sent[3]]
        assert await collect(conns["bin"], 1) == [b"\x01\x02"]
        # Nothing more arrives anywhere.
        for conn in conns.values():
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(conn.recv(), 0.2)
        assert rt.stats.routes["btc"].messages == 2 and rt.stats.routes["majors"].messages == 3
        for conn in conns.values():
            await conn.close()


async def test_shared_port_dispatches_by_path_and_refuses_unknown_paths(tmp_path, upstream):
    port = free_port()
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  a: {{websocket: {{port: {port}, path: /a}}}}
  b: {{websocket: {{port: {port}, path: /b}}}}
routes:
  a: {{from: up, to: a, filter: {{text: {{contains: for-a}}}}}}
  b: {{from: up, to: b, filter: {{text: {{contains: for-b}}}}}}
"""
    async with veylor_inprocess(tmp_path, config):
        await upstream.wait_connected()
        a = await ws_client(f"ws://127.0.0.1:{port}/a?token=ignored")
        b = await ws_client(f"ws://127.0.0.1:{port}/b")
        with pytest.raises(InvalidStatus) as refused:
            await ws_client(f"ws://127.0.0.1:{port}/c")
        assert refused.value.response.status_code == 404
        await asyncio.sleep(0.05)
        for m in ("for-a 1", "for-b 1", "for-a 2"):
            await upstream.send(m)
        assert await collect(a, 2) == ["for-a 1", "for-a 2"]
        assert await collect(b, 1) == ["for-b 1"]
        await a.close()
        await b.close()


async def test_clients_send_upstream_from_websocket_and_unix(tmp_path, upstream):
    port, sock = free_port(), str(tmp_path / "v.sock")
    config = cfg(upstream, port, sock).replace(
        "routes:\n",
        f"  quiet: {{websocket: {{port: {port}, path: /quiet}}}}\nroutes:\n  q: {{from: up, to: quiet}}\n",
    )
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        ws = await ws_client(f"ws://127.0.0.1:{port}/feed")
        quiet = await ws_client(f"ws://127.0.0.1:{port}/quiet")
        unix = await UnixClient.connect(sock)
        await ws.send("text from ws")
        await ws.send(b"\x00binary from ws")
        await unix.send(b"text from unix")
        await unix.send(b"\xff\xfebinary from unix")
        await quiet.send("nobody listens")  # no upstream route to /quiet: discarded, counted
        await eventually(lambda: len(upstream.received) == 4)
        assert sorted(upstream.received, key=repr) == sorted(
            ["text from ws", b"\x00binary from ws", "text from unix", b"\xff\xfebinary from unix"], key=repr
        )
        await eventually(lambda: rt.endpoints["quiet"].stats.discarded == 1)
        assert rt.endpoints["ws"].stats.received == 2 and rt.endpoints["ipc"].stats.received == 2
        await ws.close()
        await quiet.close()
        await unix.close()


async def test_unix_frames_split_or_joined_across_reads(tmp_path, upstream):
    port, sock = free_port(), str(tmp_path / "v.sock")
    async with veylor_inprocess(tmp_path, cfg(upstream, port, sock)):
        await upstream.wait_connected()
        _reader, writer = await asyncio.open_unix_connection(sock)
        one = struct.pack("!I", 11) + b"hello world"
        two = struct.pack("!I", 3) + b"abc" + struct.pack("!I", 3) + b"def"
        for piece in (one[:2], one[2:7], one[7:]):  # one frame in three writes
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(two)  # two frames in one write
        await writer.drain()
        await eventually(lambda: len(upstream.received) == 3)
        assert upstream.received == ["hello world", "abc", "def"]
        writer.close()


@pytest.mark.parametrize(
    ("bad", "why"),
    [(struct.pack("!I", 0), "empty frame"), (struct.pack("!I", 2**31) + b"x" * 10, "exceeds")],
)
async def test_malformed_unix_frame_closes_only_that_client(tmp_path, upstream, caplog, bad, why):
    port, sock = free_port(), str(tmp_path / "v.sock")
    async with veylor_inprocess(tmp_path, cfg(upstream, port, sock)) as rt:
        await upstream.wait_connected()
        good = await UnixClient.connect(sock)
        reader, writer = await asyncio.open_unix_connection(sock)
        await eventually(lambda: len(rt.endpoints["ipc"].clients) == 2)
        writer.write(bad)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by Veylor
        await eventually(lambda: rt.endpoints["ipc"].stats.bad_frames == 1)
        assert any(why in r.getMessage() and "unix#" in r.getMessage() for r in caplog.records)
        await upstream.send("still flowing")
        assert await good.recv() == b"still flowing"
        assert upstream.received == []
        await good.close()


async def test_lines_framing_skips_what_cannot_be_a_line(tmp_path, upstream):
    sock = str(tmp_path / "l.sock")
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  lines: {{unix: {{path: {sock}, framing: lines}}}}
routes:
  r: {{from: up, to: lines, upstream: true}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        reader, writer = await asyncio.open_unix_connection(sock)
        await eventually(lambda: len(rt.endpoints["lines"].clients) == 1)
        for m in ("first", b"binary", "two\nlines", "last"):
            await upstream.send(m)
        assert await asyncio.wait_for(reader.readline(), 5) == b"first\n"
        assert await asyncio.wait_for(reader.readline(), 5) == b"last\n"
        assert rt.endpoints["lines"].stats.unframeable == 2  # two messages, one client each
        writer.write(b"up one\r\nup two\n")
        await writer.drain()
        await eventually(lambda: upstream.received == ["up one", "up two"])
        writer.close()


async def test_upstream_restart_resends_on_connect_then_queued_messages(tmp_path):
    up = await Upstream().start()
    port, sock = free_port(), str(tmp_path / "v.sock")
    extra = "    on_connect: [first, {op: subscribe, id: 1}]\n    upstream_queue: 2\n"
    try:
        async with veylor_inprocess(tmp_path, cfg(up, port, sock, source_extra=extra)) as rt:
            await up.wait_connected()
            await eventually(lambda: len(up.received) == 2)
            assert up.received == ["first", '{"op":"subscribe","id":1}']
            ws = await ws_client(f"ws://127.0.0.1:{port}/feed")
            unix = await UnixClient.connect(sock)
            await up.stop(abort=True)  # dies without a close frame (1006)
            await eventually(lambda: rt.sources["up"].state == "backoff", what="backoff")
            assert "code 1006" in rt.sources["up"].last_error
            await ws.send("q1")
            await eventually(lambda: len(rt.sources["up"].queue) == 1)
            await unix.send(b"q2")
            await eventually(lambda: len(rt.sources["up"].queue) == 2)
            await ws.send("q3 is one too many")  # upstream_queue: 2 -> dropped and counted
            await eventually(lambda: rt.sources["up"].stats.queued_dropped == 1)
            received_before = len(up.received)
            await up.start()  # same port
            await up.wait_connected()
            await eventually(lambda: len(up.received) == received_before + 4)
            assert up.received[received_before:] == ["first", '{"op":"subscribe","id":1}', "q1", "q2"]
            assert up.connects == 2 and rt.sources["up"].stats.connects == 2
            await up.send("after restart")
            assert await ws.recv() == "after restart"  # on_disconnect: keep
            assert await unix.recv() == b"after restart"
            await ws.close()
            await unix.close()
    finally:
        await up.stop()


async def test_on_disconnect_close_clients(tmp_path):
    up = await Upstream().start()
    port, sock = free_port(), str(tmp_path / "v.sock")
    try:
        config = cfg(up, port, sock, source_extra="    on_disconnect: close_clients\n")
        async with veylor_inprocess(tmp_path, config):
            await up.wait_connected()
            ws = await ws_client(f"ws://127.0.0.1:{port}/feed")
            unix = await UnixClient.connect(sock)
            await asyncio.sleep(0.05)
            await up.stop(abort=True)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1011
            assert await asyncio.wait_for(unix.reader.read(), 5) == b""
    finally:
        await up.stop()


class TimedUpstream(Upstream):
    """An upstream that notes when each connection attempt reaches it (the loop's clock),
    served with the given ``serve()`` options (``subprotocols=[...]``, say)."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.serve_kwargs = kwargs
        self.times: list[float] = []

    async def start(self) -> TimedUpstream:
        self.server = await serve(
            self._handler, "127.0.0.1", self.port, compression=None, **self.serve_kwargs
        )
        return self

    async def _handler(self, conn) -> None:
        self.times.append(asyncio.get_running_loop().time())
        await super()._handler(conn)


async def test_upstream_that_accepts_then_closes_does_not_spin(tmp_path):
    """Each attempt waits out the backoff: min(max_delay, initial_delay * multiplier**(n-1)),
    within +-jitter of it and never above max_delay. A connection closed at once does not
    reset the delay (it was not up long enough to count as stable)."""
    initial, multiplier, max_delay, jitter = 0.1, 3, 0.5, 0.2
    up = TimedUpstream()
    up.close_immediately = True
    await up.start()
    try:
        config = f"""
sources:
  up:
    url: {up.url}
    reconnect: {{initial_delay: {initial}, multiplier: {multiplier}, max_delay: {max_delay}, jitter: {jitter}}}
endpoints:
  ws: {{websocket: {{port: {free_port()}}}}}
routes:
  r: {{from: up, to: ws}}
"""
        attempts = 6  # delays of 0.1, 0.3, then 0.5 (capped) three times: about 2 s
        async with veylor_inprocess(tmp_path, config) as rt:
            source = rt.sources["up"]
            await eventually(
                lambda: len(up.times) >= attempts and source.state == "backoff", timeout=30, what="attempts"
            )
            assert source.failures == up.connects  # none of them reset the backoff
        gaps = [b - a for a, b in zip(up.times[: attempts - 1], up.times[1:attempts], strict=True)]
        for n, gap in enumerate(gaps, 1):  # the gap after the n-th failed attempt
            base = min(max_delay, initial * multiplier ** (n - 1))
            low, high = base * (1 - jitter), min(max_delay, base * (1 + jitter))
            # The delay is slept after the upstream saw the attempt: a reliable lower bound
            # (less the timer's millisecond rounding); the upper bound leaves room for a
            # loaded machine (the close handshake and the next connect are in the gap too).
            assert low - 0.005 <= gap <= high + 1.0, (n, gap, low, high, gaps)
    finally:
        await up.stop()


async def test_max_attempts_gives_up(tmp_path):
    config = f"""
sources:
  up:
    url: ws://127.0.0.1:{free_port()}/
    reconnect: {{initial_delay: 0.05, max_delay: 0.1, max_attempts: 3}}
endpoints:
  ws: {{websocket: {{port: {free_port()}}}}}
routes:
  r: {{from: up, to: ws}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await eventually(lambda: rt.sources["up"].state == "stopped", what="giving up")
        assert rt.sources["up"].stats.attempts == 3
        assert (
            "Connect call failed" in rt.sources["up"].last_error or "refused" in rt.sources["up"].last_error
        )


async def test_headers_and_subprotocols_reach_the_upstream(tmp_path, caplog):
    # The upstream speaks two subprotocols: it picks the first of its own that Veylor
    # offers, here the second Veylor offers (not merely the first one offered).
    caplog.set_level(logging.INFO, logger="veylor")
    up = await TimedUpstream(subprotocols=["feed.v1", "feed.v0"]).start()
    extra = '    headers: {X-Api-Key: "k-123"}\n    subprotocols: [veylor.v2, feed.v1]\n'
    try:
        async with veylor_inprocess(tmp_path, cfg(up, free_port(), source_extra=extra)) as rt:
            await up.wait_connected()
            assert up.headers[0]["x-api-key"] == "k-123"
            assert up.headers[0]["user-agent"] == "Veylor"
            assert up.paths == ["/feed"]
            assert up.headers[0]["sec-websocket-protocol"] == "veylor.v2, feed.v1"  # offered, in order
            assert up.connections[0].subprotocol == "feed.v1"  # negotiated, at the upstream
            await eventually(lambda: rt.sources["up"].state == "connected", what="Veylor accepting it")
            assert any("(subprotocol feed.v1)" in r.getMessage() for r in caplog.records)
    finally:
        await up.stop()


@pytest.mark.parametrize("policy", ["disconnect", "drop"])
async def test_slow_client_gets_the_policy_and_others_keep_receiving(tmp_path, upstream, policy):
    port = free_port()
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  ws: {{websocket: {{port: {port}}}, client_buffer: 256KiB, slow_client: {policy}}}
routes:
  r: {{from: up, to: ws}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        stalled = await asyncio.to_thread(stalled_ws_client, port)
        # Healthy readers: no client-side queue limit, so they never push back on Veylor.
        readers = [
            await ws_client(f"ws://127.0.0.1:{port}/", max_size=None, max_queue=None) for _ in range(3)
        ]
        ep = rt.endpoints["ws"]
        await eventually(lambda: len(ep.clients) == 4)
        payload = "x" * 10_000
        n = 1500  # 15 MB: far more than the stalled client's socket buffers and client_buffer
        outs: list[list] = [[] for _ in readers]
        receivers = [
            asyncio.create_task(collect(c, n, 40, out)) for c, out in zip(readers, outs, strict=True)
        ]
        peak = 0
        for i in range(n):
            await upstream.send(f"{i:06d}{payload}")
            if i % 10 == 0:
                await asyncio.sleep(0.002)  # paced: healthy clients keep up, the stalled one cannot
                peak = max([peak] + [c.transport.get_write_buffer_size() for c in ep.clients if c.endpoint])
                # ... even on a machine starved of CPU (the suite runs in parallel), where a
                # reader could fall 256 KiB behind and get the policy too: at most 20 behind.
                while min(map(len, outs)) < i - 20:
                    await asyncio.sleep(0.005)
        results = await asyncio.gather(*receivers)
        for got in results:  # the others got everything, in order
            assert [int(m[:6]) for m in got] == list(range(n))
        if policy == "disconnect":
            await eventually(lambda: ep.stats.slow_disconnects == 1 and len(ep.clients) == 3)
        else:
            assert ep.stats.dropped > 0 and ep.stats.slow_disconnects == 0
            assert len(ep.clients) == 4  # still connected, skipping messages
        # Memory stays bounded: never more than client_buffer plus one pass of frames.
        assert peak < 256 * 1024 + 1024 * 1024
        stalled.close()
        for c in readers:
            await c.close()


async def test_max_clients_refuses_extra_clients(tmp_path, upstream):
    port, sock = free_port(), str(tmp_path / "v.sock")
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  ws: {{websocket: {{port: {port}}}, max_clients: 2}}
  ipc: {{unix: {{path: {sock}}}, max_clients: 1}}
routes:
  r: {{from: up, to: [ws, ipc]}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        a = await ws_client(f"ws://127.0.0.1:{port}/")
        b = await ws_client(f"ws://127.0.0.1:{port}/")
        with pytest.raises(InvalidStatus) as refused:
            await ws_client(f"ws://127.0.0.1:{port}/")
        assert refused.value.response.status_code == 503
        u1 = await UnixClient.connect(sock)
        u2 = await UnixClient.connect(sock)
        assert await asyncio.wait_for(u2.reader.read(), 5) == b""  # closed at once
        assert rt.endpoints["ws"].stats.refused == 1 and rt.endpoints["ipc"].stats.refused == 1
        await a.close()
        await eventually(lambda: len(rt.endpoints["ws"].clients) == 1)
        c = await ws_client(f"ws://127.0.0.1:{port}/")  # a place is free again
        for conn in (b, c):
            await conn.close()
        await u1.close()


def _one_kib_endpoint(upstream, port: int) -> str:
    """A WebSocket endpoint that takes client messages of at most 1 KiB, routed both ways."""
    return f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  ws: {{websocket: {{port: {port}}}, max_message_size: 1KiB}}
routes:
  r: {{from: up, to: ws, upstream: true}}
"""


async def test_oversized_websocket_message_closes_that_client_with_1009(tmp_path, upstream):
    port = free_port()
    config = _one_kib_endpoint(upstream, port)
    async with veylor_inprocess(tmp_path, config):
        await upstream.wait_connected()
        big = await ws_client(f"ws://127.0.0.1:{port}/")
        fine = await ws_client(f"ws://127.0.0.1:{port}/")
        await big.send("x" * 2000)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(big.recv(), 5)
        assert big.close_code == 1009
        await fine.send("y" * 1000)
        await eventually(lambda: upstream.received == ["y" * 1000])
        await fine.close()


async def test_a_client_that_breaks_the_protocol_is_closed_and_counted_as_malformed(tmp_path, upstream):
    """Each way a client can break the WebSocket protocol closes that client with the
    code RFC 6455 gives it and counts it (veylor_endpoint_closed_clients_total, reason
    malformed); the others are not touched. Among them: a frame sent in the same write
    as the handshake request, which is parsed only once the request is answered."""
    port = free_port()
    config = _one_kib_endpoint(upstream, port)
    masked = bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2])  # "hi", masked
    broken = {
        "unmasked": (bytes([0x81, 0x02]) + b"hi", 1002),
        "reserved opcode": (bytes([0x83, 0x80, 0, 0, 0, 0]), 1002),
        "continuation first": (bytes([0x80, 0x80, 0, 0, 0, 0]), 1002),
        "too big": (bytes([0x82, 0xFE, 0x08, 0x00, 0, 0, 0, 0]) + bytes(2048), 1009),
    }
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        ep = rt.endpoints["ws"]
        fine = await ws_client(f"ws://127.0.0.1:{port}/")
        # A good frame in the same write as the request goes upstream.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw_handshake("/") + masked)
        assert b" 101 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        await eventually(lambda: upstream.received == ["hi"], what="the frame sent with the request")
        writer.close()
        for n, (name, (frame, code)) in enumerate(broken.items(), 1):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw_handshake("/") + frame)  # with the request, as any frame may come
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            rest = await asyncio.wait_for(reader.read(), 5)  # the close frame, then EOF
            assert rest[:1] == b"\x88" and struct.unpack("!H", rest[2:4])[0] == code, (name, rest)
            writer.close()
            await eventually(lambda n=n: ep.stats.bad_frames == n, what=f"{name} counted")
        await fine.send("still here")
        await eventually(lambda: upstream.received[-1:] == ["still here"])
        await fine.close()


async def test_fragmented_client_message_is_reassembled(tmp_path, upstream):
    port = free_port()
    async with veylor_inprocess(tmp_path, cfg(upstream, port)):
        await upstream.wait_connected()
        ws = await ws_client(f"ws://127.0.0.1:{port}/feed")
        await ws.send(["frag", "mented"])  # an iterable is sent as one fragmented message
        await eventually(lambda: upstream.received == ["fragmented"])
        await ws.close()


async def test_stale_socket_file_is_replaced_and_removed_on_stop(tmp_path, upstream):
    sock = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # the file stays behind, nobody listens: stale
    async with veylor_inprocess(tmp_path, cfg(upstream, free_port(), str(sock))):
        client = await UnixClient.connect(sock)
        await client.close()
        assert oct(sock.stat().st_mode & 0o777) == oct(0o660)
    assert not sock.exists()


async def test_keepalive_pings_idle_clients_and_closes_silent_ones(tmp_path, upstream):
    port = free_port()
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  ws: {{websocket: {{port: {port}}}, ping_interval: 0.2, ping_timeout: 0.3}}
routes:
  r: {{from: up, to: ws}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        alive = await ws_client(
            f"ws://127.0.0.1:{port}/", ping_interval=None
        )  # answers pings (the library does)
        silent = await asyncio.to_thread(stalled_ws_client, port)  # never reads, never answers
        ep = rt.endpoints["ws"]
        await eventually(lambda: ep.stats.keepalive_closed == 1, timeout=5, what="the silent client closed")
        await eventually(lambda: len(ep.clients) == 1, timeout=5, what="its connection gone")
        assert ep.stats.keepalive_closed == 1  # the one that answers pings was kept
        await upstream.send("still here")
        assert await asyncio.wait_for(alive.recv(), 5) == "still here"
        silent.close()
        await alive.close()


async def test_slow_unix_client_is_disconnected_once_and_others_get_everything(tmp_path, upstream, caplog):
    sock = str(tmp_path / "s.sock")
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  ipc: {{unix: {{path: {sock}}}, client_buffer: 128KiB}}
routes:
  r: {{from: up, to: ipc}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        stalled = socket.socket(socket.AF_UNIX)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(sock)  # and never reads
        reader = await UnixClient.connect(sock)
        ep = rt.endpoints["ipc"]
        await eventually(lambda: len(ep.clients) == 2)
        n = 1500
        got: list[bytes] = []

        async def consume():
            while len(got) < n:
                got.append(await reader.recv(10))

        consumer = asyncio.create_task(consume())
        conn = upstream.connections[0]
        for i in range(0, n, 50):  # bursts: several flushes within one read from upstream
            # The reader has all the earlier bursts: on a machine starved of CPU (the suite
            # runs in parallel) two bursts could reach Veylor in one pass, more than the
            # reader's client_buffer, and the healthy reader would be disconnected too.
            while len(got) < i and not consumer.done():
                await asyncio.sleep(0.005)
            await asyncio.gather(*(conn.send(f"{k:06d}" + "u" * 5000) for k in range(i, i + 50)))
            await asyncio.sleep(0.01)
        await asyncio.wait_for(consumer, 30)
        assert [int(m[:6]) for m in got] == list(range(n))
        await eventually(lambda: len(ep.clients) == 1)
        await asyncio.sleep(0.2)
        assert ep.stats.slow_disconnects == 1  # counted (and logged) once, not once per pass
        assert sum("too slow" in r.getMessage() for r in caplog.records) == 1
        stalled.close()
        await reader.close()


async def test_compression_endpoint_delivers_to_deflate_and_plain_clients(tmp_path, upstream):
    port = free_port()
    config = f"""
sources:
  up: {{url: {upstream.url}}}
endpoints:
  z: {{websocket: {{port: {port}}}, compression: true}}
routes:
  r: {{from: up, to: z}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        deflate = await connect_with(f"ws://127.0.0.1:{port}/", compression="deflate")
        plain = await ws_client(f"ws://127.0.0.1:{port}/")
        await eventually(lambda: len(rt.endpoints["z"].clients) == 2)
        assert deflate.protocol.extensions  # permessage-deflate was negotiated
        messages = ["a" * 1000, b"\x00" * 500, "end"]
        for m in messages:
            await upstream.send(m)
        for conn in (deflate, plain):
            assert [await asyncio.wait_for(conn.recv(), 5) for _ in messages] == messages
            await conn.close()


async def connect_with(url: str, **kwargs):
    from websockets.asyncio.client import connect

    return await connect(url, open_timeout=5, **kwargs)
