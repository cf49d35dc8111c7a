"""``slow_client: conflate`` (issue 26): a client over its ``client_buffer`` is not cut off
and loses no key: while it is behind, the latest message of each key is held for it;
when it reads again it gets those, then live. Real clients that stop reading (a small
receive buffer, nothing read), a real upstream, a control client that must lose nothing.

The invariant each test checks, whatever the timing: for each key, a client behind
receives values in the order they were sent, never an older one after a newer one, and
ends with the latest; what it was not given is counted, exactly (received + superseded
= sent)."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import textwrap
import tracemalloc

import pytest
from helpers import eventually, free_port, raw_handshake, veylor_inprocess, ws_client

from veylor.config import load_config
from veylor.graph import build_graph
from veylor.observe.metrics import render
from veylor.observe.state import snapshot as state_view


def tick(s: str, n: int, pad: int = 1000) -> str:
    return json.dumps({"s": s, "n": n, "pad": "x" * pad}, separators=(",", ":"))


def stalled_ws_client(port: int, path: str) -> socket.socket:
    """A client that completes the handshake, then reads nothing until the test says.
    (Its receive buffer is set before connecting, and not tiny: a window of a few
    bytes reopens only at the kernel's zero-window probes, seconds apart.)"""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    sock.connect(("127.0.0.1", port))
    sock.sendall(raw_handshake(path))
    sock.settimeout(5)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


class FrameReader:
    """Reads the server's frames from a raw client socket (unmasked, unfragmented)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.buf = b""
        self.messages: list[bytes] = []
        self.closed = False

    def parse(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
            at = 2
            if n == 126:
                if len(buf) < 4:
                    break
                (n,) = struct.unpack("!H", buf[2:4])
                at = 4
            elif n == 127:
                if len(buf) < 10:
                    break
                (n,) = struct.unpack("!Q", buf[2:10])
                at = 10
            if len(buf) < at + n:
                break
            if opcode in (1, 2):
                self.messages.append(buf[at : at + n])
            elif opcode == 8:
                self.closed = True
            buf = buf[at + n :]
        self.buf = buf

    async def read_until(self, done, timeout: float = 15.0) -> None:
        """Read (the client reads again) until ``done(messages)``, or fail at ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(self.messages):
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out: {len(self.messages)} messages read")
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 20), left)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"connection closed after {len(self.messages)} messages")
            self.buf += chunk
            self.parse()


def by_key(messages: list[bytes]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for m in messages:
        d = json.loads(m)
        out.setdefault(d["s"], []).append(d["n"])
    return out


def config(upstream, port: int, route: str = "snapshot: {by: s}", endpoint: str = "") -> str:
    return textwrap.dedent(
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints:
          dash: {{websocket: {{port: {port}, path: /d}}, client_buffer: 64KiB, slow_client: conflate,
                  stall_timeout: 60{endpoint}}}
          all: {{websocket: {{port: {port}, path: /all}}, client_buffer: 64MiB}}
        routes: {{ticks: {{from: feed, to: [dash, all]{", " + route if route else ""}}}}}
        """
    )


async def feed(upstream, keys: list[str], rounds: int, start: int = 0) -> None:
    for n in range(start, start + rounds):
        for s in keys:
            await upstream.send(tick(s, n))


async def control_reader(port: int, expected: int) -> tuple[asyncio.Task, list[str]]:
    """A client of the other endpoint (``all``), which must get every message."""
    client = await ws_client(f"ws://127.0.0.1:{port}/all", max_size=None, max_queue=None)
    got: list[str] = []

    async def read() -> None:
        while len(got) < expected:
            got.append(await client.recv())
        await client.close()

    return asyncio.create_task(read()), got


async def test_a_stalled_client_catches_up_to_the_latest_of_every_key_and_the_others_lose_nothing(
    tmp_path, upstream
):
    port = free_port()
    keys = [f"K{i:02d}" for i in range(20)]
    rounds = 200  # 4,000 messages of 1 KB: 4 MB, 60 times the stalled client's client_buffer
    async with veylor_inprocess(tmp_path, config(upstream, port)) as rt:
        ep = rt.endpoints["dash"]
        await upstream.wait_connected()
        sock = await asyncio.to_thread(stalled_ws_client, port, "/d")
        reading, got = await control_reader(port, rounds * len(keys))
        await eventually(lambda: len(ep.clients) == 1 and len(rt.endpoints["all"].clients) == 1)
        await feed(upstream, keys, rounds)
        await asyncio.wait_for(reading, 30)
        # the control client: every message, in order
        assert [json.loads(m)["n"] for m in got[:: len(keys)]] == list(range(rounds))
        stalled = next(c for c in ep.clients)
        assert stalled.lag is not None and ep.stats.slow_conflating == 1
        held = len(ep.latest.frames)
        assert held == len(keys)  # bounded: one per key, whatever was sent
        assert ep.latest.size <= len(keys) * (len(tick("K00", rounds)) + 4)  # (4: a frame's header)
        view = state_view(rt)
        assert view["endpoints"]["dash"]["slow_clients"] == 1
        assert view["endpoints"]["dash"]["superseded"] == ep.stats.superseded > 0
        assert view["endpoints"]["dash"]["behind_keys"] == len(keys)
        assert view["endpoints"]["dash"]["behind_bytes"] == ep.latest.size
        assert f'veylor_endpoint_behind_kept_bytes{{endpoint="dash"}} {ep.latest.size}' in render(view)

        reader = FrameReader(sock)  # it reads again
        await reader.read_until(lambda ms: by_key(ms).get(keys[-1], [-1])[-1] == rounds - 1)
        seen = by_key(reader.messages)
        assert sorted(seen) == keys
        for s, ns in seen.items():
            assert ns == sorted(set(ns)), f"{s}: an older value after a newer one, or twice"
            assert ns[-1] == rounds - 1, f"{s}: not the latest"
        # exact: what it got and what was replaced for it make what was sent
        assert len(reader.messages) + stalled.superseded == rounds * len(keys)
        assert ep.stats.superseded == stalled.superseded
        assert ep.stats.caught_up >= 1 and stalled.lag is None and ep.latest is None
        # then live
        await upstream.send(tick("K00", rounds))
        await reader.read_until(lambda ms: bool(ms) and json.loads(ms[-1])["n"] == rounds)
        metrics = render(state_view(rt))
        assert (
            f'veylor_endpoint_undelivered_total{{endpoint="dash",reason="slow_client_conflate"}} {stalled.superseded}'
            in metrics
        )
        assert 'veylor_endpoint_slow_clients_total{endpoint="dash",action="conflate"} 1' in metrics
        sock.close()


async def test_without_a_key_the_whole_stream_is_one_key(tmp_path, upstream):
    port = free_port()
    async with veylor_inprocess(tmp_path, config(upstream, port, route="")) as rt:
        ep = rt.endpoints["dash"]
        await upstream.wait_connected()
        sock = await asyncio.to_thread(stalled_ws_client, port, "/d")
        await eventually(lambda: len(ep.clients) == 1)
        await feed(upstream, ["A", "B", "C"], 300)
        client = next(iter(ep.clients))
        await eventually(lambda: client.lag is not None and ep.stats.messages == 900, what="behind")
        assert len(ep.latest.frames) == 1  # the latest message only
        reader = FrameReader(sock)
        await reader.read_until(
            lambda ms: bool(ms) and json.loads(ms[-1])["n"] == 299 and json.loads(ms[-1])["s"] == "C"
        )
        order = [(json.loads(m)["n"], json.loads(m)["s"]) for m in reader.messages]
        assert order == sorted(set(order))  # in the order sent, each once: a backlog, then the latest
        assert len(reader.messages) + client.superseded == 900
        sock.close()


async def test_a_message_without_a_key_is_never_replaced_for_a_client_behind(tmp_path, upstream):
    """A route keyed by s: while a client is behind, messages without a key (binary, not
    JSON, an object or a list at s, nothing at s) were all held under one key per
    source, each replacing the last whatever it was (a binary frame replaced by a status
    line): the client got only the last of them. As a conflating route sends such a
    message at once and a snapshot does not keep it, each is its own: the client gets
    every one it missed, in order, with the latest of each key."""
    port = free_port()
    async with veylor_inprocess(tmp_path, config(upstream, port)) as rt:
        ep = rt.endpoints["dash"]
        await upstream.wait_connected()
        sock = await asyncio.to_thread(stalled_ws_client, port, "/d")
        await eventually(lambda: len(ep.clients) == 1)
        await feed(upstream, ["A", "B"], 200)
        client = next(iter(ep.clients))
        await eventually(lambda: client.lag is not None and ep.stats.messages == 400, what="behind")
        keyless: list[str | bytes] = [
            b"\x00binary 1",
            "not JSON 1",
            json.dumps({"s": {"an": "object"}, "n": 1}),
            json.dumps({"s": [1], "n": 2}),
            json.dumps({"no key": 3}),
            b"\x00binary 2",
            "not JSON 2",
        ]
        for i, message in enumerate(keyless):
            await upstream.send(message)
            await upstream.send(tick("A", 200 + i))
        await eventually(lambda: ep.stats.messages == 400 + 2 * len(keyless), what="all dispatched")
        reader = FrameReader(sock)
        await reader.read_until(lambda ms: any(b'"n":206' in m for m in ms))
        odd = [m for m in reader.messages if not m.startswith(b'{"s":"')]
        assert odd == [m if isinstance(m, bytes) else m.encode() for m in keyless]
        ticks = by_key([m for m in reader.messages if m.startswith(b'{"s":"')])
        assert ticks["A"] == sorted(set(ticks["A"])) and ticks["A"][-1] == 206 and ticks["B"][-1] == 199
        assert len(reader.messages) + client.superseded == 400 + 2 * len(keyless)
        sock.close()


async def test_a_client_behind_on_more_keys_than_configured_is_disconnected(tmp_path, upstream):
    port = free_port()
    async with veylor_inprocess(
        tmp_path, config(upstream, port, route="snapshot: {by: s, max_keys: 10}")
    ) as rt:
        ep = rt.endpoints["dash"]
        await upstream.wait_connected()
        sock = await asyncio.to_thread(stalled_ws_client, port, "/d")
        reading, got = await control_reader(port, 3000)
        await eventually(lambda: len(ep.clients) == 1 and len(rt.endpoints["all"].clients) == 1)
        await feed(upstream, [f"K{i}" for i in range(100)], 30)  # 100 keys, 10 allowed
        await asyncio.wait_for(reading, 30)
        assert len(got) == 3000
        await eventually(lambda: ep.stats.lag_closed == 1, what="the client behind closed")
        await eventually(lambda: not ep.clients, what="it is gone")
        await eventually(lambda: all(w.ep is not ep for w in rt.budget.watched.values()), what="forgotten")
        sock.close()


async def test_a_reload_to_another_policy_gives_a_client_behind_what_was_held_for_it(tmp_path, upstream):
    port = free_port()
    async with veylor_inprocess(tmp_path, config(upstream, port)) as rt:
        ep = rt.endpoints["dash"]
        await upstream.wait_connected()
        sock = await asyncio.to_thread(stalled_ws_client, port, "/d")
        await eventually(lambda: len(ep.clients) == 1)
        keys = ["A", "B", "C", "D"]
        await feed(upstream, keys, 500)
        client = next(iter(ep.clients))
        await eventually(lambda: client.lag is not None and ep.stats.messages == 2000, what="behind")
        path = tmp_path / "config.yaml"
        path.write_text(config(upstream, port).replace("slow_client: conflate", "slow_client: drop"))
        from veylor.config import load_config
        from veylor.graph import build_graph

        await rt.apply(build_graph(load_config(path, env={})))
        assert client.lag is None and ep.keyed is None
        reader = FrameReader(sock)
        await reader.read_until(lambda ms: all(by_key(ms).get(s, [-1])[-1] == 499 for s in keys))
        for s, ns in by_key(reader.messages).items():
            assert ns == sorted(set(ns)), s
        sock.close()


async def test_a_reload_to_another_policy_holds_one_copy_of_the_keys_for_all_the_clients_behind(
    tmp_path, upstream
):
    """Forty clients behind on 300 keys of 1 KB, a reload to drop: each is given what was
    kept for it at once, and their transports hold little, so most of it waits in Veylor
    for each; as the kept frames themselves, one copy for all (joined into parts of
    client_buffer, it was a copy each: 40 times the keys; a thousand clients behind on
    64 MiB, 64 GB). Each reading again gets every key's latest, in order, exactly."""
    port = free_port()
    keys = [f"K{i:03d}" for i in range(300)]
    async with veylor_inprocess(tmp_path, config(upstream, port)) as rt:
        ep = rt.endpoints["dash"]
        await upstream.wait_connected()
        socks = [await asyncio.to_thread(stalled_ws_client, port, "/d") for _ in range(40)]
        await eventually(lambda: len(ep.clients) == 40)
        await feed(upstream, keys, 3)
        await eventually(lambda: ep.stats.messages == 3 * len(keys), what="all dispatched")
        assert all(c.lag is not None for c in ep.clients)
        kept = ep.latest.size
        path = tmp_path / "config.yaml"
        path.write_text(path.read_text().replace("slow_client: conflate", "slow_client: drop"))
        graph = build_graph(load_config(path, env={}))
        tracemalloc.start()
        try:
            await rt.apply(graph)
            grew, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert all(c.lag is None for c in ep.clients) and ep.latest is None
        assert sum(c.held for c in ep.clients) > 30 * kept  # (each is given all of it ...)
        assert grew < 4 * kept, f"{grew / kept:.1f} times the keys kept"  # (... 0.3 times; 40 before)
        clients = {c.transport.get_extra_info("peername")[1]: c for c in ep.clients}
        for sock in socks[:2]:
            reader = FrameReader(sock)
            await reader.read_until(lambda ms: all(by_key(ms).get(s, [-1])[-1] == 2 for s in keys))
            for s, ns in by_key(reader.messages).items():
                assert ns == sorted(set(ns)), s
            client = clients[sock.getsockname()[1]]
            assert len(reader.messages) + client.superseded == 3 * len(keys)
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("framing", ["lines", "length-prefixed"])
async def test_a_stalled_unix_client_catches_up_too(tmp_path, upstream, framing):
    path = tmp_path / "d.sock"
    yaml = textwrap.dedent(
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints:
          dash: {{unix: {{path: "{path}", framing: {framing}}}, client_buffer: 64KiB, slow_client: conflate,
                  stall_timeout: 60}}
        routes: {{ticks: {{from: feed, to: dash, conflate: {{by: s, interval: 10ms}}}}}}
        """
    )
    async with veylor_inprocess(tmp_path, yaml) as rt:
        ep = rt.endpoints["dash"]
        await upstream.wait_connected()
        sock = socket.socket(socket.AF_UNIX)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        sock.connect(str(path))
        await eventually(lambda: len(ep.clients) == 1)
        keys = [f"K{i}" for i in range(10)]
        for n in range(300):
            for s in keys:
                await upstream.send(tick(s, n))
            await asyncio.sleep(0.002)  # (some conflation by the route, most by the client's lag)
        client = next(iter(ep.clients))
        await eventually(lambda: client.lag is not None, what="behind")
        await asyncio.sleep(0.1)  # (the route's last interval)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        buf, messages = b"", []
        deadline = loop.time() + 15
        while not all(by_key(messages).get(s, [-1])[-1] == 299 for s in keys):
            assert loop.time() < deadline, len(messages)
            buf += await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 15)
            while True:
                if framing == "lines":
                    line, nl, rest = buf.partition(b"\n")
                    if not nl:
                        break
                    messages.append(line)
                    buf = rest
                else:
                    if len(buf) < 4 or len(buf) < 4 + struct.unpack("!I", buf[:4])[0]:
                        break
                    n = struct.unpack("!I", buf[:4])[0]
                    messages.append(buf[4 : 4 + n])
                    buf = buf[4 + n :]
        for s, ns in by_key(messages).items():
            assert ns == sorted(set(ns)), s
        assert ep.stats.superseded == client.superseded > 0
        sock.close()


async def test_clients_behind_share_one_store_and_each_gets_exactly_what_it_missed(tmp_path, upstream):
    """Twenty clients stop reading at once: the endpoint keeps the latest of each key once
    for all of them (not once each), and each, reading again, gets what it missed."""
    port = free_port()
    keys = [f"K{i:02d}" for i in range(20)]
    rounds = 150
    async with veylor_inprocess(tmp_path, config(upstream, port)) as rt:
        ep = rt.endpoints["dash"]
        await upstream.wait_connected()
        socks = [await asyncio.to_thread(stalled_ws_client, port, "/d") for _ in range(20)]
        await eventually(lambda: len(ep.clients) == 20)
        await feed(upstream, keys, rounds)
        await eventually(lambda: ep.stats.messages == rounds * len(keys), what="all dispatched")
        assert all(c.lag is not None for c in ep.clients) and ep.latest is not None
        assert len(ep.latest.frames) == len(keys) and ep.latest.behind == 20
        clients = {c.transport.get_extra_info("peername")[1]: c for c in ep.clients}
        for sock in socks:
            reader = FrameReader(sock)
            await reader.read_until(lambda ms: all(by_key(ms).get(s, [-1])[-1] == rounds - 1 for s in keys))
            for s, ns in by_key(reader.messages).items():
                assert ns == sorted(set(ns)), s
            client = clients[sock.getsockname()[1]]
            assert len(reader.messages) + client.superseded == rounds * len(keys)
            sock.close()
        await eventually(lambda: ep.latest is None, what="nothing kept once nobody is behind")
        assert ep.stats.superseded == sum(c.superseded for c in clients.values())


async def test_a_client_behind_on_more_than_its_client_buffer_of_keys_catches_up_in_parts(tmp_path, upstream):
    """300 keys of 1 KB behind, a client_buffer of 64 KiB: what it missed goes in parts of
    at most its client_buffer (a thousand clients catching up must not each get a copy of
    every key at once), each when its transport takes the last; it ends with every key's
    latest, never an older value after a newer one."""
    port = free_port()
    keys = [f"K{i:03d}" for i in range(300)]
    rounds = 12
    async with veylor_inprocess(tmp_path, config(upstream, port)) as rt:
        ep = rt.endpoints["dash"]
        await upstream.wait_connected()
        sock = await asyncio.to_thread(stalled_ws_client, port, "/d")
        await eventually(lambda: len(ep.clients) == 1)
        await feed(upstream, keys, rounds)
        await eventually(lambda: ep.stats.messages == rounds * len(keys), what="all dispatched")
        client = next(iter(ep.clients))
        assert client.lag is not None and ep.latest.size > 4 * 64 * 1024
        reader = FrameReader(sock)
        await reader.read_until(lambda ms: all(by_key(ms).get(s, [-1])[-1] == rounds - 1 for s in keys))
        for s, ns in by_key(reader.messages).items():
            assert ns == sorted(set(ns)), s
        assert len(reader.messages) + client.superseded == rounds * len(keys)
        await eventually(lambda: client.lag is None and ep.latest is None, what="caught up")
        assert ep.stats.caught_up == 1
        sock.close()
