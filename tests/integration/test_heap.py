"""The collector is tuned when Veylor starts: readers of the state view (the TUI, /graph,
/metrics) make short-lived containers by the thousand, and collected every 700 they were
promoted and then walked in full-heap collections that paused the relay (150 ms every
2 s with 1,000 sources under the TUI; see benchmarks/tui_lag.py --why)."""

from __future__ import annotations

import asyncio
import collections
import gc
import textwrap

from helpers import eventually, free_port, raw_handshake

from veylor.config import load_config
from veylor.graph import build_graph
from veylor.heap import YOUNG
from veylor.reload import Reloader
from veylor.runtime import Runtime
from veylor.server import Server


async def test_startup_collects_the_youngest_generation_rarely(tmp_path, upstream):
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(
            f"""
            sources: {{feed: {{url: "{upstream.url}"}}}}
            endpoints: {{ws: {{websocket: {{port: {free_port()}}}}}}}
            routes: {{all: {{from: feed, to: ws}}}}
            """
        )
    )
    server = Server.load(str(main), watch="off")
    try:
        assert await server.startup()
        assert gc.get_threshold() == (YOUNG, 10, 10)
    finally:
        await server.shutdown()
        gc.set_threshold(*saved)


def _cyclic_garbage() -> collections.Counter[str]:
    """What only a full collection would free, by type (the frozen objects included)."""
    gc.unfreeze()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return collections.Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_reloads_and_clients_leave_no_cycles_a_frozen_heap_would_keep(tmp_path, upstream):
    """A reload freezes the heap (``heap.settle_heap``): cyclic garbage made before it,
    or by objects alive at that moment, is never freed. The soak leaked 30 MiB in 30
    minutes that way: each reload froze a cycle per changed file (a cached file's read
    and its components pointed at each other), and every WebSocket client that left
    without a closing handshake (or in the middle of its request) left its protocol tied
    to itself through the traceback of the error websockets kept."""
    port, sock = free_port(), tmp_path / "ipc.sock"
    (tmp_path / "routes.d").mkdir()
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(
            f"""
            sources: {{feed: {{url: "{upstream.url}"}}}}
            endpoints:
              ws: {{websocket: {{port: {port}}}}}
              ipc: {{unix: {{path: "{sock}"}}}}
            routes: {{all: {{from: feed, to: [ws, ipc], upstream: true}}}}
            """
        )
    )
    alt = tmp_path / "routes.d" / "alt.yaml"
    alt.write_text("routes: {alt: {from: feed, to: ws, filter: {text: {contains: a}}}}\n")
    config = load_config(main, env={})
    rt = Runtime()
    await rt.start(build_graph(config))
    reloader = Reloader(str(main), rt, config, watch="off", env={})
    try:
        await upstream.wait_connected()
        gc.unfreeze()  # what earlier tests left is not this test's
        gc.collect()
        gc.freeze()
        for i in range(6):
            clients = []
            for _ in range(5):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw_handshake("/"))
                await reader.readuntil(b"\r\n\r\n")
                clients.append(("ws", writer))
                _, half = await asyncio.open_connection("127.0.0.1", port)
                half.write(raw_handshake("/")[:30])  # leaves in the middle of its request
                clients.append(("half", half))
                _, unix = await asyncio.open_unix_connection(str(sock))
                clients.append(("unix", unix))
            await asyncio.sleep(0.1)
            await upstream.send("hello")
            alt.write_text(f"routes: {{alt: {{from: feed, to: ws, filter: {{text: {{contains: x{i}}}}}}}}}\n")
            assert (await reloader.reload("test")).applied  # freezes them all, connected
            for n, (kind, writer) in enumerate(clients):
                if kind == "ws" and n % 2:
                    writer.write(bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]))  # a closing handshake
                    await asyncio.sleep(0.01)
                    writer.close()
                elif kind == "ws":
                    writer.transport.abort()  # gone without one
                else:
                    writer.close()
        await eventually(lambda: not any(ep.clients for ep in rt.endpoints.values()), timeout=10)
        await asyncio.sleep(1.5)
        assert _cyclic_garbage() == {}
    finally:
        await reloader.stop()
        await rt.stop()


async def test_closed_connections_are_freed_though_a_reload_froze_them(tmp_path, upstream):
    """As production runs: the heap frozen by a reload while clients are connected, and
    never unfrozen. Once they leave, their protocols must go (websockets' parser, a
    suspended generator, held each protocol until it was closed)."""
    import weakref

    port = free_port()
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(
            f"""
            sources: {{feed: {{url: "{upstream.url}"}}}}
            endpoints: {{ws: {{websocket: {{port: {port}}}}}}}
            routes: {{all: {{from: feed, to: ws}}}}
            """
        )
    )
    config = load_config(main, env={})
    rt = Runtime()
    await rt.start(build_graph(config))
    try:
        await upstream.wait_connected()
        writers = []
        for _ in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw_handshake("/"))
            await reader.readuntil(b"\r\n\r\n")
            writers.append(writer)
        ep = rt.endpoints["ws"]
        await eventually(lambda: len(ep.clients) == 10)
        protocols = [weakref.ref(c.protocol) for c in ep.clients]
        gc.collect()
        gc.freeze()  # what a reload does (settle_heap)
        for i, writer in enumerate(writers):
            if i % 2:
                writer.write(bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]))
                await asyncio.sleep(0.01)
                writer.close()
            else:
                writer.transport.abort()
        await eventually(lambda: not ep.clients, timeout=10)
        await asyncio.sleep(1.0)  # (a closed protocol is released in connection_lost)
        gc.collect()  # the frozen heap stays frozen
        assert [p for p in protocols if p() is not None] == []
    finally:
        gc.unfreeze()
        await rt.stop()
