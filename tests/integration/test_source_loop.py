"""A source never dies: whatever its upstream does, its loop logs what happened and
reconnects with its backoff, and its state is always true.

Upstreams here are real servers on 127.0.0.1, some of them hand-written so that they
can misbehave in ways a correct WebSocket library never would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging

import pytest
from helpers import Upstream, eventually, free_port, veylor_inprocess, ws_client

from veylor.runtime import source as source_module

pytestmark = pytest.mark.timeout(60)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class SlamUpstream:
    """Completes the WebSocket handshake and, in the same TCP write, sends a close frame,
    then closes: the relay sees the connection open and already closing."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connects = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connects += 1
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + b"\x88\x02\x03\xe8"  # close 1000
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError, StopIteration):
            pass
        finally:
            writer.close()

    async def start(self) -> SlamUpstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def config(url: str, port: int, on_connect: bool = True) -> str:
    extra = "    on_connect: [{op: subscribe, channel: trades}, hello]\n" if on_connect else ""
    return f"""
sources:
  up:
    url: {url}
    reconnect: {{initial_delay: 0.05, max_delay: 0.2, jitter: 0}}
{extra}
endpoints:
  ws: {{websocket: {{port: {port}, path: /}}}}
routes:
  all: {{from: up, to: ws}}
"""


async def test_source_keeps_reconnecting_when_upstream_closes_during_on_connect(tmp_path, caplog):
    """The 1.x bug: an upstream that closes right after the handshake made the on_connect
    send raise outside the handled path: the loop died and the state said 'connected'."""
    caplog.set_level(logging.INFO, "veylor")
    slam = await SlamUpstream().start()
    try:
        async with veylor_inprocess(tmp_path, config(f"ws://127.0.0.1:{slam.port}/", free_port())) as rt:
            src = rt.sources["up"]
            await eventually(lambda: slam.connects >= 6, timeout=10, what="six reconnects")
            assert not src.task.done(), "the source's loop died"
            assert src.state in ("connecting", "backoff")
            assert src.last_error
            await eventually(lambda: src.state == "backoff", what="backoff")
            assert src.conn is None and src.connected_since is None
            # A reload that restarts it never fails because an old task died.
            await src.restart(src.spec)
            await eventually(lambda: slam.connects >= 8, timeout=10, what="reconnects after restart")
            assert not src.task.done()
    finally:
        await slam.stop()
    assert not any(r.levelno >= logging.ERROR for r in caplog.records), [
        r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
    ]


async def test_source_recovers_once_the_upstream_behaves(tmp_path):
    slam = await SlamUpstream().start()
    port = slam.port
    try:
        async with veylor_inprocess(tmp_path, config(f"ws://127.0.0.1:{port}/feed", free_port())) as rt:
            await eventually(lambda: slam.connects >= 3, timeout=10, what="reconnects")
            await slam.stop()
            up = await Upstream(port=port).start()
            try:
                await up.wait_connected()
                await eventually(lambda: rt.sources["up"].state == "connected", what="connected")
                await eventually(lambda: len(up.received) >= 2, what="on_connect messages")
                assert up.received[:2] == ['{"op":"subscribe","channel":"trades"}', "hello"]
            finally:
                await up.stop()
    finally:
        await slam.stop()


async def test_a_bug_in_the_connected_phase_is_logged_and_the_source_reconnects(
    tmp_path, caplog, monkeypatch
):
    """Even an exception Veylor did not foresee ends one attempt, not the source."""
    up = await Upstream().start()
    calls = 0
    real_attach = source_module.UpstreamConnection.attach

    def broken_attach(self, on_message):  # a stand-in for a future bug
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("boom")
        real_attach(self, on_message)

    monkeypatch.setattr(source_module.UpstreamConnection, "attach", broken_attach)
    caplog.set_level(logging.DEBUG, "veylor")
    port = free_port()
    try:
        async with veylor_inprocess(tmp_path, config(up.url, port, on_connect=False)) as rt:
            await eventually(lambda: calls >= 3, timeout=10, what="three attempts")
            await eventually(lambda: rt.sources["up"].state == "connected", what="connected")
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            await eventually(lambda: len(rt.endpoints["ws"].clients) == 1, what="client")
            await up.wait_connected()
            await up.send("after the bug")
            assert await asyncio.wait_for(client.recv(), 5) == "after the bug"
            await client.close()
    finally:
        await up.stop()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    # With the traceback, for the bug report, at most once a minute per source: not at every try.
    assert len(errors) == 1 and "unexpected error" in errors[0].getMessage() and errors[0].exc_info
    assert any(
        "unexpected error again" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG
    )


async def test_repeated_failures_are_summarized_not_logged_each(tmp_path, caplog, monkeypatch):
    """First failure at WARNING, later ones at DEBUG, a summary at INFO per interval, and
    'connected after N failed attempts' when it recovers."""
    monkeypatch.setattr(source_module, "SUMMARY_INTERVAL", 0.5)
    caplog.set_level(logging.DEBUG, "veylor.source")
    port = free_port()
    async with veylor_inprocess(tmp_path, config(f"ws://127.0.0.1:{port}/feed", free_port(), False)) as rt:
        src = rt.sources["up"]
        await asyncio.sleep(2.0)
        failures = src.failures
        assert failures >= 8
        up = await Upstream(port=port).start()
        try:
            await eventually(lambda: src.state == "connected", what="connected")
        finally:
            await up.stop()
    records = [r for r in caplog.records if r.name == "veylor.source"]
    by_level = {
        level: [r.getMessage() for r in records if r.levelno == level]
        for level in (logging.DEBUG, logging.INFO, logging.WARNING)
    }
    cannot = [m for m in by_level[logging.WARNING] if "cannot connect" in m]
    assert len(cannot) == 1, cannot
    summaries = [m for m in by_level[logging.INFO] if "still cannot connect" in m]
    assert 2 <= len(summaries) <= 5, summaries
    assert "attempts failed since" in summaries[0] and "next attempt in" in summaries[0]
    assert sum("failed" in m for m in by_level[logging.DEBUG]) >= failures - 2
    assert any("connected to" in m and "failed attempts" in m for m in by_level[logging.INFO])


async def test_tls_failures_say_what_happened(tmp_path):
    """A TLS failure used to log an empty reason ("cannot connect to wss://...: ")."""
    plain = await Upstream().start()  # a ws:// server at a wss:// URL
    try:
        async with veylor_inprocess(
            tmp_path, config(f"wss://127.0.0.1:{plain.port}/", free_port(), False)
        ) as rt:
            src = rt.sources["up"]
            await eventually(lambda: src.last_error is not None, what="a failed attempt")
            assert "TLS" in src.last_error and "wss://" in src.last_error, src.last_error
    finally:
        await plain.stop()


async def test_an_untrusted_certificate_is_named_as_such(tmp_path):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    from websockets.asyncio.server import serve

    async def handler(conn):
        await conn.wait_closed()

    port = free_port()
    url = f"wss://127.0.0.1:{port}/"
    async with (
        serve(handler, "127.0.0.1", port, ssl=context),
        veylor_inprocess(tmp_path, config(url, free_port(), False)) as rt,
    ):
        src = rt.sources["up"]
        await eventually(lambda: src.last_error is not None, what="a failed attempt")
        assert src.last_error.startswith("TLS certificate verification failed: "), src.last_error
        assert "self-signed" in src.last_error or "self signed" in src.last_error
