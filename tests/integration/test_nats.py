"""Scale-out over NATS: a core Veylor (the real upstream, a NATS endpoint) and edge
Veylors (NATS sources, WebSocket clients), as real processes, on a real nats-server
cluster of three nodes on loopback ports.

What the clients of the edges get is compared, message by message, with what the
upstream sent; what they miss when a NATS node dies is compared with what the edges
counted as missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import Upstream, VeylorProcess, eventually, free_port, ws_client
from natscluster import Cluster, nats_cluster, needs_nats
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [needs_nats]

SUBJECT = "veylor.ticker"


class Veylor:
    """A Veylor process with an admin endpoint, started from YAML text."""

    def __init__(self, tmp: Path, name: str, config: str) -> None:
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.admin = free_port()
        self.path = self.dir / "config.yaml"
        self.write(config)
        self.proc = VeylorProcess("-c", str(self.path), "--no-watch", cwd=self.dir)

    def write(self, config: str) -> None:
        self.path.write_text(f'admin: {{listen: "127.0.0.1:{self.admin}"}}\n' + textwrap.dedent(config))

    async def start(self) -> Veylor:
        await self.proc.start()
        return self

    async def _admin(self, method: str, path: str, timeout: float = 10) -> aiohttp.ClientResponse:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
            s.request(method, f"http://127.0.0.1:{self.admin}{path}", headers={"X-Veylor-Reload": "1"}) as r,
        ):
            await r.read()
            return r

    async def graph(self) -> dict[str, Any]:
        return await (await self._admin("GET", "/graph?clients=")).json()

    async def metrics(self) -> str:
        return await (await self._admin("GET", "/metrics")).text()

    async def reload(self) -> dict[str, Any]:
        return await (await self._admin("POST", "/reload", 20)).json()

    async def stop(self) -> None:
        if self.proc.proc is not None and self.proc.proc.returncode is None:
            self.proc.signal()
            with contextlib.suppress(Exception):
                await self.proc.wait(timeout=10)
        await self.proc.stop()


def core_config(upstream: Upstream, servers: list[str], extra: str = "", nats: str = "") -> str:
    return f"""
    sources:
      feed: {{url: "{upstream.url}"}}
    endpoints:
      cluster:
        nats: {{servers: {json.dumps(servers)}, subject: {SUBJECT}{nats}}}
    routes:
      out: {{from: feed, to: cluster, upstream: true}}
    {extra}"""


def edge_config(servers: list[str], port: int, subject: str = SUBJECT, nats: str = "") -> str:
    return f"""
    sources:
      ticker:
        nats: {{servers: {json.dumps(servers)}, subject: {subject}{nats}}}
    endpoints:
      local: {{websocket: {{port: {port}}}}}
    routes:
      serve: {{from: ticker, to: local, upstream: true}}
    """


class Recorder:
    """A WebSocket client of an edge that records every message, in order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.got: list[str | bytes] = []
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Recorder:
        self.ws = await ws_client(self.url)
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for message in self.ws:
                self.got.append(message)

    def numbers(self) -> list[int]:
        out = []
        for m in self.got:
            if isinstance(m, bytes):
                assert m[:1] == b"B", m
                out.append(int.from_bytes(m[1:5], "big"))
            elif m.startswith('{"n"'):
                out.append(json.loads(m)["n"])
        return out

    async def close(self) -> None:
        await self.ws.close()
        if self.task is not None:
            await self.task


def message(n: int) -> str | bytes:
    """Message ``n`` of a test: every fifth binary, the others JSON text."""
    return b"B" + n.to_bytes(4, "big") + b"\x00\xff" if n % 5 == 0 else json.dumps({"n": n})


class Scene:
    """A cluster, an upstream, a core and two edges with clients; torn down in order."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cluster: Cluster | None = None
        self.upstream: Upstream | None = None
        self.core: Veylor | None = None
        self.edges: list[Veylor] = []
        self.ports: list[int] = []
        self.clients: list[list[Recorder]] = []

    async def start(self, cluster: Cluster, clients_per_edge: int = 2, stream: str = "") -> Scene:
        """``stream``: JetStream (a stream of three replicas that the edges replay)."""
        self.cluster = cluster
        self.upstream = await Upstream().start()
        urls = cluster.urls
        core_nats = f", stream: {stream}, replicas: 3" if stream else ""
        edge_nats = f", stream: {stream}" if stream else ""
        self.core = await Veylor(
            self.tmp, "core", core_config(self.upstream, [urls[0]], nats=core_nats)
        ).start()
        await self.upstream.wait_connected()
        for i, url in enumerate((urls[1], urls[2])):
            port = free_port()
            self.ports.append(port)
            config = edge_config([url], port, nats=edge_nats)
            self.edges.append(await Veylor(self.tmp, f"edge{i + 1}", config).start())
        for edge in (self.core, *self.edges):
            await self.connected(edge)
        for port in self.ports:
            self.clients.append(
                [await Recorder(f"ws://127.0.0.1:{port}/").start() for _ in range(clients_per_edge)]
            )
        await self.warm_up()
        return self

    async def connected(self, veylor: Veylor, timeout: float = 15.0) -> None:
        async def ok() -> bool:
            g = await veylor.graph()
            parts = [*g["sources"].values(), *(e for e in g["endpoints"].values() if "state" in e)]
            return all(p["state"] == "connected" for p in parts)

        deadline = asyncio.get_running_loop().time() + timeout
        while not await ok():
            assert asyncio.get_running_loop().time() < deadline, "not connected in time"
            await asyncio.sleep(0.1)

    async def warm_up(self) -> None:
        """Until every client gets a message: subscriptions are in place everywhere."""
        assert self.upstream is not None
        for _ in range(100):
            await self.upstream.send("warm-up")
            await asyncio.sleep(0.05)
            if all("warm-up" in c.got for edge in self.clients for c in edge):
                return
        raise AssertionError("the edges' clients got nothing")

    async def stop(self) -> None:
        for edge in self.clients:
            for c in edge:
                with contextlib.suppress(Exception):
                    await c.close()
        for v in (*self.edges, self.core):
            if v is not None:
                await v.stop()
        if self.upstream is not None:
            await self.upstream.stop()


@pytest.fixture
async def scene(tmp_path: Path):
    s = Scene(tmp_path)
    try:
        yield s
    finally:
        await s.stop()


async def test_every_client_of_every_edge_gets_every_message_in_order(scene: Scene, tmp_path: Path) -> None:
    async with nats_cluster(tmp_path / "nats", size=3) as cluster:
        await scene.start(cluster)
        up = scene.upstream
        assert up is not None
        n = 600
        for i in range(n):
            await up.send(message(i))
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        every = [c for edge in scene.clients for c in edge]
        await eventually(
            lambda: all(len(c.numbers()) == n for c in every), 20, what="every message everywhere"
        )
        for c in every:
            assert c.numbers() == list(range(n))
            # Text stays text, binary stays binary, bytes unchanged.
            data = [m for m in c.got if m != "warm-up"]
            assert data == [message(i) for i in range(n)]

        # A client message on an edge (route with upstream: true) reaches the upstream once.
        sender = scene.clients[1][0]
        await sender.ws.send('{"op":"subscribe","from":"edge2"}')
        await sender.ws.send(b"\x01\x02binary up")
        await eventually(lambda: len(up.received) >= 2, 10, what="the client messages upstream")
        await asyncio.sleep(0.5)
        assert up.received == ['{"op":"subscribe","from":"edge2"}', b"\x01\x02binary up"]

        # Counters: the core published each message once; no edge missed any.
        assert scene.core is not None
        core = await scene.core.graph()
        out = core["endpoints"]["cluster"]
        assert out["dropped"] == 0 and out["sequence"] >= n and out["received"] == 2
        for edge in scene.edges:
            src = (await edge.graph())["sources"]["ticker"]
            assert src["gaps"] == 0 and src["out_of_order"] == 0
            assert src["messages_in"] >= n
        # The operator sees it in /metrics (read with prometheus_client's parser).
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(await scene.core.metrics())
            for s in family.samples
        }
        assert samples[("veylor_endpoint_up", (("endpoint", "cluster"),))] == 1
        assert samples[("veylor_endpoint_waiting_messages", (("endpoint", "cluster"),))] == 0
        edge_samples = {
            s.name: s.value
            for family in text_string_to_metric_families(await scene.edges[0].metrics())
            for s in family.samples
            if s.labels.get("source") == "ticker"
        }
        assert edge_samples["veylor_source_up"] == 1 and edge_samples["veylor_source_missed_total"] == 0


@pytest.mark.slow  # kills a node of a 3-node cluster: fail-over takes NATS seconds
@pytest.mark.parametrize("node", ["an edge's", "the core's"])
async def test_a_nats_node_dies_mid_stream_edges_fail_over_and_count_what_they_miss(
    scene: Scene, tmp_path: Path, node: str
) -> None:
    async with nats_cluster(tmp_path / "nats", size=3) as cluster:
        await scene.start(cluster, clients_per_edge=1)
        up = scene.upstream
        assert up is not None
        victim = cluster.nodes[1] if node == "an edge's" else cluster.nodes[0]
        n = 1500
        for i in range(n):
            await up.send(message(i))
            if i == 500:
                await victim.kill()
            await asyncio.sleep(0.002)  # about 400 messages a second, for about 4 seconds

        # Messages keep coming after the failover (the last ones reach every edge).
        async def settled() -> bool:
            return all(c.numbers() and c.numbers()[-1] == n - 1 for edge in scene.clients for c in edge)

        deadline = asyncio.get_running_loop().time() + 30
        while not await settled():
            assert asyncio.get_running_loop().time() < deadline, "the edges did not recover"
            await asyncio.sleep(0.1)
        for edge, clients in zip(scene.edges, scene.clients, strict=True):
            (client,) = clients
            got = client.numbers()
            assert got == sorted(set(got)), "out of order, or duplicated"
            missed = n - len(got)
            src = (await edge.graph())["sources"]["ticker"]
            # What each edge counted as missed is exactly what its client did not get.
            assert src["gaps"] == missed, (src, missed)
            assert src["state"] == "connected"
        # The edge whose node died reconnected elsewhere (or the core did).
        if node == "an edge's":
            assert (await scene.edges[0].graph())["sources"]["ticker"]["connects"] >= 2


async def test_a_reload_reconnects_only_the_nats_component_that_changed(scene: Scene, tmp_path: Path) -> None:
    async with nats_cluster(tmp_path / "nats", size=1) as cluster:
        url = cluster.urls[0]
        up = await Upstream().start()
        scene.upstream = up
        core = scene.core = await Veylor(tmp_path, "core", core_config(up, [url])).start()
        port = free_port()
        edge = await Veylor(tmp_path, "edge", edge_config([url], port)).start()
        scene.edges.append(edge)
        await scene.connected(core)
        await scene.connected(edge)
        node = (await core.graph())["endpoints"]["cluster"]["node"]

        # Another endpoint on the edge: the NATS source is not touched.
        edge.write(
            edge_config([url], port).replace(
                "endpoints:\n      local:",
                f"endpoints:\n      extra: {{websocket: {{port: {free_port()}}}}}\n      local:",
            )
        )
        outcome = await edge.reload()
        assert outcome["ok"], outcome
        assert "ticker" not in json.dumps(outcome["steps"]), outcome["steps"]
        src = (await edge.graph())["sources"]["ticker"]
        assert src["connects"] == 1 and src["attempts"] == 1

        # A route change on the core: its NATS endpoint keeps its connection (same node).
        core.write(core_config(up, [url]).replace("upstream: true", "upstream: false"))
        assert (await core.reload())["ok"]
        assert (await core.graph())["endpoints"]["cluster"]["node"] == node

        # The subject changes: that endpoint reconnects (a new node, sequence from 1).
        core.write(core_config(up, [url]).replace(SUBJECT, "veylor.other"))
        assert (await core.reload())["ok"]
        await scene.connected(core)
        assert (await core.graph())["endpoints"]["cluster"]["node"] != node


@pytest.mark.slow  # kills a node of a 3-node cluster: fail-over takes NATS seconds
@pytest.mark.parametrize("node", ["an edge's", "the core's"])
async def test_with_jetstream_a_node_dies_mid_stream_and_nothing_is_lost_or_duplicated(
    scene: Scene, tmp_path: Path, node: str
) -> None:
    async with nats_cluster(tmp_path / "nats", size=3, jetstream=True) as cluster:
        await scene.start(cluster, clients_per_edge=1, stream="TICKER")
        up = scene.upstream
        assert up is not None
        victim = cluster.nodes[1] if node == "an edge's" else cluster.nodes[0]
        n = 1500
        for i in range(n):
            await up.send(message(i))
            if i == 500:
                await victim.kill()
            await asyncio.sleep(0.002)
        every = [c for edge in scene.clients for c in edge]
        await eventually(
            lambda: all(c.numbers() and c.numbers()[-1] == n - 1 for c in every), 60, what="the last message"
        )
        await asyncio.sleep(0.5)
        for c in every:
            assert c.numbers() == list(range(n))  # every one, once, in order
        for edge in scene.edges:
            src = (await edge.graph())["sources"]["ticker"]
            assert src["gaps"] == 0 and src["state"] == "connected", src
        assert scene.core is not None
        out = (await scene.core.graph())["endpoints"]["cluster"]
        assert out["dropped"] == 0 and out["waiting"] == 0, out


async def test_with_jetstream_a_restarted_edge_resumes_after_its_last_message(tmp_path: Path) -> None:
    async with nats_cluster(tmp_path / "nats", size=1, jetstream=True) as cluster:
        url = cluster.urls[0]
        up = await Upstream().start()
        core = await Veylor(tmp_path, "core", core_config(up, [url], nats=", stream: TICKER")).start()
        port = free_port()
        config = edge_config([url], port, nats=", stream: TICKER, replay: 1000, position_file: edge.pos")
        edge = await Veylor(tmp_path, "edge", config).start()
        try:
            await up.wait_connected()

            async def position() -> int:
                return (await edge.graph())["sources"]["ticker"].get("position", 0)

            async def reaches(n: int) -> None:
                deadline = asyncio.get_running_loop().time() + 20
                while await position() < n:
                    assert asyncio.get_running_loop().time() < deadline, f"position {await position()} < {n}"
                    await asyncio.sleep(0.1)

            for i in range(100):
                await up.send(message(i))
            await reaches(100)
            await edge.stop()
            assert (edge.dir / "edge.pos").read_text() == "TICKER 100\n"
            for i in range(100, 150):  # while the edge is down: kept in the stream
                await up.send(message(i))
            await asyncio.sleep(0.3)
            edge.proc = VeylorProcess("-c", str(edge.path), "--no-watch", cwd=edge.dir)
            await edge.start()
            await reaches(150)
            src = (await edge.graph())["sources"]["ticker"]
            # It resumed right after the last message it delivered: no gap, no repeat.
            assert src["resumed_from"] == 101 and src["duplicates"] == 0
            assert src["messages_in"] == 50 and src["gaps"] == 0
            client = await Recorder(f"ws://127.0.0.1:{port}/").start()
            for i in range(150, 160):
                await up.send(message(i))
            await eventually(lambda: len(client.numbers()) == 10, 10)
            assert client.numbers() == list(range(150, 160))
            await client.close()
        finally:
            await edge.stop()
            await core.stop()
            await up.stop()
