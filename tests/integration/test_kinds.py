"""The control plane's seams, with real sockets: the compression wire path follows the
endpoint's setting across reloads; counters outlive the objects that increment them;
a reload request answers with its outcome; a new component kind plugs in without a
change to the supervisor, the fan-out or the diff."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import sys
import types
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from helpers import eventually, free_port, veylor_inprocess, ws_client
from websockets.exceptions import ConnectionClosed

from veylor.config import load_config
from veylor.config.kinds import ENDPOINT_KINDS, Kind, endpoint_from
from veylor.config.model import Config, EndpointSpec, RouteSpec
from veylor.config.websocketspec import SourceSpec
from veylor.graph import Step, build_graph
from veylor.observe.state import snapshot as state_view
from veylor.reload import Reloader
from veylor.runtime import Runtime
from veylor.runtime.clients import ClientEndpoint
from veylor.runtime.kinds import RuntimeKind
from veylor.runtime.wire import Wire

# ---------------------------------------------------------------- a raw client


class RawClient:
    """A hand-made WebSocket client that shows the frames as sent: their RSV1 bit
    (compressed) and payload. It may offer permessage-deflate."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deflate: bool) -> None:
        self.reader, self.writer = reader, writer
        self.deflate = deflate
        self.inflater = zlib.decompressobj(-15)

    @classmethod
    async def connect(cls, port: int, path: str, offer_deflate: bool) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if offer_deflate else ""
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n".encode()
        )
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode().lower()
        assert head.startswith("http/1.1 101"), head
        return cls(reader, writer, "permessage-deflate" in head)

    async def frame(self) -> tuple[bool, bytes]:
        """``(compressed, payload)`` of the next data frame (payload inflated if needed)."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 5)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await self.reader.readexactly(n)
        compressed = bool(first & 0x40)
        if compressed:
            payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
        return compressed, payload

    def close(self) -> None:
        self.writer.close()


def compression_config(upstream, port: int, on: bool) -> str:
    return f"""
sources: {{up: {{url: "{upstream.url}"}}}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}, compression: {str(on).lower()}}}
routes: {{r: {{from: up, to: ws}}}}
"""


async def reload_to(rt: Runtime, tmp_path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    reloader = Reloader(str(path), rt, watch="off", env={})
    outcome = await reloader.reload("test")
    assert outcome.applied, outcome


MESSAGE = b'{"price": "64000.00", "symbol": "BTCUSDT"}' * 20  # compresses well


async def test_compression_turned_on_by_reload_compresses_for_new_clients(tmp_path, upstream):
    port = free_port()
    async with veylor_inprocess(tmp_path, compression_config(upstream, port, False)) as rt:
        await upstream.wait_connected()
        before = await RawClient.connect(port, "/", offer_deflate=True)
        assert not before.deflate  # off: not negotiated
        await reload_to(rt, tmp_path, compression_config(upstream, port, True))
        after = await RawClient.connect(port, "/", offer_deflate=True)
        assert after.deflate
        plain = await RawClient.connect(port, "/", offer_deflate=False)
        await eventually(lambda: len(rt.endpoints["ws"].clients) == 3)
        await upstream.send(MESSAGE.decode())
        assert await after.frame() == (True, MESSAGE)  # the bug: it got uncompressed frames
        assert await before.frame() == (False, MESSAGE)
        assert await plain.frame() == (False, MESSAGE)
        for c in (before, after, plain):
            c.close()


async def test_compression_turned_off_by_reload_puts_every_client_on_the_shared_frames(tmp_path, upstream):
    port = free_port()
    async with veylor_inprocess(tmp_path, compression_config(upstream, port, True)) as rt:
        await upstream.wait_connected()
        client = await RawClient.connect(port, "/", offer_deflate=True)
        assert client.deflate
        ep = rt.endpoints["ws"]
        await eventually(lambda: ep.per_client)
        await upstream.send(MESSAGE.decode())
        assert await client.frame() == (True, MESSAGE)
        await reload_to(rt, tmp_path, compression_config(upstream, port, False))
        assert rt.endpoints["ws"] is ep and not ep.per_client  # the bug: it stayed per client
        await upstream.send(MESSAGE.decode())
        assert await client.frame() == (False, MESSAGE)  # RFC 7692: uncompressed is allowed
        newcomer = await RawClient.connect(port, "/", offer_deflate=True)
        assert not newcomer.deflate
        # And a standard client that had negotiated compression still reads it all.
        client.close()
        newcomer.close()


async def test_a_standard_client_reads_frames_after_compression_is_turned_off(tmp_path, upstream):
    port = free_port()
    async with veylor_inprocess(tmp_path, compression_config(upstream, port, True)) as rt:
        await upstream.wait_connected()
        from websockets.asyncio.client import connect

        client = await connect(f"ws://127.0.0.1:{port}/", open_timeout=5)  # offers deflate
        assert client.protocol.extensions
        await eventually(lambda: rt.endpoints["ws"].per_client)
        await upstream.send("one")
        assert await asyncio.wait_for(client.recv(), 5) == "one"
        await reload_to(rt, tmp_path, compression_config(upstream, port, False))
        await upstream.send("two")
        assert await asyncio.wait_for(client.recv(), 5) == "two"
        await client.close()


# ---------------------------------------------------------------- counters


async def test_counters_outlive_a_rebound_endpoint_and_a_restarted_source(tmp_path, upstream):
    port = free_port()
    config = f"""
sources: {{up: {{url: "{upstream.url}"}}}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /a}}}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/a")
        await eventually(lambda: len(rt.endpoints["ws"].clients) == 1)
        for i in range(5):
            await upstream.send(f"m{i}")
        for _ in range(5):
            await asyncio.wait_for(client.recv(), 5)
        old_ep = rt.endpoints["ws"]
        moved = config.replace("path: /a", "path: /b").replace(upstream.url, upstream.url + "?v=2")
        await reload_to(rt, tmp_path, moved)
        ep, source = rt.endpoints["ws"], rt.sources["up"]
        assert ep is not old_ep  # rebound: a new object ...
        assert ep.stats is old_ep.stats and ep.stats.messages_out == 5 and ep.stats.accepted == 1
        assert source.stats.messages_in == 5 and source.stats.connects == 1
        await upstream.wait_connected()
        await eventually(lambda: source.stats.connects == 2, what="the restarted source connected")
        snapshot = state_view(rt)
        assert snapshot["sources"]["up"]["messages_in"] == 5
        assert snapshot["sources"]["up"]["state"] == "connected"
        assert snapshot["sources"]["up"]["url"].endswith("?v=2")
        assert snapshot["endpoints"]["ws"]["clients"] == 0  # closed: the endpoint moved
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(client.recv(), 5)
        assert (client.close_code, client.close_reason) == (1001, "endpoint moved")
        assert snapshot["config"] == {"generation": 2, "digest": rt.graph.digest}
        assert json.loads(json.dumps(snapshot)) == snapshot
        await client.close()
        # A component removed from the configuration takes its counters with it.
        await reload_to(rt, tmp_path, moved.replace("routes: {r: {from: up, to: ws}}", "routes: {}"))
        snapshot = rt.stats.snapshot()
        assert set(snapshot["routes"]) == set() and set(snapshot["endpoints"]) == {"ws"}


# ---------------------------------------------------------------- reload outcomes


async def test_a_reload_request_answers_with_its_outcome(tmp_path, upstream):
    port = free_port()
    config = f"""
sources: {{up: {{url: "{upstream.url}"}}}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        await eventually(lambda: len(rt.endpoints["ws"].clients) == 1)
        path = tmp_path / "config.yaml"
        reloader = Reloader(str(path), rt, load_config(path, env={}), watch="off", env={})
        reloader.start()
        try:
            path.write_text(
                config.replace(
                    "routes: {r: {from: up, to: ws}}", "routes: {r: {from: up, to: ws, filter: {type: text}}}"
                )
            )
            first, second = reloader.request("one"), reloader.request("two")  # coalesced
            outcome = await asyncio.wait_for(first, 10)
            assert outcome is await second
            assert outcome.applied and outcome.ok and outcome.reason == "one, two"
            assert outcome.changes == ("~ route r: rewire (filter) (1 client on its endpoints)",)
            assert outcome.steps == (Step("swap_routes"),)
            assert outcome.as_dict()["steps"] == [{"op": "swap_routes", "name": "", "detail": []}]
            assert outcome.generation == rt.generation == 2
            path.write_text(config.replace("from: up", "from: nowhere"))
            bad = await asyncio.wait_for(reloader.request("bad"), 10)
            assert not bad.applied and not bad.ok and bad.generation == 2
            (problem,) = bad.problems
            assert problem.location.line == 4 and "unknown source 'nowhere'" in str(problem)
            assert bad.as_dict()["problems"][0]["line"] == 4
            assert reloader.last is bad
            assert rt.stats.process.reloads_failed == 1 and rt.stats.process.reloads_ok == 1
        finally:
            await reloader.stop()
            await client.close()


# ---------------------------------------------------------------- a new kind


@dataclass(frozen=True, slots=True)
class MemoryListen:
    """The spec part of a made-up endpoint kind whose clients are in memory."""

    kind: ClassVar[str] = "memory"
    name: str

    @property
    def listener(self) -> tuple[Any, ...]:
        return ("memory", self.name)

    @property
    def listener_text(self) -> str:
        return f"memory:{self.name}"

    @property
    def claim(self) -> tuple[Any, ...]:
        return self.listener

    group = None

    def check(self) -> list:
        return []

    def secrets(self) -> frozenset[str]:
        return frozenset()

    def describe(self) -> str:
        return f"memory:{self.name}"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name}


class Recorder:
    """A client of the memory kind: what it is written is kept."""

    def __init__(self) -> None:
        self.transport = types.SimpleNamespace(
            write=self.write, get_write_buffer_size=lambda: 0, abort=lambda: None
        )
        self.label, self.dropped, self.dropped_logged_at, self.shed = "mem", 0, 0.0, False
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


SHOUT = Wire("shout", lambda payload, is_text: payload.upper() + b"!")


class MemoryEndpoint(ClientEndpoint):
    wire = SHOUT

    @staticmethod
    def is_open(client: Any) -> bool:
        return True

    def close_clients(self, code: int, reason: str) -> None:
        self.clients.clear()


class MemoryListener:
    started: ClassVar[list[str]] = []

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.endpoints: list[ClientEndpoint] = []

    def attach(self, endpoints):
        self.endpoints = list(endpoints)

    async def start(self) -> None:
        MemoryListener.started.append(self.key[1])

    def stop_accepting(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"memory:{self.key[1]}"


async def test_a_new_endpoint_kind_plugs_in_with_no_change_to_the_runtime(monkeypatch, upstream):
    """The seam the NATS kinds will use: a kind is a row in the registry (config/kinds.py) and one
    module with ``KIND``; the diff, the supervisor and the fan-out take it as it is."""
    module = types.ModuleType("veylor_test_memory_kind")
    module.KIND = RuntimeKind(endpoint=MemoryEndpoint, listener=MemoryListener)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(
        "veylor.config.kinds.ENDPOINT_KINDS",
        {**ENDPOINT_KINDS, "memory": Kind("memory", MemoryListen, module.__name__)},
    )
    monkeypatch.setattr(
        "veylor.runtime.kinds.ENDPOINT_KINDS",
        {**ENDPOINT_KINDS, "memory": Kind("memory", MemoryListen, module.__name__)},
    )
    base = endpoint_from(
        "x", {"unix": {"path": "/nowhere", "mode": "0600", "framing": "lines"}, **ENDPOINT_DEFAULTS}, None
    )
    spec = EndpointSpec(
        **{
            **{f: getattr(base, f) for f in base.__slots__ if f not in ("listen", "access")},
            "listen": MemoryListen("m"),
            "name": "mem",
        }
    )
    source = load_config_source(upstream.url)
    config = Config(
        sources={"up": source},
        endpoints={"mem": spec},
        routes={"r": RouteSpec("r", "up", ("mem",), None, False)},
    )
    rt = Runtime()
    await rt.start(build_graph(config))
    try:
        assert MemoryListener.started == ["m"]
        ep = rt.endpoints["mem"]
        assert isinstance(ep, MemoryEndpoint) and rt.listeners[("memory", "m")].endpoints == [ep]
        client = Recorder()
        ep.add(client)
        await upstream.wait_connected()
        await upstream.send("hello")
        await eventually(lambda: client.data == b"HELLO!", what="the message in the kind's wire")
        assert ep.stats.messages_out == 1
    finally:
        await rt.stop()


ENDPOINT_DEFAULTS = {
    "max_clients": 10,
    "client_buffer": "1MiB",
    "slow_client": "drop",
    "compression": False,
    "max_message_size": "1MiB",
    "ping_interval": None,
    "ping_timeout": None,
    "socket_buffer": None,
}


def load_config_source(url: str) -> SourceSpec:
    from veylor.config.schema import definition, with_defaults
    from veylor.config.websocketspec import source_from

    return source_from("up", with_defaults(definition("source"), {"url": url}), None)


async def test_requests_pending_when_reloading_stops_are_answered(tmp_path, upstream, monkeypatch):
    """Nothing waits forever on a reload: stopping answers every request (not applied)."""
    port = free_port()
    config = compression_config(upstream, port, False)
    async with veylor_inprocess(tmp_path, config) as rt:
        path = tmp_path / "config.yaml"
        reloader = Reloader(str(path), rt, watch="off", env={})
        started = asyncio.Event()
        real = reloader._off_loop

        async def slow(*args):
            started.set()
            await asyncio.sleep(30)
            return await real(*args)

        monkeypatch.setattr(reloader, "_off_loop", slow)
        reloader.start()
        running = reloader.request("first")
        await asyncio.wait_for(started.wait(), 5)
        queued = reloader.request("second")
        await reloader.stop()
        for waiter in (running, queued):
            outcome = await asyncio.wait_for(waiter, 1)
            assert not outcome.applied and "stopped" in outcome.error


async def test_keepalive_turned_on_by_reload_starts_pinging(tmp_path, upstream):
    """An endpoint whose pings were off (ping_interval: null) starts them when a reload
    turns them on: a client that answers nothing is then closed."""
    port = free_port()
    config = f"""
sources: {{up: {{url: "{upstream.url}"}}}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}, ping_interval: null}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        silent = await RawClient.connect(port, "/", offer_deflate=False)  # never answers a ping
        ep = rt.endpoints["ws"]
        await eventually(lambda: len(ep.clients) == 1)
        await reload_to(
            rt, tmp_path, config.replace("ping_interval: null", "ping_interval: 0.2, ping_timeout: 0.2")
        )
        assert rt.endpoints["ws"] is ep
        await eventually(lambda: ep.stats.keepalive_closed == 1, timeout=5, what="the silent client closed")
        silent.close()
