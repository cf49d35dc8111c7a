"""Latest-value delivery, the snapshot (issue 26): a client that joins gets what the
routes into its endpoint keep (the last message per key, or the last N), then the live
stream, with no gap and no duplicate between the two, even when it joins in the middle
of a burst; over WebSocket and Unix; kept across a reload that keeps the setting;
counted; through the same buffer accounting as live data."""

from __future__ import annotations

import asyncio
import json
import textwrap

import pytest
from helpers import UnixClient, free_port, ws_client

from veylor.server import Server


async def started(tmp_path, yaml: str) -> Server:
    main = tmp_path / "config.yaml"
    main.write_text(textwrap.dedent(yaml))
    server = Server.load(str(main), watch="off")
    assert await server.startup()
    return server


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def one_route(upstream, port: int, route: str) -> str:
    """A configuration: the upstream, a WebSocket endpoint dash at /d, and one route
    ``ticks`` from one to the other with ``route`` (YAML flow mapping items) added."""
    return f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{dash: {{websocket: {{port: {port}, path: /d}}}}}}
        routes: {{ticks: {{from: feed, to: dash, {route}}}}}
        """


def tick(s: str, n: int, **more) -> str:
    return json.dumps({"s": s, "n": n, **more}, separators=(",", ":"))


async def test_a_joining_client_gets_the_latest_value_of_each_key_then_the_end_marker_then_live(
    tmp_path, upstream
):
    port = free_port()
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{dash: {{websocket: {{port: {port}, path: /d}}}}}}
        routes:
          ticks:
            from: feed
            to: dash
            snapshot: {{by: s, end: '{{"type":"snapshot_end"}}'}}
        """,
    )
    try:
        await upstream.wait_connected()
        for message in (tick("A", 1), tick("B", 1), tick("A", 2), "not json", tick("C", 1), '{"t": 1}'):
            await upstream.send(message)
        await until(lambda: server.snapshot()["routes"]["ticks"]["messages"] == 6, "six messages passed")
        kept = server.snapshot()["routes"]["ticks"]["kept"]
        assert kept["messages"] == 3 and kept["unkept"] == 2  # (not JSON; no key s)
        assert kept["bytes"] == sum(len(tick(s, n)) for s, n in (("B", 1), ("A", 2), ("C", 1)))
        client = await ws_client(f"ws://127.0.0.1:{port}/d")
        got = [await asyncio.wait_for(client.recv(), 5) for _ in range(4)]
        # the latest value of each key, in the order of their latest update; then the end
        assert got == [tick("B", 1), tick("A", 2), tick("C", 1), '{"type":"snapshot_end"}']
        await upstream.send(tick("B", 2))
        assert await asyncio.wait_for(client.recv(), 5) == tick("B", 2)  # then live
        view = server.snapshot()
        assert view["endpoints"]["dash"]["snapshots"] == 1
        assert view["endpoints"]["dash"]["snapshot_messages"] == 3
        from veylor.observe.metrics import render

        text = render(view)
        assert 'veylor_route_kept_messages{route="ticks"} 3' in text
        assert 'veylor_route_unkept_total{route="ticks"} 2' in text
        assert 'veylor_endpoint_snapshots_total{endpoint="dash"} 1' in text
        await client.close()
    finally:
        await server.shutdown()


async def test_the_last_n_over_a_unix_socket_and_only_what_passed_the_filter(tmp_path, upstream):
    sock = tmp_path / "ipc.sock"
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{ipc: {{unix: {{path: {sock}}}}}}}
        routes:
          recent:
            from: feed
            to: ipc
            filter: {{text: {{contains: keep}}}}
            snapshot: {{last: 3}}
        """,
    )
    try:
        await upstream.wait_connected()
        for i in range(6):
            await upstream.send(f"keep {i}")
            await upstream.send(f"skip {i}")
        await until(lambda: server.snapshot()["routes"]["recent"]["filtered"] == 6, "twelve messages seen")
        client = await UnixClient.connect(sock)
        assert [await client.recv() for _ in range(3)] == [b"keep 3", b"keep 4", b"keep 5"]
        await upstream.send("keep 6")
        assert await client.recv() == b"keep 6"
        await client.close()
    finally:
        await server.shutdown()


async def test_clients_that_join_during_a_burst_get_no_gap_and_no_duplicate(tmp_path, upstream):
    """The snapshot and the live stream are cut at the same place: a client that joins
    while messages of the pass wait for the end of the pass gets them live, not twice,
    and none is missing. Messages are numbered 0, 1, 2, ... over 10 keys (n % 10): a
    joiner's snapshot must be the 10 numbers just before the first it gets live."""
    port = free_port()
    server = await started(tmp_path, one_route(upstream, port, "snapshot: {by: s, end: END}"))
    stop = asyncio.Event()
    total = 6000

    async def stream() -> None:
        conn = upstream.connections[0]
        for base in range(0, total, 50):  # bursts: many messages in one pass of the relay
            await asyncio.gather(*(conn.send(tick(str(n % 10), n)) for n in range(base, base + 50)))
            await asyncio.sleep(0)
        stop.set()

    async def joiner() -> tuple[list[int], list[int]]:
        client = await ws_client(f"ws://127.0.0.1:{port}/d", max_queue=None)
        snap: list[int] = []
        live: list[int] = []
        try:
            while (message := await asyncio.wait_for(client.recv(), 10)) != "END":
                snap.append(json.loads(message)["n"])
            while True:
                try:
                    message = await asyncio.wait_for(client.recv(), 1.0 if stop.is_set() else 10)
                except TimeoutError:
                    return snap, live
                live.append(json.loads(message)["n"])
        finally:
            await client.close()

    try:
        await upstream.wait_connected()
        feeding = asyncio.create_task(stream())
        joiners = []
        while not stop.is_set() and len(joiners) < 20:
            joiners.append(asyncio.create_task(joiner()))
            await asyncio.sleep(0.005)
        await feeding
        results = await asyncio.gather(*joiners)
        checked = 0
        for snap, live in results:
            assert live, "a joiner got nothing live"
            first = live[0]
            assert live == list(range(first, total)), "a gap or a duplicate in the live stream"
            assert sorted(snap) == list(range(max(0, first - 10), first)), (snap[:12], first)
            checked += first >= 10
        assert checked >= 5  # (most joined in the middle of the stream)
    finally:
        stop.set()
        await server.shutdown()


async def test_a_reload_keeps_what_is_kept_where_the_setting_still_means_the_same(tmp_path, upstream):
    port = free_port()
    main = tmp_path / "config.yaml"

    def write(snapshot: str) -> None:
        main.write_text(
            textwrap.dedent(
                f"""
                sources: {{feed: {{url: "{upstream.url}"}}}}
                endpoints: {{dash: {{websocket: {{port: {port}, path: /d}}}}}}
                routes: {{ticks: {{from: feed, to: dash, snapshot: {snapshot}}}}}
                """
            )
        )

    write("{by: s}")
    server = Server.load(str(main), watch="off")
    assert await server.startup()
    try:
        await upstream.wait_connected()
        for s in "ABCDE":
            await upstream.send(tick(s, 1))
        await until(lambda: server.snapshot()["routes"]["ticks"]["kept"]["messages"] == 5, "five keys")
        write("{by: s, max_keys: 3}")  # the same key, a smaller bound: the three latest stay
        assert (await server.reload("test")).ok
        kept = server.snapshot()["routes"]["ticks"]["kept"]
        assert kept["messages"] == 3 and kept["evicted"] == 2
        client = await ws_client(f"ws://127.0.0.1:{port}/d")
        assert [json.loads(await client.recv())["s"] for _ in range(3)] == ["C", "D", "E"]
        await client.close()
        write("{by: n}")  # another key: what was kept meant something else
        assert (await server.reload("test")).ok
        kept = server.snapshot()["routes"]["ticks"]["kept"]
        assert kept["messages"] == 0 and kept["evicted"] == 2  # (the counter goes on)
    finally:
        await server.shutdown()


@pytest.mark.parametrize("policy", ["drop", "disconnect"])
async def test_a_snapshot_counts_against_the_clients_buffer(tmp_path, upstream, policy):
    """A client that reads nothing of a snapshot larger than its client_buffer gets its
    slow_client policy at the next message, as for live data."""
    import socket

    from helpers import raw_handshake

    port = free_port()
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints:
          dash: {{websocket: {{port: {port}, path: /d}}, socket_buffer: 4KiB, client_buffer: 64KiB, slow_client: {policy}}}
        routes: {{ticks: {{from: feed, to: dash, snapshot: {{by: s}}}}}}
        """,
    )
    slow = socket.socket()
    try:
        await upstream.wait_connected()
        for i in range(1000):  # 1,000 keys of about 300 bytes: 300 KB kept
            await upstream.send(tick(f"K{i}", i, pad="x" * 280))
        await until(lambda: server.snapshot()["routes"]["ticks"]["kept"]["messages"] == 1000, "1,000 keys")
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(slow, ("127.0.0.1", port))
        await loop.sock_sendall(slow, raw_handshake("/d"))  # (and never reads)
        ep = server.runtime.endpoints["dash"]
        await until(lambda: ep.stats.snapshots == 1, "the snapshot written")
        await upstream.send(tick("K0", 1000))
        if policy == "drop":
            await until(lambda: ep.stats.dropped == 1, "the next message dropped for it")
        else:
            await until(lambda: ep.stats.slow_disconnects == 1, "it disconnected as slow")
    finally:
        slow.close()
        await server.shutdown()


async def test_conflation_sends_the_latest_of_each_changed_key_each_interval(tmp_path, upstream):
    """conflate: {by, interval}: at most one message per key per interval, the latest,
    in the order of their latest update; a message without the key at once; counted."""
    port = free_port()
    server = await started(tmp_path, one_route(upstream, port, "conflate: {by: s, interval: 300ms}"))
    try:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/d")
        loop = asyncio.get_running_loop()
        started_at = loop.time()
        for n in range(1, 101):  # 100 updates of 3 keys, within one interval
            await upstream.send(tick("ABC"[n % 3], n))
        await upstream.send("no key")
        assert await asyncio.wait_for(client.recv(), 5) == "no key"  # at once
        await upstream.send('{"t": 1}')  # JSON without the key: at once too, not held
        assert await asyncio.wait_for(client.recv(), 5) == '{"t": 1}'
        got = [json.loads(await asyncio.wait_for(client.recv(), 5)) for _ in range(3)]
        elapsed = loop.time() - started_at
        # the latest of each key, in the order of their latest update
        assert [(g["s"], g["n"]) for g in got] == [("C", 98), ("A", 99), ("B", 100)]
        assert 0.25 <= elapsed <= 1.0
        with pytest.raises(TimeoutError):  # nothing more: no key changed since
            await asyncio.wait_for(client.recv(), 0.5)
        await upstream.send(tick("A", 101))
        assert json.loads(await asyncio.wait_for(client.recv(), 2))["n"] == 101  # (a timer armed again)
        route = server.snapshot()["routes"]["ticks"]
        assert route["conflated"] == 97 and route["unkeyed"] == 2
        assert route["messages"] == 6  # what it sent: 3 + 1 + the two unkeyed
        assert route["conflate"] == "the latest per s every 300ms"
        from veylor.observe.metrics import render

        text = render(server.snapshot())
        assert 'veylor_route_conflated_total{route="ticks"} 97' in text
        assert 'veylor_route_unconflated_total{route="ticks"} 2' in text
        edges = server.snapshot()["edges"]
        assert [e["messages"] for e in edges if e["route"] == "ticks"] == [6]
        await client.close()
    finally:
        await server.shutdown()


async def test_a_conflating_route_keeps_what_it_sends_and_a_reload_loses_nothing_held(tmp_path, upstream):
    """With snapshot too, a joiner gets what the route sent, not what it still holds (no
    duplicate when it sends); removing conflate in a reload sends what was held at once."""
    port = free_port()
    main = tmp_path / "config.yaml"

    def write(extra: str) -> None:
        main.write_text(
            textwrap.dedent(
                f"""
                sources: {{feed: {{url: "{upstream.url}"}}}}
                endpoints: {{dash: {{websocket: {{port: {port}, path: /d}}}}}}
                routes: {{ticks: {{from: feed, to: dash, snapshot: {{by: s}}{extra}}}}}
                """
            )
        )

    write(", conflate: {by: s, interval: 1h}")  # (held until the reload)
    server = Server.load(str(main), watch="off")
    assert await server.startup()
    try:
        await upstream.wait_connected()
        watcher = await ws_client(f"ws://127.0.0.1:{port}/d")
        await upstream.send(tick("A", 1))
        await upstream.send(tick("A", 2))
        await until(lambda: server.snapshot()["routes"]["ticks"]["conflated"] == 1, "A held")
        assert server.snapshot()["routes"]["ticks"]["kept"]["messages"] == 0  # held: not sent, not kept
        joiner = await ws_client(f"ws://127.0.0.1:{port}/d")
        write("")  # conflate removed: what it held goes now
        assert (await server.reload("test")).ok
        assert json.loads(await asyncio.wait_for(watcher.recv(), 5))["n"] == 2
        assert json.loads(await asyncio.wait_for(joiner.recv(), 5))["n"] == 2
        assert server.snapshot()["routes"]["ticks"]["kept"]["messages"] == 1
        late = await ws_client(f"ws://127.0.0.1:{port}/d")
        assert json.loads(await asyncio.wait_for(late.recv(), 5))["n"] == 2  # kept as sent
        for c in (watcher, joiner, late):
            await c.close()
    finally:
        await server.shutdown()


async def test_a_client_that_comes_back_gets_what_it_missed_then_live(tmp_path, upstream):
    """resume: {by, size, lost}: ?since=V (or Veylor-Since: V) gets every kept message
    after V, then live, no snapshot; past what is kept, the lost marker first; a since
    that is not a number is refused (400); counted."""
    from websockets.exceptions import InvalidStatus

    port = free_port()
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{dash: {{websocket: {{port: {port}, path: /d}}}}}}
        routes:
          ticks:
            from: feed
            to: dash
            snapshot: {{last: 2, end: END}}
            resume: {{by: seq, size: 5, lost: LOST}}
        """,
    )
    try:
        await upstream.wait_connected()
        for n in range(1, 11):
            await upstream.send(json.dumps({"seq": n}))
        await upstream.send("no number")
        await until(lambda: server.snapshot()["routes"]["ticks"]["history"]["messages"] == 5, "five kept")
        history = server.snapshot()["routes"]["ticks"]["history"]
        assert (history["first"], history["last"], history["evicted"], history["unkept"]) == (6, 10, 5, 1)

        async def seqs(client, n: int) -> list:
            out = []
            for _ in range(n):
                message = await asyncio.wait_for(client.recv(), 5)
                out.append(json.loads(message)["seq"] if message.startswith("{") else message)
            return out

        back = await ws_client(f"ws://127.0.0.1:{port}/d?since=7")  # in reach: 8, 9, 10, no snapshot
        assert await seqs(back, 3) == [8, 9, 10]
        await upstream.send(json.dumps({"seq": 11}))
        assert await seqs(back, 1) == [11]  # then live
        far = await ws_client(f"ws://127.0.0.1:{port}/d", additional_headers={"Veylor-Since": "2"})
        # past what is kept (7..11 now): the marker, then all that is kept
        assert await seqs(far, 6) == ["LOST", 7, 8, 9, 10, 11]
        new = await ws_client(f"ws://127.0.0.1:{port}/d")  # no since: the snapshot
        assert await seqs(new, 3) == ["no number", 11, "END"]
        with pytest.raises(InvalidStatus) as refused:
            await ws_client(f"ws://127.0.0.1:{port}/d?since=soon")
        assert refused.value.response.status_code == 400
        route = server.snapshot()["routes"]["ticks"]
        assert (route["resumes_ok"], route["resumes_lost"]) == (1, 1)
        assert server.snapshot()["endpoints"]["dash"]["refused_since"] == 1
        for c in (back, far, new):
            await c.close()
    finally:
        await server.shutdown()


async def test_a_client_coming_back_from_far_gets_at_most_its_buffer_of_the_newest(tmp_path, upstream):
    """A history larger than client_buffer is not copied whole to each client coming
    back from far (a thousand of them: a thousand copies): it gets the lost marker and
    the newest that fit in its client_buffer, counted as lost."""
    port = free_port()
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{dash: {{websocket: {{port: {port}, path: /d}}, client_buffer: 64KiB}}}}
        routes: {{ticks: {{from: feed, to: dash, resume: {{by: seq, lost: LOST}}}}}}
        """,
    )
    try:
        await upstream.wait_connected()
        for n in range(1, 1001):  # about 300 bytes each: 300 KB kept
            await upstream.send(json.dumps({"seq": n, "pad": "x" * 280}))
        await until(lambda: server.snapshot()["routes"]["ticks"]["history"]["messages"] == 1000, "1,000 kept")
        back = await ws_client(f"ws://127.0.0.1:{port}/d?since=0", max_size=None)
        assert await asyncio.wait_for(back.recv(), 5) == "LOST"
        got = []
        while True:
            try:
                got.append(json.loads(await asyncio.wait_for(back.recv(), 1))["seq"])
            except TimeoutError:
                break
        assert got[-1] == 1000 and got == list(range(got[0], 1001))  # the newest, in order
        assert 150 <= len(got) <= 230  # (64 KiB of about 300-byte messages)
        route = server.snapshot()["routes"]["ticks"]
        assert (route["resumes_ok"], route["resumes_lost"]) == (0, 1)
        await back.close()
    finally:
        await server.shutdown()


async def test_a_conflating_route_holds_at_most_max_keys_and_sends_the_oldest_rather_than_lose_it(
    tmp_path, upstream
):
    """A feed with more keys in an interval than conflate.max_keys (or a hostile one)
    cannot make the route hold more: the least recently updated is sent at once."""
    port = free_port()
    server = await started(
        tmp_path, one_route(upstream, port, "conflate: {by: s, interval: 1h, max_keys: 3}")
    )
    try:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/d")
        for n, s in enumerate("ABCADE", 1):  # A updated again before D and E come
            await upstream.send(tick(s, n))
        got = [json.loads(await asyncio.wait_for(client.recv(), 5)) for _ in range(2)]
        assert [(g["s"], g["n"]) for g in got] == [("B", 2), ("C", 3)]  # the oldest held, at once
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.recv(), 0.5)  # A, D, E held (the hour)
        route = server.snapshot()["routes"]["ticks"]
        assert route["messages"] == 2 and route["conflated"] == 1
        await client.close()
    finally:
        await server.shutdown()


async def test_clients_joining_in_one_pass_share_one_assembled_snapshot_which_does_not_outlive_it(
    tmp_path, upstream
):
    """A hundred clients joining at once cost one assembly of the snapshot, not a hundred
    (10,000 keys took 7-11 ms each); the joined copy is forgotten at the end of the pass."""
    from veylor.runtime.keeper import _snapshot

    port = free_port()
    server = await started(tmp_path, one_route(upstream, port, "snapshot: {by: s, end: END}"))
    try:
        await upstream.wait_connected()
        for n in range(3):
            await upstream.send(tick(f"K{n}", n))
        await until(lambda: server.snapshot()["routes"]["ticks"]["messages"] == 3, "three messages")
        ep = server.runtime.endpoints["dash"]
        first = _snapshot(ep)
        assert _snapshot(ep) is first  # the next joiner of the pass: the same bytes
        assert first[2] == 3 and first[0].endswith(b"END")
        await asyncio.sleep(0)  # the pass ends
        await asyncio.sleep(0)
        assert ep.assembled is None
        await upstream.send(tick("K0", 9))
        await until(lambda: server.snapshot()["routes"]["ticks"]["messages"] == 4, "a fourth message")
        again = _snapshot(ep)
        assert again is not first and again[2] == 3 and b'"n":9' in again[0]
        clients = [await ws_client(f"ws://127.0.0.1:{port}/d") for _ in range(5)]
        for client in clients:
            got = [await asyncio.wait_for(client.recv(), 5) for _ in range(4)]
            assert got == [tick("K1", 1), tick("K2", 2), tick("K0", 9), "END"]
            await client.close()
    finally:
        await server.shutdown()
