"""Taps (the TUI's m, /graph?tap=ROUTE): the last messages that passed a route, one
escaped line each; nothing in the routing table while no tap is on; a lease that ends
by itself; a cap on taps; a reload that changes or removes the route; and over HTTP
for `veylor top`."""

from __future__ import annotations

import asyncio
import json
import textwrap

import aiohttp
import pytest
from helpers import VeylorProcess, eventually, free_port, veylor_inprocess, ws_client

from veylor.config import load_config
from veylor.graph import build_graph
from veylor.runtime import supervisor
from veylor.runtime.tap import LINE, MAX_TAPS, one_line


def config(upstream, port: int, routes: str) -> str:
    return f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{ws: {{websocket: {{port: {port}, path: /ws}}}}}}
        routes:
{textwrap.indent(textwrap.dedent(routes), " " * 10)}
        """


def test_one_line_escapes_truncates_and_shows_binary_as_hex():
    assert one_line(b"plain", True) == "plain"
    assert one_line(b"a\nb\r\tc\x1b[2Jd", True) == r"a\nb\r\tc\x1b[2Jd"  # no escape sequence gets out
    assert one_line("x\u2028y\x85z".encode(), True) == r"x\u2028y\x85z"
    assert one_line(b"caf\xc3\xa9 \xff", True) == "café \ufffd"  # invalid UTF-8 shown, not raised
    long = one_line(b"x" * 5000, True)
    assert len(long) == LINE and long.endswith("…")
    wide = one_line("é".encode() * 150, True)  # 300 bytes, 150 characters: not cut
    assert wide == "é" * 150
    assert one_line(b"\x00\x01\xff", False) == "<binary, 3 bytes> 00 01 ff"
    big = one_line(bytes(range(256)) * 10, False)
    assert big.startswith("<binary, 2,560 bytes> 00 01 02") and big.endswith("…")


async def test_a_tap_costs_nothing_while_off_and_ends_with_its_lease(tmp_path, upstream, monkeypatch):
    monkeypatch.setattr(supervisor, "LEASE", 1.0)
    port = free_port()
    routes = """
        all: {from: feed, to: ws}
        btc: {from: feed, to: ws, filter: {text: {contains: BTC}}}
    """
    async with veylor_inprocess(tmp_path, config(upstream, port, routes)) as rt:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/ws")
        fan = rt.router.table["feed"]
        assert fan.taps == () and [st for _, _, st in fan.filtered] == [rt.stats.route("btc")]

        tap = rt.tap("all")
        tapped = rt.router.table["feed"]
        assert tapped.taps == (tap,) and tapped.always == ()  # dispatched through the tap
        for i in range(5):
            await upstream.send(f"BTC {i}" if i % 2 else f"ETH {i}")
        got = [await asyncio.wait_for(client.recv(), 5) for _ in range(5)]
        assert got == ["ETH 0", "BTC 1", "ETH 2", "BTC 3", "ETH 4"]  # once each (two routes, one endpoint)
        assert [d for d, _, _ in tap.messages] == [b"ETH 0", b"BTC 1", b"ETH 2", b"BTC 3", b"ETH 4"]
        assert rt.stats.route("all").messages == 5 and rt.stats.route("btc").messages == 2
        assert tap.as_dict()["messages"][0] == "ETH 4"  # newest first

        # Not renewed: the tick ends it, and the table is the untapped one again.
        await eventually(lambda: not rt.taps, 5, what="the lease to end")
        untapped = rt.router.table["feed"]
        assert untapped.taps == () and untapped.always != () and len(untapped.filtered) == 1
        await upstream.send("ETH 5")
        await asyncio.wait_for(client.recv(), 5)
        assert len(tap.messages) == 5  # the old tap saw nothing more
        assert rt.stats.route("all").messages == 6
        await client.close()


async def test_taps_are_capped_follow_a_reload_and_go_with_their_route(tmp_path, upstream):
    port = free_port()
    routes = "\n".join(f"r{i}: {{from: feed, to: ws}}" for i in range(MAX_TAPS + 1))
    async with veylor_inprocess(tmp_path, config(upstream, port, routes)) as rt:
        await upstream.wait_connected()
        for i in range(MAX_TAPS):
            rt.tap(f"r{i}")
        with pytest.raises(OverflowError):
            rt.tap(f"r{MAX_TAPS}")
        rt.tap("r0")  # renewing one already on is not another
        with pytest.raises(KeyError):
            rt.tap("nowhere")

        # A reload gives r0 a filter and removes r1: r0's tap follows its new filter,
        # r1's goes.
        changed = "r0: {from: feed, to: ws, filter: {text: {contains: keep}}}\n" + "\n".join(
            f"r{i}: {{from: feed, to: ws}}" for i in range(2, MAX_TAPS + 1)
        )
        path = tmp_path / "config.yaml"
        path.write_text(textwrap.dedent(config(upstream, port, changed)))
        await rt.apply(build_graph(load_config(path, env={})))
        client = await ws_client(f"ws://127.0.0.1:{port}/ws")
        await upstream.send("drop this")
        await upstream.send("keep this")
        await eventually(
            lambda: list(rt.taps["r0"].messages) == [(b"keep this", True, 9)], 5, what="r0 filtered"
        )
        await eventually(lambda: "r1" not in rt.taps, 5, what="r1's tap gone with its route")
        await client.close()


async def test_graph_taps_a_route_over_http_for_veylor_top(tmp_path, upstream):
    port, admin = free_port(), free_port()
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(config(upstream, port, "all: {from: feed, to: ws}"))
        + f'admin: {{listen: "127.0.0.1:{admin}"}}\n'
    )
    veylor = await VeylorProcess("-c", str(main), "--no-watch").start()
    try:
        await upstream.wait_connected()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def graph(query: str) -> dict:
                async with http.get(f"http://127.0.0.1:{admin}/graph{query}") as r:
                    assert r.status == 200
                    return json.loads(await r.text())

            assert "tap" not in await graph("?clients=")
            assert (await graph("?clients=&tap=all"))["tap"] == {"route": "all", "seen": 0, "messages": []}
            await upstream.send("hello\x1b]0;owned\x07")
            await upstream.send(b"\xde\xad")

            async def caught() -> dict:
                return (await graph("?clients=&tap=all"))["tap"]

            for _ in range(50):
                tap = await caught()
                if tap["seen"] == 2:
                    break
                await asyncio.sleep(0.1)
            assert tap["messages"] == ["<binary, 2 bytes> de ad", r"hello\x1b]0;owned\x07"]
            assert (await graph("?tap=nowhere"))["tap"] == {"route": "nowhere", "error": "no such route"}
    finally:
        await veylor.stop()
