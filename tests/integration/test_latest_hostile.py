"""Latest-value delivery (issue 26) under a hostile upstream, odd clients and reload
churn: what a conflating route holds is bounded in bytes, a tap shows what a
conflating route sends, a client's since is read once whatever way it is said, a
Unix lines client's snapshot skips what cannot be a line, and a route that keeps,
conflates and resumes beside a plain route into one endpoint gives each message once."""

from __future__ import annotations

import asyncio
import json
import textwrap

import pytest
from helpers import free_port, ws_client
from test_snapshot import one_route, started, tick, until
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from veylor.server import Server


async def recv_all(client, quiet: float = 0.5) -> list:
    """What a WebSocket client gets until nothing comes for ``quiet`` seconds."""
    out = []
    while True:
        try:
            out.append(await asyncio.wait_for(client.recv(), quiet))
        except TimeoutError:
            return out


async def test_a_conflating_route_holds_at_most_max_bytes_and_sends_the_oldest(tmp_path, upstream):
    """Held messages were bounded by max_keys only: 10,000 keys of a hostile upstream's
    16 MiB messages held 160 GB for an interval (up to an hour). Beyond max_bytes the
    least recently updated held is sent at once, as beyond max_keys."""
    port = free_port()
    route = "conflate: {by: s, interval: 1h, max_bytes: 1KiB}"
    server = await started(tmp_path, one_route(upstream, port, route))
    try:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/d")
        for n, s in enumerate("ABCDE", 1):  # about 410 bytes each: two fit in 1 KiB
            await upstream.send(tick(s, n, pad="x" * 390))
        got = [json.loads(m)["s"] for m in await recv_all(client)]
        assert got == ["A", "B", "C"]  # the oldest, at once; D and E held (the hour)
        assert server.snapshot()["routes"]["ticks"]["messages"] == 3
        await client.close()
    finally:
        await server.shutdown()


async def test_a_tap_on_a_conflating_route_shows_what_it_sends(tmp_path, upstream):
    """The tap wrapped the conflater's match, which says no to every keyed message (it is
    held), and a sending went past the tap: an operator tapping a conflating route saw
    only its unkeyed messages."""
    port = free_port()
    server = await started(tmp_path, one_route(upstream, port, "conflate: {by: s, interval: 50ms}"))
    try:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/d")
        server.runtime.tap("ticks")
        await upstream.send(tick("A", 1))
        await upstream.send(tick("A", 2))
        await upstream.send("no key")
        assert len(await recv_all(client)) == 2
        tapped = server.runtime.tap("ticks").as_dict()
        assert tapped["seen"] == 2
        assert tapped["messages"] == [tick("A", 2), "no key"]  # (newest first)
        await client.close()
    finally:
        await server.shutdown()


async def test_since_is_one_number_however_it_is_said(tmp_path, upstream):
    """?since=1 with Veylor-Since: 1.0 is one point (it was refused as two values); two
    Veylor-Since headers that differ are refused (400), not an error in the handshake;
    ?since= on an endpoint without resume is ignored (the snapshot)."""
    port, plain = free_port(), free_port()
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints:
          dash: {{websocket: {{port: {port}, path: /d}}}}
          snap: {{websocket: {{port: {plain}, path: /s}}}}
        routes:
          ticks: {{from: feed, to: dash, resume: {{by: n, lost: LOST}}}}
          snaps: {{from: feed, to: snap, snapshot: {{last: 1}}}}
        """,
    )
    try:
        await upstream.wait_connected()
        for n in range(1, 4):
            await upstream.send(tick("A", n))
        await until(lambda: server.snapshot()["routes"]["ticks"]["history"]["messages"] == 3, "three kept")
        url = f"ws://127.0.0.1:{port}/d?since=1"
        same = await ws_client(url, additional_headers={"Veylor-Since": "1.0"})
        assert [json.loads(m)["n"] for m in await recv_all(same)] == [2, 3]
        with pytest.raises(InvalidStatus) as refused:
            await ws_client(url, additional_headers=[("Veylor-Since", "1"), ("Veylor-Since", "2")])
        assert refused.value.response.status_code == 400
        with pytest.raises(InvalidStatus) as refused:
            await ws_client(f"ws://127.0.0.1:{port}/d?since=1&since=2")
        assert refused.value.response.status_code == 400
        ignored = await ws_client(f"ws://127.0.0.1:{plain}/s?since=zzz")
        assert [json.loads(m)["n"] for m in await recv_all(ignored)] == [3]
        assert server.snapshot()["endpoints"]["dash"]["refused_since"] == 2
        for c in (same, ignored):
            await c.close()
    finally:
        await server.shutdown()


async def test_a_lines_client_gets_the_snapshot_without_what_cannot_be_a_line(tmp_path, upstream):
    sock = tmp_path / "lines.sock"
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{ipc: {{unix: {{path: {sock}, framing: lines}}}}}}
        routes: {{recent: {{from: feed, to: ipc, snapshot: {{last: 4, end: "two\\nlines"}}}}}}
        """,
    )
    try:
        await upstream.wait_connected()
        for message in ("one", "two\nlines", b"\x00binary", "three"):
            await upstream.send(message)
        await until(lambda: server.snapshot()["routes"]["recent"]["kept"]["messages"] == 4, "four kept")
        reader, writer = await asyncio.open_unix_connection(str(sock))
        assert await asyncio.wait_for(reader.readline(), 5) == b"one\n"
        assert await asyncio.wait_for(reader.readline(), 5) == b"three\n"
        await upstream.send("four")
        assert await asyncio.wait_for(reader.readline(), 5) == b"four\n"  # live; no end (unframeable)
        writer.close()
    finally:
        await server.shutdown()


async def test_compressed_clients_get_their_snapshot_compressed_and_whole(tmp_path, upstream):
    port = free_port()
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{dash: {{websocket: {{port: {port}, path: /d}}, compression: true}}}}
        routes: {{ticks: {{from: feed, to: dash, snapshot: {{by: s, end: END}}}}}}
        """,
    )
    try:
        await upstream.wait_connected()
        for n, s in enumerate("ABCAB", 1):
            await upstream.send(tick(s, n, pad="y" * 500))
        await until(lambda: server.snapshot()["routes"]["ticks"]["messages"] == 5, "five passed")
        client = await connect(f"ws://127.0.0.1:{port}/d", open_timeout=5)  # (deflate offered)
        assert client.protocol.extensions  # negotiated
        got = [await asyncio.wait_for(client.recv(), 5) for _ in range(4)]
        assert [json.loads(g)["n"] for g in got[:3]] == [3, 4, 5] and got[3] == "END"
        await upstream.send(tick("C", 6))
        assert json.loads(await asyncio.wait_for(client.recv(), 5))["n"] == 6
        await client.close()
    finally:
        await server.shutdown()


async def test_keeping_conflating_and_resuming_beside_a_plain_route_gives_each_message_once(
    tmp_path, upstream
):
    """One source, one endpoint, two routes: one keeps, conflates and resumes, the other
    is plain. Live, a message reaches the endpoint once per route that sends it (the
    conflating one later); a joiner's snapshot is what the keeping route sent, once."""
    port = free_port()
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{dash: {{websocket: {{port: {port}, path: /d}}}}}}
        routes:
          latest:
            from: feed
            to: dash
            snapshot: {{by: s, end: END}}
            conflate: {{by: s, interval: 100ms}}
            resume: {{by: n}}
          plain: {{from: feed, to: dash, filter: {{json: {{path: s, equals: B}}}}}}
        """,
    )
    try:
        await upstream.wait_connected()
        watcher = await ws_client(f"ws://127.0.0.1:{port}/d")
        assert await asyncio.wait_for(watcher.recv(), 5) == "END"  # (nothing kept yet)
        for n, s in enumerate("ABAB", 1):
            await upstream.send(tick(s, n))
        got = [json.loads(m)["n"] for m in await recv_all(watcher)]
        # plain sends B at once (2, 4); latest sends the latest A and B each interval
        assert sorted(got) == [2, 3, 4, 4] or sorted(got) == [2, 3, 4, 4, 4]
        joiner = await ws_client(f"ws://127.0.0.1:{port}/d")
        assert [json.loads(m)["n"] if m != "END" else m for m in await recv_all(joiner)] == [3, 4, "END"]
        back = await ws_client(f"ws://127.0.0.1:{port}/d?since=3")
        assert [json.loads(m)["n"] for m in await recv_all(back)] == [4]
        for c in (watcher, joiner, back):
            await c.close()
    finally:
        await server.shutdown()


@pytest.mark.slow  # (a hundred reloads: 12 s)
async def test_settings_changed_a_hundred_times_while_messages_flow_lose_and_repeat_nothing(
    tmp_path, upstream
):
    """Each reload that changes the conflation sends what was held; one that changes the
    snapshot's bound keeps what still fits; the port of the endpoint changes half way.
    Every key's latest value reaches a client that stays, in order per key, and nothing
    is held or timed once the route is gone."""
    ports = (free_port(), free_port())
    main = tmp_path / "config.yaml"

    def write(i: int, port: int, route: bool = True) -> None:
        routes = (
            f"ticks: {{from: feed, to: dash, snapshot: {{by: s, max_keys: {10 + i % 7}}},"
            f" conflate: {{by: s, interval: {20 + i % 5}ms}}, resume: {{by: n, size: {100 + i}}}}}"
        )
        main.write_text(
            textwrap.dedent(
                f"""
                sources: {{feed: {{url: "{upstream.url}"}}}}
                endpoints: {{dash: {{websocket: {{port: {port}, path: /d}}}}}}
                routes: {{{routes if route else ""}}}
                """
            )
        )

    write(0, ports[0])
    server = Server.load(str(main), watch="off")
    assert await server.startup()
    try:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{ports[0]}/d")
        sent = 0
        for i in range(1, 101):
            for s in "ABC":
                sent += 1
                await upstream.send(tick(s, sent))
            if i == 50:
                await client.close()
                write(i, ports[1])
                assert (await server.reload("port")).ok
                client = await ws_client(f"ws://127.0.0.1:{ports[1]}/d")
                continue
            write(i, ports[i > 50])
            assert (await server.reload(f"churn {i}")).ok
        await until(lambda: server.snapshot()["routes"]["ticks"]["messages"] >= 1, "sent")
        got = [json.loads(m) for m in await recv_all(client, 1.0)]
        first = [g for g in got if g != "END"]
        for s in "ABC":
            ns = [g["n"] for g in first if g["s"] == s]
            assert ns == sorted(set(ns)), f"{s}: {ns}"  # in order, none twice
            assert ns[-1] > sent - 3  # the latest reached it
        write(101, ports[1], route=False)
        await upstream.send(tick("A", sent + 1))
        assert (await server.reload("gone")).ok
        assert server.runtime.conflaters == {} and server.runtime.keepers == {}
        await client.close()
    finally:
        await server.shutdown()


async def test_a_conflating_route_over_its_bound_does_not_renumber_the_message_being_dispatched(
    tmp_path, upstream
):
    """A conflating route over max_keys sent its oldest held in the middle of a message's
    dispatch, under a new number: the routes after it kept the message being dispatched
    under that number too, and a joiner's snapshot, merging the two routes, dropped one
    of each pair as the same message (after A, B, C, the snapshot lacked B and C, the
    latest). What is over the bound now goes once the dispatch is over."""
    port = free_port()
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{e: {{websocket: {{port: {port}, path: /e}}}}}}
        routes:
          conflated: {{from: feed, to: e, conflate: {{by: s, interval: 1h, max_keys: 1}}, snapshot: {{by: s}}}}
          all: {{from: feed, to: e, snapshot: {{last: 100}}}}
        """,
    )
    try:
        await upstream.wait_connected()
        live = await ws_client(f"ws://127.0.0.1:{port}/e")
        await until(lambda: len(server.runtime.endpoints["e"].clients) == 1, "a client")
        sent = [tick(s, i) for i, s in enumerate("ABC")]
        for message in sent:
            await upstream.send(message)
        got = await recv_all(live)
        # the plain route's three, and the conflated route's A and B (C is held for an hour)
        assert sorted(got) == sorted(sent + sent[:2]) and got[:1] == sent[:1]
        joiner = await ws_client(f"ws://127.0.0.1:{port}/e")
        snap = await recv_all(joiner)
        # every message kept, each once: the plain route's three (the conflated route kept
        # the A and B it sent, the same messages, under other numbers: each once more)
        assert sorted(set(snap)) == sorted(sent) and sent[2] in snap and sent[1] in snap
        assert len(snap) == len(server.runtime.endpoints["e"].kept[0]) + len(
            server.runtime.endpoints["e"].kept[1]
        )
        await live.close()
        await joiner.close()
    finally:
        await server.shutdown()
