"""``compression: shared`` (issue 27): permessage-deflate with each message compressed once
for every client that negotiated it. Real clients on 127.0.0.1: websockets' own (which
offers deflate its way), hand-made ones that read the frames' bytes, and one that sends
a deflate bomb."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import zlib

import pytest
from helpers import eventually, free_port, veylor_inprocess
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from veylor.observe.metrics import render
from veylor.observe.state import snapshot as state_view

BOOK = json.dumps(
    {"s": "BTCUSDT", "bids": [[f"{100 + i / 100:.2f}", f"{i * 1.5:.4f}"] for i in range(120)]},
    separators=(",", ":"),
)  # an order book: about 2.5 KB of repetitive JSON
TICK = '{"s":"BTCUSDT","p":"101.25"}'  # under compression_min_size: plain for everyone


def config(upstream, port: int, extra: str = "") -> str:
    return f"""
sources: {{feed: {{url: "{upstream.url}"}}}}
endpoints:
  z: {{websocket: {{host: 127.0.0.1, port: {port}}}, compression: shared, max_message_size: 64KiB{extra}}}
routes: {{r: {{from: feed, to: z, upstream: true}}}}
"""


def handshake(extensions: str | None) -> bytes:
    head = (
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
    if extensions is not None:
        head += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    return (head + "\r\n").encode()


class Raw:
    """A hand-made client: its handshake's answer, then every byte after it."""

    def __init__(self, port: int, extensions: str | None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(handshake(extensions))
        self.sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        self.answer, _, self.rest = data.partition(b"\r\n\r\n")
        assert self.answer.startswith(b"HTTP/1.1 101"), self.answer

    def read(self, n: int) -> bytes:
        """At least ``n`` bytes after the handshake."""
        while len(self.rest) < n:
            self.rest += self.sock.recv(65536)
        return self.rest


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """(first byte, payload) of each whole server frame in ``data``."""
    out, pos = [], 0
    while pos + 2 <= len(data):
        n, at = data[pos + 1] & 0x7F, pos + 2
        if n == 126:
            (n,) = struct.unpack("!H", data[at : at + 2])
            at += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[at : at + 8])
            at += 8
        if at + n > len(data):
            break
        out.append((data[pos], data[at : at + n]))
        pos = at + n
    return out


def inflate(payload: bytes) -> bytes:
    """One message on its own (no context from another): what any such client does."""
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


async def test_clients_that_negotiate_share_one_compressed_frame_and_the_others_get_the_plain_one(
    tmp_path, upstream
):
    port = free_port()
    async with veylor_inprocess(tmp_path, config(upstream, port)) as rt:
        ep = rt.endpoints["z"]
        await upstream.wait_connected()
        url = f"ws://127.0.0.1:{port}/"
        deflating = await connect(url, compression="deflate", max_size=None)
        plain = await connect(url, compression=None, max_size=None)
        small_window = await connect(
            url, extensions=[ClientPerMessageDeflateFactory(server_max_window_bits=10)], compression=None
        )
        raw = [
            await asyncio.to_thread(Raw, port, "permessage-deflate; client_max_window_bits") for _ in range(2)
        ]
        assert all(b"server_no_context_takeover" in r.answer for r in raw)  # chosen by Veylor, not asked
        await eventually(lambda: len(ep.clients) == 5 and len(ep.shareable) == 3)
        stats = ep.stats
        assert (stats.compression_shared, stats.compression_none, stats.compression_params) == (3, 1, 1)
        sent = [BOOK, TICK, BOOK.replace("BTC", "ETH"), BOOK.encode()]  # (the last one binary)
        for message in sent:
            await upstream.send(message)
        for client in (deflating, plain, small_window):
            got = [await asyncio.wait_for(client.recv(), 5) for _ in sent]
            assert got == sent
        # The two hand-made clients got the same bytes, frame for frame: made once.
        wire = [await asyncio.to_thread(r.read, 1) for r in raw]
        await asyncio.sleep(0.2)
        wire = [r.rest for r in raw]
        assert wire[0] == wire[1]
        got = frames(wire[0])
        assert len(got) == 4
        assert [bool(first & 0x40) for first, _ in got] == [True, False, True, True]  # RSV1: compressed
        assert [first & 0x0F for first, _ in got] == [1, 1, 1, 2]
        assert inflate(got[0][1]).decode() == BOOK and inflate(got[2][1]).decode() == sent[2]
        assert got[1][1].decode() == TICK
        assert len(got[0][1]) < 0.4 * len(BOOK)  # what it is for
        view = state_view(rt)
        text = render(view)
        assert 'veylor_endpoint_compression_clients_total{endpoint="z",kind="shared"} 3' in text
        assert 'veylor_endpoint_compression_clients_total{endpoint="z",kind="params"} 1' in text
        # bytes on the wire: the compressed clients' count is what they were sent
        assert view["endpoints"]["z"]["bytes_out"] < 5 * sum(len(m) for m in sent)
        for client in (deflating, plain, small_window):
            await client.close()
        for r in raw:
            r.sock.close()


def masked_frame(first: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + mask + body


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


async def test_a_deflate_bomb_from_a_client_is_refused_1009_without_memory_growth(tmp_path, upstream):
    """A client's compressed message inflates within max_message_size at most: 256 MiB of
    zeros in 255 KB is refused (1009) as it inflates, not after."""
    port = free_port()
    async with veylor_inprocess(tmp_path, config(upstream, port)) as rt:
        ep = rt.endpoints["z"]
        await upstream.wait_connected()
        raw = await asyncio.to_thread(Raw, port, "permessage-deflate")
        await eventually(lambda: len(ep.clients) == 1)
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = b"".join(compressor.compress(b"\0" * 2**20) for _ in range(256)) + compressor.flush(
            zlib.Z_SYNC_FLUSH
        )
        bomb = bomb[:-4]
        assert len(bomb) < 300_000
        before = rss()
        raw.sock.sendall(masked_frame(0xC2, bomb))  # FIN, RSV1, binary
        data = await asyncio.to_thread(raw.read, 4)
        close = [p for first, p in frames(data) if first & 0x0F == 8]
        assert close and struct.unpack("!H", close[0][:2])[0] == 1009
        assert rss() - before < 32 * 2**20  # (inflating it all would be 256 MiB)
        await eventually(lambda: not ep.clients, what="closed")
        assert not upstream.received  # nothing of it went upstream
        raw.sock.close()


@pytest.mark.parametrize(
    ("size", "length", "compressed"), [("1KiB", 600, False), (1, 600, True), (1, 300_000, False)]
)
async def test_small_and_huge_messages_go_plain(tmp_path, upstream, size, length, compressed):
    """Under compression_min_size a deflate stream can be larger than the message; over
    256 KiB compressing it would hold the event loop (15 ms for 1 MiB of JSON)."""
    port = free_port()
    text = config(upstream, port, f", compression_min_size: {size}").replace(
        "max_message_size: 64KiB", "max_message_size: 1MiB"
    )
    async with veylor_inprocess(tmp_path, text) as rt:
        ep = rt.endpoints["z"]
        await upstream.wait_connected()
        raw = await asyncio.to_thread(Raw, port, "permessage-deflate")
        await eventually(lambda: len(ep.shareable) == 1)
        await upstream.send("x" * length)
        data = await asyncio.to_thread(raw.read, 2)
        while not frames(data):
            data = await asyncio.to_thread(raw.read, len(data) + 1)
        ((first, payload),) = frames(data)
        assert bool(first & 0x40) == compressed
        assert (inflate(payload) if compressed else payload) == b"x" * length
        raw.sock.close()


CHROMIUM = "/usr/bin/chromium"  # Debian's (.ci/run installs it); Playwright drives it
CHROMIUM_ARGS = [
    "--no-sandbox",  # (as root)
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # (no network here but the loopback)
    "--disable-component-update",
    "--disable-sync",
]


async def blank_page() -> int:
    """An HTTP server on 127.0.0.1 that answers every request with an empty page; its port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"<!doctype html><title>dashboard</title>"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server.sockets[0].getsockname()[1]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (.ci/run installs it)")
@pytest.mark.slow  # (a browser starts: about 2 s)
@pytest.mark.timeout(60)
async def test_a_real_browser_negotiates_shared_compression_and_gets_every_message_intact(tmp_path, upstream):
    from playwright.async_api import async_playwright

    port = free_port()
    async with veylor_inprocess(tmp_path, config(upstream, port)) as rt:
        ep = rt.endpoints["z"]
        await upstream.wait_connected()
        sent = [BOOK, TICK, BOOK.replace("BTC", "ETH"), "é" * 500]
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                # A page from 127.0.0.1 (a dashboard served locally): Chromium's local network
                # access checks refuse a loopback WebSocket from about:blank.
                await page.goto(f"http://127.0.0.1:{await blank_page()}/")
                opened = await page.evaluate(
                    """url => new Promise((resolve, reject) => {
                        window.got = [];
                        const ws = new WebSocket(url);
                        ws.onmessage = e => window.got.push(e.data);
                        ws.onopen = () => resolve(ws.extensions);
                        ws.onerror = () => reject("error");
                        window.ws = ws;
                    })""",
                    f"ws://127.0.0.1:{port}/",
                )
                assert "permessage-deflate" in opened and "server_no_context_takeover" in opened
                await eventually(lambda: len(ep.shareable) == 1, what="the browser takes the shared frame")
                for message in sent:
                    await upstream.send(message)
                await page.wait_for_function(f"window.got.length >= {len(sent)}", timeout=10_000)
                assert await page.evaluate("window.got") == sent
            finally:
                await browser.close()
        assert ep.stats.compression_shared == 1


@pytest.mark.parametrize(
    ("before", "after"),
    [("shared", "false"), ("false", "shared"), ("shared", "true"), ("true", "shared")],
)
async def test_compression_changed_between_two_messages_of_a_pass_loses_none(
    tmp_path, upstream, before, after
):
    """The endpoint keeps this pass's frames in one list per way of sending (plain,
    compressed once, per client): a reload that changes the way between two messages of
    a pass sends the first the way it was made, then the second the new way, both whole.
    (The pass is made explicit: dispatch, apply, dispatch in one callback.)"""
    from test_kinds import RawClient
    from test_reload_edges import graph_of

    port = free_port()

    def text(mode: str) -> str:
        return f"""
sources: {{up: {{url: "{upstream.url}"}}}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}, compression: {mode}, compression_min_size: 1}}
routes: {{r: {{from: up, to: ws}}}}
"""

    async with veylor_inprocess(tmp_path, text(before)) as rt:
        await upstream.wait_connected()
        client = await RawClient.connect(port, "/", offer_deflate=True)
        assert client.deflate == (before != "false")  # (negotiated at its handshake: kept)
        ep = rt.endpoints["ws"]
        await eventually(lambda: bool(ep.clients) and (ep.per_message or before == "false"))
        new = graph_of(tmp_path, text(after), "after.yaml")
        rt.router.dispatch("up", b"first" * 100, True)
        await rt.apply(new)
        rt.router.dispatch("up", b"second" * 100, True)
        got = []
        try:
            while len(got) < 2:
                got.append((await asyncio.wait_for(client.frame(), 2))[1])
        except TimeoutError:
            pass
        client.close()
        assert got == [b"first" * 100, b"second" * 100], got
