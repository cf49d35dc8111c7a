"""The NATS kinds (scale-out) against an attacker and an operator's mistakes: hostile
publishers on the edge's subject and on the core's upstream subject, JetStream streams
changed under Veylor's feet, position files that are not what they should be, NATS
servers that never answer or answer garbage, and secrets in server URLs.

Real nats-server processes and real sockets on 127.0.0.1, each test bounded in time.
Written by an adversarial review of the first version of these kinds: each docstring
tells the hole as it was found. Twelve of them failed then (the stray message, max
payload, deleted stream, position past the end, discarded messages, shared position
file, fake heartbeat, node-id flipping, absurd sequence, garbage server, passwords with
/ or #, moved position file); all pass since their fixes, and guard them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
import websockets
from conftest import run_veylor
from helpers import Upstream, VeylorProcess, eventually, free_port, veylor_inprocess, ws_client
from natscluster import Node, Proxy, nats_cluster, needs_nats
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [needs_nats]

SUBJECT = "veylor.ticker"
UP_SUBJECT = "_VEYLOR.up." + SUBJECT


def core(upstream: Upstream, url: str, nats: str = "", extra: str = "") -> str:
    """A core: the upstream routed to a NATS endpoint (``nats``: more keys of ``nats:``)."""
    return f"""
    sources:
      feed: {{url: "{upstream.url}"}}
    endpoints:
      cluster:
        nats: {{servers: ["{url}"], subject: {SUBJECT}{nats}}}
        {extra}
    routes:
      out: {{from: feed, to: cluster, upstream: true}}
    """


def edge(url: str, port: int, nats: str = "", subject: str = SUBJECT, extra: str = "") -> str:
    """An edge: a NATS source routed to a local WebSocket endpoint."""
    return f"""
    sources:
      ticker:
        nats: {{servers: ["{url}"], subject: "{subject}"{nats}}}
        {extra}
    endpoints:
      local: {{websocket: {{port: {port}}}}}
    routes:
      serve: {{from: ticker, to: local}}
    """


async def stream_messages(url: str, stream: str = "TICKER") -> list[bytes]:
    """Every message a stream holds, in order (read with a plain ordered consumer)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out: list[bytes] = []
        if info.state.messages == 0:
            return out
        sub = await js.subscribe(SUBJECT, stream=stream, ordered_consumer=True)
        for _ in range(info.state.messages):
            out.append((await sub.next_msg(timeout=5)).data)
        return out
    finally:
        await nc.close()


async def ready_core(rt: Any, upstream: Upstream) -> Any:
    ep = rt.endpoints["cluster"]
    await upstream.wait_connected()
    await eventually(lambda: ep.status()["stream_ready"], 15, what="the stream")
    return ep


# -- JetStream: the core's side ---------------------------------------------------------------


async def test_jetstream_core_keeps_publishing_after_a_stray_message_on_its_subject(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Anyone NATS lets publish on the subject (an operator's `nats pub` to test, another
    tool) stores one message in the stream: the core's next publish carries
    Nats-Expected-Last-Msg-Id = its own previous id, the stream's last id is now the
    stray one's (none), so the stream refuses it -- and every retry, forever."""
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        url = cluster.urls[0]
        async with veylor_inprocess(tmp_path, core(upstream, url, ", stream: TICKER")) as rt:
            ep = await ready_core(rt, upstream)
            for i in range(5):
                await upstream.send(f"m{i}")
            await eventually(lambda: ep.status()["acked"] == 5, 10)
            other = await nats.connect(url)
            await other.publish(SUBJECT, b"stray")
            await other.flush()
            await other.close()
            await asyncio.sleep(0.2)
            for i in range(5, 10):
                await upstream.send(f"m{i}")
            with contextlib.suppress(AssertionError):
                await eventually(lambda: ep.status()["acked"] == 10, 9)
            status = ep.status()
            assert status["acked"] == 10 and status["waiting"] == 0, (
                f"the core's JetStream publishing is wedged by one message it did not publish: {status}"
            )
            held = await stream_messages(url)
            assert held[-5:] == [f"m{i}".encode() for i in range(5, 10)]


async def test_jetstream_core_drops_a_message_larger_than_max_payload_and_goes_on(
    tmp_path: Path, upstream: Upstream
) -> None:
    """The upstream may send up to 16 MiB (the source's max_message_size); nats-server
    takes 1 MiB by default. The plain Outbox drops such a message and counts it
    (MaxPayloadError); the StreamOutbox retries it forever, and nothing after it (nor
    the messages sent in the same window before it) is ever published."""
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        url = cluster.urls[0]
        async with veylor_inprocess(tmp_path, core(upstream, url, ", stream: TICKER")) as rt:
            ep = await ready_core(rt, upstream)
            await upstream.send("before")
            await upstream.send("x" * (2 * 2**20))
            for i in range(5):
                await upstream.send(f"m{i}")
            await eventually(lambda: ep.seq == 7, 10)
            with contextlib.suppress(AssertionError):
                await eventually(lambda: ep.status()["waiting"] == 0, 9)
            status = ep.status()
            assert status["waiting"] == 0 and ep.stats.dropped == 1, (
                f"one oversized message wedged the core's stream publishing: {status}, "
                f"dropped {ep.stats.dropped}"
            )
            assert await stream_messages(url) == [b"before"] + [f"m{i}".encode() for i in range(5)]


async def test_jetstream_core_recreates_a_stream_deleted_while_it_runs(
    tmp_path: Path, upstream: Upstream
) -> None:
    """docs/scale-out.md: "the core creates the stream if it is missing". It does so once,
    before the first publish; a stream deleted later (by an operator, or a NATS node
    that restarted with an empty store) is never made again: every publish fails
    ("no response from stream"), the messages wait, then are dropped."""
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        url = cluster.urls[0]
        async with veylor_inprocess(tmp_path, core(upstream, url, ", stream: TICKER")) as rt:
            ep = await ready_core(rt, upstream)
            for i in range(3):
                await upstream.send(f"m{i}")
            await eventually(lambda: ep.status()["acked"] == 3, 10)
            admin = await nats.connect(url)
            await admin.jetstream().delete_stream("TICKER")
            await admin.close()
            for i in range(3, 6):
                await upstream.send(f"m{i}")
            with contextlib.suppress(AssertionError):
                await eventually(lambda: ep.status()["acked"] == 6, 9)
            status = ep.status()
            assert status["acked"] == 6, f"the deleted stream was never created again: {status}"
            assert await stream_messages(url) == [f"m{i}".encode() for i in range(3, 6)]


async def test_jetstream_purge_while_running_is_harmless(tmp_path: Path, upstream: Upstream) -> None:
    """A purge keeps the stream (and its sequence): the core goes on publishing and an
    edge goes on reading, nothing twice."""
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        url = cluster.urls[0]
        async with veylor_inprocess(tmp_path, core(upstream, url, ", stream: TICKER"), "core.yaml") as rt:
            ep = await ready_core(rt, upstream)
            port = free_port()
            async with veylor_inprocess(tmp_path, edge(url, port, ", stream: TICKER"), "edge.yaml") as ert:
                src = ert.sources["ticker"]
                await eventually(lambda: src.sub is not None, 10)
                client = await ws_client(f"ws://127.0.0.1:{port}/")
                await asyncio.sleep(0.3)
                for i in range(5):
                    await upstream.send(f"m{i}")
                got = [await asyncio.wait_for(client.recv(), 10) for _ in range(5)]
                admin = await nats.connect(url)
                await admin.jetstream().purge_stream("TICKER")
                await admin.close()
                for i in range(5, 10):
                    await upstream.send(f"m{i}")
                got += [await asyncio.wait_for(client.recv(), 10) for _ in range(5)]
                assert got == [f"m{i}" for i in range(10)]
                # (the edge can deliver m9 before the core has read JetStream's ack of it)
                await eventually(lambda: ep.status()["acked"] == 10, 10, what="10 messages acked")
                assert src.stats.gaps == 0
                await client.close()


# -- JetStream: the edge's side ---------------------------------------------------------------


async def fill_stream(rt: Any, upstream: Upstream, n: int, start: int = 0) -> Any:
    ep = rt.endpoints["cluster"]
    for i in range(start, start + n):
        await upstream.send(f"m{i}")
    await eventually(lambda: ep.status()["acked"] == start + n, 15, what=f"{start + n} messages acked")
    return ep


async def recv_all(client: Any, n: int, timeout: float) -> list[Any]:
    got: list[Any] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while len(got) < n:
                got.append(await client.recv())
    return got


@pytest.mark.parametrize("position", [1_000_000, 2**64 + 5], ids=["beyond-the-end", "beyond-uint64"])
async def test_a_position_file_beyond_the_streams_end_does_not_silence_the_edge(
    tmp_path: Path, upstream: Upstream, position: int
) -> None:
    """A position file from a former incarnation of the stream (deleted and made again,
    a NATS store lost) or a damaged one holds a sequence the stream has not reached.
    The server starts the consumer after its last message; the edge then drops every
    new message as a "duplicate" (seq <= position) until the stream reaches the old
    position -- silence, reported as "connected". Past 2**64 the consumer cannot even
    be made (the edge stays "subscribing" forever)."""
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        url = cluster.urls[0]
        async with veylor_inprocess(tmp_path, core(upstream, url, ", stream: TICKER"), "core.yaml") as rt:
            await ready_core(rt, upstream)
            await fill_stream(rt, upstream, 20)
            (tmp_path / "edge.pos").write_text(f"TICKER {position}\n")
            port = free_port()
            config = edge(url, port, ", stream: TICKER, position_file: edge.pos")
            async with veylor_inprocess(tmp_path, config, "edge.yaml") as ert:
                src = ert.sources["ticker"]
                # Subscribed, and the replayed last message (m19) delivered before the client comes.
                await eventually(lambda: src.status()["state"] == "connected" and src.position > 0, 10)
                client = await ws_client(f"ws://127.0.0.1:{port}/")
                await asyncio.sleep(0.5)
                for i in range(20, 25):
                    await upstream.send(f"m{i}")
                got = await recv_all(client, 5, 6)
                await client.close()
                assert got == [f"m{i}" for i in range(20, 25)], (
                    f"the edge delivered {got} of m20..m24; its state: {src.status()}"
                )


async def test_messages_the_stream_discarded_before_an_edge_read_them_are_counted_as_missed(
    tmp_path: Path, upstream: Upstream
) -> None:
    """An edge restarts with position 2 after max_msgs_per_subject (10 here) discarded
    messages 3..30: it resumes at 31 and says nothing -- gaps 0, resumed_from 3.
    docs/scale-out.md promises a loss is never silent ("an edge counts each gap as missed")."""
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        url = cluster.urls[0]
        config = core(upstream, url, ", stream: TICKER, max_msgs_per_subject: 10")
        async with veylor_inprocess(tmp_path, config, "core.yaml") as rt:
            await ready_core(rt, upstream)
            await fill_stream(rt, upstream, 40)
            (tmp_path / "edge.pos").write_text("TICKER 2\n")  # the edge was down since 2
            port = free_port()
            config = edge(url, port, ", stream: TICKER, position_file: edge.pos")
            async with veylor_inprocess(tmp_path, config, "edge.yaml") as ert:
                src = ert.sources["ticker"]
                await eventually(lambda: src.position == 40, 10)
                assert src.stats.messages_in == 10
                assert src.stats.gaps == 28, (
                    f"28 messages (3..30) never reached the edge, it counted {src.stats.gaps} "
                    f"missed: {src.status()}"
                )


async def test_two_sources_cannot_share_one_position_file(tmp_path: Path) -> None:
    """Two sources given the same position_file would overwrite each other's position,
    and a restart would resume one of them at the other's place (losing, or repeating,
    what came meanwhile, without a count): the configuration is refused, at the second
    source's key, naming the first."""
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(
            """
            sources:
              a: {nats: {servers: ["nats://127.0.0.1:4222"], subject: veylor.a, stream: SA, position_file: shared.pos}}
              b: {nats: {servers: ["nats://127.0.0.1:4222"], subject: veylor.b, stream: SB, position_file: shared.pos}}
            endpoints:
              local: {websocket: {port: 8765}}
            routes:
              sa: {from: a, to: local}
              sb: {from: b, to: local}
            """
        )
    )
    result = await asyncio.to_thread(run_veylor, "check", "-c", str(tmp_path / "config.yaml"))
    assert result.returncode == 1
    assert "sources.b.nats.position_file: source 'a' keeps its position in" in result.stderr, result.stderr


async def test_bad_server_urls_fail_check_at_their_file_line_and_key(tmp_path: Path) -> None:
    """Issue 22: a port over 65535, a port that is not a number and an IPv6 address with
    no closing bracket passed `veylor check` with exit 0; at run time each was retried
    for ever, with a warning at every attempt."""
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(
            """
            sources:
              a: {nats: {servers: ["nats://127.0.0.1:99999"], subject: veylor.a}}
              b: {nats: {servers: ["nats://h:abc"], subject: veylor.b}}
            endpoints:
              local: {websocket: {port: 8765}}
              c: {nats: {servers: ["nats://127.0.0.1:4222", "nats://[::1:4222"], subject: veylor.c}}
            routes:
              sa: {from: a, to: local}
              sb: {from: b, to: [local, c]}
            """
        )
    )
    result = await asyncio.to_thread(run_veylor, "check", "-c", "config.yaml", cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    lines = result.stderr.splitlines()
    assert lines[:3] == [
        "config.yaml:3 sources.a.nats.servers: 'nats://127.0.0.1:99999' is not a valid URL: Port out of range "
        "0-65535: write nats://HOST:PORT (or tls://HOST:PORT)",
        "config.yaml:4 sources.b.nats.servers: 'nats://h:abc' is not a valid URL: Port could not be cast to "
        "integer value as 'abc': write nats://HOST:PORT (or tls://HOST:PORT)",
        "config.yaml:7 endpoints.c.nats.servers[1]: 'nats://[::1:4222' is not a valid URL: Invalid IPv6 URL: "
        "write nats://HOST:PORT (or tls://HOST:PORT)",
    ], result.stderr


async def raw_publish(port: int, subject: str, header: bytes, payload: bytes) -> None:
    """Publish with a header block written by hand (HPUB): what any NATS client can send,
    whatever a client library would make of it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await asyncio.wait_for(reader.readline(), 5)  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        size = len(header) + len(payload)
        writer.write(f"HPUB {subject} {len(header)} {size}\r\n".encode() + header + payload + b"\r\nPING\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"PONG"), "not published"
    finally:
        writer.close()


async def test_a_message_dressed_as_a_heartbeat_in_the_stream_does_not_wedge_every_edge(
    tmp_path: Path,
) -> None:
    """One 30-byte message published on the subject with a status line in its headers
    (`NATS/1.0 100 Idle Heartbeat`, no payload) is stored by the stream. Delivered from
    the stream, the client library takes it for a control message: the ordered
    consumer's sequence no longer matches, it resets to just before that message, gets
    it again, resets again... The edge delivers nothing more and makes thousands of
    consumers a second on the NATS servers; every edge, and every restart, until the
    message leaves the stream."""
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        url = cluster.urls[0]
        admin = await nats.connect(url)
        js = admin.jetstream()
        await js.add_stream(name="TICKER", subjects=[SUBJECT])

        async def publish(n: int) -> None:  # (as a core does)
            headers = {"Veylor-Type": "text", "Veylor-Node": "core1", "Veylor-Seq": str(n + 1)}
            await js.publish(SUBJECT, f"m{n}".encode(), headers=headers)

        await publish(0)
        port = free_port()
        try:
            async with veylor_inprocess(tmp_path, edge(url, port, ", stream: TICKER")) as rt:
                src = rt.sources["ticker"]
                await eventually(lambda: src.position == 1, 10)
                client = await ws_client(f"ws://127.0.0.1:{port}/")
                await asyncio.sleep(0.3)
                await publish(1)
                assert await recv_all(client, 1, 10) == ["m1"]
                await raw_publish(cluster.nodes[0].port, SUBJECT, b"NATS/1.0 100 Idle Heartbeat\r\n\r\n", b"")
                for n in range(2, 5):
                    await publish(n)
                got = await recv_all(client, 3, 6)
                consumers = (await js.stream_info("TICKER")).state.consumer_count
                await client.close()
                assert got == ["m2", "m3", "m4"] and consumers < 20, (
                    f"after one fake heartbeat the edge delivered {got} of m2..m4, and the stream has "
                    f"{consumers} consumers; the edge: {src.status()}"
                )
        finally:
            await admin.close()


# -- A hostile publisher on core NATS ----------------------------------------------------------


class Proc:
    """A Veylor process with an admin endpoint, from YAML text (for /metrics, /graph,
    /readyz, its log and its memory)."""

    def __init__(self, tmp: Path, name: str, config: str, *flags: str) -> None:
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.admin = free_port()
        self.path = self.dir / "config.yaml"
        self.write(config)
        self.proc = VeylorProcess(*flags, "-c", str(self.path), "--no-watch", cwd=self.dir)

    def write(self, config: str) -> None:
        # (ready only while every source and NATS endpoint is connected: what these tests watch)
        admin = f'admin: {{listen: "127.0.0.1:{self.admin}", ready_requires: all}}\n'
        self.path.write_text(admin + textwrap.dedent(config))

    async def start(self, timeout: float = 15.0) -> Proc:
        await self.proc.start(timeout=timeout)
        return self

    async def get(self, path: str, timeout: float = 10) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
            s.get(f"http://127.0.0.1:{self.admin}{path}") as r,
        ):
            return r.status, await r.text()

    async def graph(self) -> dict[str, Any]:
        return json.loads((await self.get("/graph"))[1])

    def rss(self) -> int:
        assert self.proc.proc is not None
        for line in Path(f"/proc/{self.proc.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    async def stop(self) -> None:
        if self.proc.proc is not None and self.proc.proc.returncode is None:
            self.proc.signal()
            with contextlib.suppress(Exception):
                await self.proc.wait(timeout=10)
        await self.proc.stop()


@contextlib.asynccontextmanager
async def running(proc: Proc, timeout: float = 15.0):
    try:
        yield await proc.start(timeout)
    finally:
        await proc.stop()


async def test_a_publisher_flipping_its_node_id_cannot_flood_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every change of Veylor-Node on a subject logs "a new publisher on ..." at INFO
    (the default level), unthrottled: one line per message for a publisher that
    alternates two ids -- the only NATS condition an outsider can log without bound.
    (Since issue 22 neither id takes the other's place: the first stays followed, the
    other's messages are outliers, logged once a minute.)"""
    caplog.set_level(logging.INFO, logger="veylor")
    async with nats_cluster(tmp_path / "nats") as cluster:
        url = cluster.urls[0]
        async with veylor_inprocess(tmp_path, edge(url, free_port())) as rt:
            src = rt.sources["ticker"]
            await eventually(lambda: src.status()["state"] == "connected", 10)
            await asyncio.sleep(0.3)
            pub = await nats.connect(url)
            n = 2000
            for i in range(n):
                headers = {"Veylor-Type": "text", "Veylor-Node": "AB"[i % 2], "Veylor-Seq": str(i // 2 + 1)}
                await pub.publish(SUBJECT, b"x", headers=headers)
            await pub.flush()
            await pub.close()
            await eventually(lambda: src.stats.messages_in == n, 15)
            lines = [r for r in caplog.records if SUBJECT in r.getMessage()]
            assert src.stats.publisher_changes == 0 and src.stats.gaps == 0
            assert src.stats.outliers == n // 2 - 1  # B's, each cut short by A's next (the last one pending)
            assert len(lines) <= 10, f"{len(lines)} log lines for {n} messages from one publisher"


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no {name} {labels} in /metrics")


async def test_an_absurd_sequence_number_does_not_poison_the_missed_counter(tmp_path: Path) -> None:
    """Veylor-Seq is parsed with int(): a publisher writes 1, then a number of 400 digits
    (int() takes up to 4,300): veylor_source_missed_total becomes 10**400, a value no
    Prometheus server can parse (Go's ParseFloat: out of range), so the whole scrape
    of the edge fails. int() also takes "1_000", " 7 " and non-ASCII digits, which no
    Veylor writes."""
    async with nats_cluster(tmp_path / "nats") as cluster:
        url = cluster.urls[0]
        async with running(Proc(tmp_path, "edge", edge(url, free_port()))) as proc:
            await eventually(lambda: "connected to NATS" in proc.proc.log, 15)
            await asyncio.sleep(0.3)
            pub = await nats.connect(url)
            for seq in ("1", "9" * 400):
                headers = {"Veylor-Type": "text", "Veylor-Node": "evil", "Veylor-Seq": seq}
                await pub.publish(SUBJECT, b"x", headers=headers)
            await pub.flush()
            await pub.close()
            await asyncio.sleep(1.0)
            status, text = await proc.get("/metrics")
            assert status == 200
            try:
                missed = metric(text, "veylor_source_missed_total", source="ticker")
            except (OverflowError, ValueError) as exc:
                line = next(x for x in text.splitlines() if x.startswith("veylor_source_missed_total"))
                raise AssertionError(f"/metrics no longer parses ({exc!r}): {line[:120]}...") from None
            assert missed < 2**63, (
                f"veylor_source_missed_total has {len(str(int(missed)))} digits after two messages of an "
                "outsider: Prometheus (strconv.ParseFloat) refuses the whole scrape"
            )


async def test_one_forged_sequence_number_cannot_hide_a_real_loss_after_it(tmp_path: Path) -> None:
    """Issue 22: a subscriber of the subject copies the core's node id from what it
    receives and publishes one message with a Veylor-Seq just under the "new publisher"
    threshold (10**9 ahead). The edge counted 10**9 missed messages, and from then on
    every real message was "out of order": a real loss of 50 after it was never
    counted. Now the forged jump is not followed, and the real loss is counted as 50."""
    async with nats_cluster(tmp_path / "nats") as cluster:
        url = cluster.urls[0]
        port = free_port()
        async with running(Proc(tmp_path, "edge", edge(url, port))) as proc:
            await eventually(lambda: "connected to NATS" in proc.proc.log, 15)
            await asyncio.sleep(0.3)
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            core = await nats.connect(url)  # publishes as a core does
            attacker = await nats.connect(url)
            try:
                seen: asyncio.Queue[Any] = asyncio.Queue()
                await attacker.subscribe(SUBJECT, cb=seen.put)
                await attacker.flush()

                async def publish(first: int, last: int) -> None:
                    for seq in range(first, last + 1):
                        headers = {"Veylor-Type": "text", "Veylor-Node": "c0ffee", "Veylor-Seq": str(seq)}
                        await core.publish(SUBJECT, f"m{seq}".encode(), headers=headers)
                        await asyncio.sleep(0.001)
                    await core.flush()

                await publish(1, 100)
                # The attacker copies the newest it has seen. (Core NATS is at most once:
                # one suite run saw this plain subscriber get 99 of the 100, so it does not
                # wait for every one; the edge must still get them all, below.)
                node, last = "", 0
                while last < 100:
                    with contextlib.suppress(TimeoutError):
                        copied = await asyncio.wait_for(seen.get(), 5)
                        node = copied.headers["Veylor-Node"]
                        last = max(last, int(copied.headers["Veylor-Seq"]))
                        continue
                    break
                assert node and last >= 90, (node, last)
                forged = {"Veylor-Type": "text", "Veylor-Node": node, "Veylor-Seq": str(last + 10**9)}
                await attacker.publish(SUBJECT, b"forged", headers=forged)
                await attacker.flush()
                await publish(101, 120)
                await publish(171, 200)  # 121..170 never reach the edge: a real loss of 50
                got = await recv_all(client, 100 + 1 + 20 + 30, 15)
                assert got[-1] == "m200" and "forged" in got
                status, text = await proc.get("/metrics")
                assert status == 200
                missed = metric(text, "veylor_source_missed_total", source="ticker")
                late = metric(text, "veylor_source_out_of_order_total", source="ticker")
                outliers = metric(text, "veylor_source_sequence_outliers_total", source="ticker")
                assert (missed, late) == (50, 0), (
                    f"after one forged Veylor-Seq, a real loss of 50 shows as {missed:.0f} missed and "
                    f"{late:.0f} out of order"
                )
                assert outliers == 1
                assert "more than the publisher's rate can explain" in proc.proc.log
            finally:
                await client.close()
                await core.close()
                await attacker.close()


async def test_hostile_headers_and_empty_messages_are_delivered_or_dropped_and_the_feed_goes_on(
    tmp_path: Path,
) -> None:
    """Huge header values, thousands of headers, odd Veylor-Seq values, no payload at
    all, a status line a client library may take for a control message: each message is
    delivered (or dropped and counted), the connection stays, and the real feed after
    them arrives intact."""
    async with nats_cluster(tmp_path / "nats") as cluster:
        url = cluster.urls[0]
        port = free_port()
        async with veylor_inprocess(tmp_path, edge(url, port)) as rt:
            src = rt.sources["ticker"]
            await eventually(lambda: src.status()["state"] == "connected", 10)
            client = await ws_client(f"ws://127.0.0.1:{port}/", max_size=None)
            await asyncio.sleep(0.3)
            pub = await nats.connect(url)
            try:
                await pub.publish(SUBJECT, b"big-header", headers={"X-Big": "v" * 900_000})
                many = {f"X-H{i}": str(i) for i in range(5000)}
                await pub.publish(SUBJECT, b"many-headers", headers={**many, "Veylor-Type": "text"})
                for seq in ("-1", "NaN", "inf", "1e9", " 7 ", "\u0663", "", "99999999999999999999"):
                    await pub.publish(SUBJECT, b"odd-seq", headers={"Veylor-Node": "n", "Veylor-Seq": seq})
                await pub.publish(SUBJECT, b"")
                await pub.publish(SUBJECT, b"", headers={"Veylor-Type": "binary"})
                await pub.flush()
                port_nats = cluster.nodes[0].port
                await raw_publish(port_nats, SUBJECT, b"NATS/1.0 503\r\n\r\n", b"")
                await raw_publish(port_nats, SUBJECT, b"NATS/1.0 100 Idle Heartbeat\r\n\r\n", b"hb")
                await raw_publish(port_nats, SUBJECT, b"NATS/1.0\r\nno colon here\r\n\r\n", b"nocolon")
                for i in range(3):
                    await pub.publish(SUBJECT, f"m{i}".encode(), headers={"Veylor-Type": "text"})
                await pub.flush()
                got: list[Any] = []
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        while "m2" not in got:
                            got.append(await client.recv())
                assert got[-3:] == ["m0", "m1", "m2"], got
                assert {"big-header", "many-headers", "odd-seq", "", b"", "hb", "nocolon"} <= set(got), got
                assert src.state == "connected" and src.stats.connects == 1
            finally:
                await pub.close()
                await client.close()


async def flood(url: str, subject: str, n: int, size: int, headers: dict[str, str] | None = None) -> None:
    """Publish ``n`` messages of ``size`` bytes as fast as a client can."""
    pub = await nats.connect(url, pending_size=64 * 2**20, flush_timeout=30)
    try:
        payload = b"f" * size
        for i in range(n):
            await pub.publish(subject, payload, headers=headers)
            if i % 5000 == 0:
                await pub.flush(timeout=30)
        await pub.flush(timeout=30)
    finally:
        await pub.close()


async def probe(proc: Proc, stop: asyncio.Event, worst: list[float], peak: list[int]) -> None:
    """/healthz latency (the worst) and the process's resident memory (the peak), until ``stop``."""
    while not stop.is_set():
        t0 = time.monotonic()
        with contextlib.suppress(Exception):
            await proc.get("/healthz", timeout=30)
        worst[0] = max(worst[0], time.monotonic() - t0)
        peak[0] = max(peak[0], proc.rss())
        await asyncio.sleep(0.05)


@pytest.mark.slow  # a load test: floods, or hundreds of clients (the quick loop leaves it to the full suite)
async def test_a_flood_on_the_edges_subject_is_bounded_in_memory_and_never_stalls_the_edge(
    tmp_path: Path,
) -> None:
    """300,000 messages of 1 KiB, as fast as NATS takes them: the edge's memory stays
    bounded (the library's 32 MiB of pending messages, the clients' buffers), it answers
    its admin endpoint meanwhile, and the feed goes on after."""
    async with nats_cluster(tmp_path / "nats") as cluster:
        url = cluster.urls[0]
        port = free_port()
        async with running(Proc(tmp_path, "edge", edge(url, port))) as proc:
            await eventually(lambda: "connected to NATS" in proc.proc.log, 15)
            reader = await ws_client(f"ws://127.0.0.1:{port}/")  # a client through the flood
            drained = [0]

            async def drain() -> None:
                with contextlib.suppress(Exception):
                    async for _ in reader:
                        drained[0] += 1

            draining = asyncio.create_task(drain())
            await asyncio.sleep(0.5)
            base = proc.rss()
            stop, worst, peak = asyncio.Event(), [0.0], [base]
            prober = asyncio.create_task(probe(proc, stop, worst, peak))
            try:
                await asyncio.wait_for(flood(url, SUBJECT, 300_000, 1024), 60)
                await asyncio.sleep(1.0)
            finally:
                stop.set()
                await prober
            # (the flood may still be going through the edge: a new client waits for "after")
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            await asyncio.sleep(0.3)
            pub = await nats.connect(url)
            got: list[Any] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(20):
                    while "after" not in got:
                        await pub.publish(SUBJECT, b"after", headers={"Veylor-Type": "text"})
                        await pub.flush()
                        try:
                            async with asyncio.timeout(1):
                                got.append(await client.recv())
                        except TimeoutError:
                            pass
                        except websockets.ConnectionClosed:  # too slow for the rest of the flood,
                            client = await ws_client(f"ws://127.0.0.1:{port}/")  # on a starved machine
            await pub.close()
            await client.close()
            await reader.close()
            await draining
            grown = (peak[0] - base) / 2**20
            print(
                f"edge flood: worst /healthz {worst[0]:.2f}s, memory +{grown:.0f} MiB, drained {drained[0]}"
            )
            assert "after" in got, "the feed did not go on after the flood"
            assert worst[0] < 3.0, f"the edge's event loop stalled {worst[0]:.1f}s during the flood"
            assert grown < 200, f"the edge grew by {grown:.0f} MiB during the flood"


@pytest.mark.slow  # a load test: floods, or hundreds of clients (the quick loop leaves it to the full suite)
async def test_a_flood_on_the_cores_upstream_subject_never_holds_up_its_feed(
    tmp_path: Path, upstream: Upstream
) -> None:
    """200,000 messages on _VEYLOR.up.SUBJECT (anyone allowed to publish there): the
    core's local clients keep getting the upstream's messages promptly, its memory
    stays bounded, its one upstream connection stays, and the route's rate limits what
    reaches the upstream."""
    async with nats_cluster(tmp_path / "nats") as cluster:
        url = cluster.urls[0]
        port = free_port()
        config = f"""
        sources:
          feed: {{url: "{upstream.url}"}}
        endpoints:
          cluster: {{nats: {{servers: ["{url}"], subject: {SUBJECT}}}}}
          local: {{websocket: {{port: {port}}}}}
        routes:
          out: {{from: feed, to: cluster, upstream: {{rate: 50, burst: 50}}}}
          here: {{from: feed, to: local}}
        """
        async with running(Proc(tmp_path, "core", config)) as proc:
            await upstream.wait_connected()
            await eventually(lambda: "connected to NATS" in proc.proc.log, 15)
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            await asyncio.sleep(0.5)
            base = proc.rss()
            stop, worst, peak = asyncio.Event(), [0.0], [base]
            lags: list[float] = []

            async def ticker() -> None:
                i = 0
                while not stop.is_set():
                    t0 = time.monotonic()
                    await upstream.send(f"t{i}")
                    while (await asyncio.wait_for(client.recv(), 30)) != f"t{i}":
                        pass
                    lags.append(time.monotonic() - t0)
                    i += 1
                    await asyncio.sleep(0.05)

            prober = asyncio.create_task(probe(proc, stop, worst, peak))
            ticking = asyncio.create_task(ticker())
            try:
                await asyncio.wait_for(flood(url, UP_SUBJECT, 200_000, 200), 60)
                await asyncio.sleep(1.0)
            finally:
                stop.set()
                await prober
                await ticking
            await client.close()
            grown = (peak[0] - base) / 2**20
            print(f"core flood: worst lag {max(lags):.2f}s over {len(lags)}, memory +{grown:.0f} MiB")
            assert max(lags) < 3.0, f"the core's feed to its own clients stalled {max(lags):.1f}s"
            assert grown < 200, f"the core grew by {grown:.0f} MiB during the flood"
            assert upstream.connects == 1 and len(upstream.received) < 2000


# -- A connection that stops reading -------------------------------------------------------------

# A message nats-py cannot parse (its status line is not UTF-8): its read loop ends on it,
# and the connection stays "connected" (tests/integration/test_nats_compat.py).
BAD_STATUS = b"NATS/1.0 \xff\xfe\r\n\r\n"


async def until(predicate: Any, timeout: float, what: str) -> float:
    """Poll the async ``predicate`` every 0.1 s until it holds: the seconds it took."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while not await predicate():
        if loop.time() - began > timeout:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        await asyncio.sleep(0.1)
    return loop.time() - began


async def test_one_malformed_message_does_not_silence_an_edge(tmp_path: Path) -> None:
    """Issue 22: one message whose status line is not UTF-8 ended nats-py's read loop; the
    edge delivered nothing more for minutes (until the library's own stale-connection
    check), while it said "connected" and /readyz answered 200. Now Veylor sees the read
    loop end, makes the connection again (counted, with its reason) and the feed goes
    on within seconds."""
    async with nats_cluster(tmp_path / "nats") as cluster:
        url = cluster.urls[0]
        port = free_port()
        async with running(Proc(tmp_path, "edge", edge(url, port))) as proc:
            await eventually(lambda: "connected to NATS" in proc.proc.log, 15)
            await asyncio.sleep(0.3)
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            pub = await nats.connect(url)
            try:
                await pub.publish(SUBJECT, b"before", headers={"Veylor-Type": "text"})
                await pub.flush()
                assert await recv_all(client, 1, 5) == ["before"]
                await raw_publish(cluster.nodes[0].port, SUBJECT, BAD_STATUS, b"x")
                got: list[Any] = []

                async def flowing() -> bool:
                    await pub.publish(SUBJECT, b"after", headers={"Veylor-Type": "text"})
                    got.extend(await recv_all(client, 1, 0.2))
                    return "after" in got

                took = await until(flowing, 10, "a message after the malformed one reached the client")
                print(f"the edge delivered again {took:.1f}s after the malformed message")
                text = (await proc.get("/metrics"))[1]
                assert (
                    metric(text, "veylor_source_stalls_total", source="ticker", reason="read_loop_ended") == 1
                )
                assert metric(text, "veylor_source_connects_total", source="ticker") == 2
                assert metric(text, "veylor_source_up", source="ticker") == 1
                assert "stopped reading" in proc.proc.log
            finally:
                await pub.close()
                await client.close()


async def test_without_the_read_loop_guard_the_watchdog_still_notices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a nats-py release hide its read loop from compat (reader_ended says
    None: it cannot tell), the watchdog's ping still finds the dead connection within
    stall_timeout (2 s here)."""
    from veylor.runtime import compat

    monkeypatch.setattr(compat, "reader_ended", lambda nc: None)
    async with nats_cluster(tmp_path / "nats") as cluster:
        url = cluster.urls[0]
        port = free_port()
        async with veylor_inprocess(tmp_path, edge(url, port, ", stall_timeout: 2")) as rt:
            src = rt.sources["ticker"]
            await eventually(lambda: src.state == "connected", 10)
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            pub = await nats.connect(url)
            try:
                await asyncio.sleep(0.3)
                await raw_publish(cluster.nodes[0].port, SUBJECT, BAD_STATUS, b"x")
                got: list[Any] = []

                async def flowing() -> bool:
                    await pub.publish(SUBJECT, b"after", headers={"Veylor-Type": "text"})
                    got.extend(await recv_all(client, 1, 0.2))
                    return "after" in got

                took = await until(flowing, 10, "a message after the malformed one reached the client")
                print(f"without the guard, the edge delivered again {took:.1f}s after the malformed message")
                assert src.stats.stalled_no_pong == 1 and src.stats.stalled_read_loop == 0
                assert src.stats.connects == 2 and src.stats.disconnects == 1
            finally:
                await pub.close()
                await client.close()


async def test_one_malformed_message_does_not_deafen_the_core_to_its_edges(
    tmp_path: Path, upstream: Upstream
) -> None:
    """Issue 22: the same message on _VEYLOR.up.SUBJECT ended the core's read loop: the
    core kept publishing, and ignored every edge's client messages from then on."""
    async with nats_cluster(tmp_path / "nats") as cluster:
        url = cluster.urls[0]
        async with running(Proc(tmp_path, "core", core(upstream, url))) as proc:
            await upstream.wait_connected()
            await eventually(lambda: "connected to NATS" in proc.proc.log, 15)
            await asyncio.sleep(0.3)
            edge_nc = await nats.connect(url)  # an edge's client messages, as a NATS source sends them
            try:
                await raw_publish(cluster.nodes[0].port, UP_SUBJECT, BAD_STATUS, b"x")

                async def heard() -> bool:
                    await edge_nc.publish(UP_SUBJECT, b"SUBSCRIBE", headers={"Veylor-Type": "text"})
                    await edge_nc.flush()
                    await asyncio.sleep(0.2)
                    return "SUBSCRIBE" in upstream.received

                await until(heard, 10, "a client message from an edge reached the upstream")
                text = (await proc.get("/metrics"))[1]
                stalls = metric(
                    text, "veylor_endpoint_stalls_total", endpoint="cluster", reason="read_loop_ended"
                )
                assert stalls == 1 and metric(text, "veylor_endpoint_up", endpoint="cluster") == 1
            finally:
                await edge_nc.close()


async def test_a_connection_that_stops_reading_is_reported_and_made_again(tmp_path: Path) -> None:
    """Issue 22: a connection on which nothing arrives any more (here a relay between the
    edge and NATS that stops forwarding and closes nothing, as a dead route does) was
    "connected" for minutes: nats-py pings every 2 minutes. With stall_timeout 2, Veylor
    pings after 1 s without a message, and with no PONG by 2 s says so (/readyz 503,
    veylor_source_up 0), closes it and connects again; it is up again once NATS can be
    reached."""
    async with nats_cluster(tmp_path / "nats") as cluster, Proxy(cluster.nodes[0].port) as proxy:
        port = free_port()
        async with running(Proc(tmp_path, "edge", edge(proxy.url, port, ", stall_timeout: 2"))) as proc:
            await until(lambda: _ready(proc, 200), 15, "the edge ready")
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            pub = await nats.connect(cluster.urls[0])
            try:
                proxy.freeze()
                took = await until(lambda: _ready(proc, 503), 10, "/readyz 503 after the connection stalled")
                print(f"/readyz said 503 {took:.1f}s after the connection stalled")
                text = (await proc.get("/metrics"))[1]
                assert metric(text, "veylor_source_up", source="ticker") == 0
                assert metric(text, "veylor_source_stalls_total", source="ticker", reason="no_pong") >= 1
                assert "no message and no PONG for 2s" in proc.proc.log
                proxy.thaw()
                await until(lambda: _ready(proc, 200), 20, "/readyz 200 once NATS can be reached again")
                got: list[Any] = []

                async def flowing() -> bool:
                    await pub.publish(SUBJECT, b"again", headers={"Veylor-Type": "text"})
                    got.extend(await recv_all(client, 1, 0.2))
                    return "again" in got

                await until(flowing, 10, "messages reach the client again")
            finally:
                await pub.close()
                await client.close()


async def _ready(proc: Proc, status: int) -> bool:
    return (await proc.get("/readyz"))[0] == status


async def test_a_stored_message_the_library_cannot_parse_is_skipped_not_read_for_ever(
    tmp_path: Path,
) -> None:
    """The same message stored in a JetStream stream: every new connection of an edge
    reading the stream got it first and its read loop ended again. Three times in a row at
    one position, the message after it is skipped, counted as missed, and the stream is
    read on."""
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        url = cluster.urls[0]
        admin = await nats.connect(url)
        js = admin.jetstream()
        await js.add_stream(name="TICKER", subjects=[SUBJECT])

        async def publish(n: int) -> None:  # (as a core does)
            headers = {"Veylor-Type": "text", "Veylor-Node": "core1", "Veylor-Seq": str(n + 1)}
            await js.publish(SUBJECT, f"m{n}".encode(), headers=headers)

        await publish(0)
        port = free_port()
        try:
            async with veylor_inprocess(tmp_path, edge(url, port, ", stream: TICKER")) as rt:
                src = rt.sources["ticker"]
                await eventually(lambda: src.position == 1, 10)
                client = await ws_client(f"ws://127.0.0.1:{port}/")
                await asyncio.sleep(0.3)
                await raw_publish(cluster.nodes[0].port, SUBJECT, BAD_STATUS, b"x")  # stream sequence 2
                for n in range(1, 4):
                    await publish(n)
                got = await recv_all(client, 3, 30)
                await client.close()
                assert got == ["m1", "m2", "m3"], f"{got}; the edge: {src.status()}"
                assert src.stats.stalled_read_loop == 3 and src.stats.gaps == 1 and src.position == 5
        finally:
            await admin.close()


# -- NATS servers that are not what they should be -----------------------------------------------


class FakeServer:
    """A TCP listener on 127.0.0.1 that plays a broken NATS server: ``greeting`` is
    what it sends at once (nothing: a server that never answers), ``reply`` what it
    sends for each line it reads."""

    def __init__(self, greeting: bytes = b"", reply: bytes = b"") -> None:
        self.greeting = greeting
        self.reply = reply
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        with contextlib.suppress(Exception):
            writer.write(self.greeting)
            await writer.drain()
            while await reader.readline():
                if self.reply:
                    writer.write(self.reply)
                    await writer.drain()


BROKEN_SERVERS = {
    "silent": (b"", b""),
    "http": (b"", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
    "info-then-garbage": (b'INFO {"server_id":"x","max_payload":1048576}\r\n', b"WAT\r\n"),
}


@pytest.mark.slow  # (each waits out a broken server's timeouts: about 7 s)
@pytest.mark.parametrize("kind", list(BROKEN_SERVERS))
async def test_a_broken_nats_server_never_stops_veylor_starting_or_stopping_and_is_reported(
    tmp_path: Path, upstream: Upstream, kind: str
) -> None:
    """A NATS endpoint and a NATS source whose only server accepts TCP and then never
    answers, answers HTTP (a monitoring port), or sends a valid INFO then garbage: Veylor
    starts (its other parts work), /readyz says which are not connected, /graph says
    why, the log does not repeat itself every second, no connection is claimed that
    never completed, and SIGTERM stops it within docs/operations.md's 5 s (plus slack for a
    loaded machine)."""
    greeting, reply = BROKEN_SERVERS[kind]
    async with FakeServer(greeting, reply) as fake:
        port = free_port()
        config = f"""
        sources:
          feed: {{url: "{upstream.url}"}}
          ticker: {{nats: {{servers: ["{fake.url}"], subject: {SUBJECT}}}}}
        endpoints:
          cluster: {{nats: {{servers: ["{fake.url}"], subject: veylor.out}}}}
          local: {{websocket: {{port: {port}}}}}
        routes:
          out: {{from: feed, to: [cluster, local]}}
          in: {{from: ticker, to: local}}
        """
        proc = Proc(tmp_path, "veylor", config)
        try:
            await proc.start(timeout=20)
            await upstream.wait_connected()
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            await asyncio.sleep(0.3)
            await upstream.send("local clients are served")
            assert await asyncio.wait_for(client.recv(), 10) == "local clients are served"
            await client.close()
            mark = len(proc.proc.lines)
            await asyncio.sleep(6)  # (longer than a connect timeout)
            assert fake.accepted >= 2
            problems = []
            status, text = await proc.get("/readyz")
            if not (status == 503 and "ticker" in text and "cluster" in text):
                problems.append(f"/readyz {status}: {text}")
            graph = await proc.graph()
            src, ep = graph["sources"]["ticker"], graph["endpoints"]["cluster"]
            for who, part in (("source", src), ("endpoint", ep)):
                if part["state"] == "connected" or not part.get("last_error"):
                    problems.append(f"{who} {part['state']!r}, last_error {part.get('last_error')!r}")
            said = [line for line in proc.proc.lines[mark:] if "disconnected from NATS" in line]
            if len(said) > 9:  # (with backoff: a few; "errors logged once a minute with a count")
                problems.append(f"{len(said)} 'disconnected' lines in 6 s, e.g. {said[-1]!r}")
            claimed = [line for line in proc.proc.lines if "connected to NATS at" in line]
            if claimed:
                problems.append(f"claims a connection that never completed: {claimed[0]!r}")
            t0 = time.monotonic()
            proc.proc.signal()
            code = await proc.proc.wait(timeout=15)
            took = time.monotonic() - t0
            if code != 0 or took > 7:
                problems.append(f"exit {code} after {took:.1f}s")
            assert not problems, "; ".join(problems)
        finally:
            await proc.stop()


@pytest.mark.parametrize("kind", ["url-the-library-refuses", "info-then-garbage"])
async def test_a_connection_that_keeps_failing_is_logged_once_then_summarized(
    kind: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22: a NATS connection whose attempts failed (an error the client library
    gives up on, such as a URL it refuses) logged a warning at every attempt, against
    docs/scale-out.md's once a minute. Now, as for a WebSocket source: the first failure at
    WARNING, the others at DEBUG, a summary at INFO once per interval (here 1 s, and
    attempts every 0.1 s)."""
    from veylor.config.common import Reconnect
    from veylor.config.natsspec import NatsLink
    from veylor.runtime.nats import connection

    monkeypatch.setattr(connection, "FIRST_CONNECT", Reconnect(0.05, 0.1, 2.0, 0.0, 0))
    monkeypatch.setattr(connection, "FAILURE_SUMMARY", 1.0, raising=False)
    caplog.set_level(logging.DEBUG, logger="veylor.nats")
    async with contextlib.AsyncExitStack() as stack:
        if kind == "url-the-library-refuses":  # (check refuses it now: this is the library's view)
            url = "nats://127.0.0.1:99999"
        else:
            url = (await stack.enter_async_context(FakeServer(*BROKEN_SERVERS[kind]))).url

        async def up() -> None:
            raise AssertionError("connected")

        conn = connection.Connection(NatsLink((url,)), "source t", "veylor source t", up, lambda: None)
        conn.start()
        try:
            await asyncio.sleep(3.5)
        finally:
            await conn.close()
    assert conn.failures >= 10, conn.failures
    records = [r for r in caplog.records if r.name == "veylor.nats"]
    loud = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    summaries = [
        r.getMessage()
        for r in records
        if r.levelno == logging.INFO and "still cannot connect" in r.getMessage()
    ]
    each = [r for r in records if r.levelno == logging.DEBUG and "failed" in r.getMessage()]
    assert len(loud) == 1 and "cannot connect to NATS" in loud[0], (
        f"{len(loud)} warnings for {conn.failures} attempts"
    )
    assert 2 <= len(summaries) <= 4 and "attempts failed since" in summaries[0], summaries
    assert len(each) == conn.failures - 1


# -- Secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["Pl4in-s3cret-pw", "s3cr/et-Tail-9f2c", "s3cr#et-Tail-9f2c"],
    ids=["plain", "slash", "hash"],
)
async def test_no_part_of_a_server_password_reaches_graph_check_or_the_log(
    tmp_path: Path, upstream: Upstream, password: str
) -> None:
    """A password in a NATS server URL, as an operator writes it (generated passwords
    have / and #; ? too): redact_url and url_secrets split the URL with urlsplit, for which
    the userinfo ends at the first /, # or ?, so the rest of the password is taken for a
    path, a fragment or a query -- and shown in /graph, `veylor check --json` and every
    log line that names the server (the loader's NATS URL check does not refuse it)."""
    from conftest import run_veylor

    node = Node("auth", free_port(), 0, [], None)
    node.args_extra = ["--user", "veylor", "--pass", password]
    await node.start(tmp_path)
    url = f"nats://veylor:{password}@127.0.0.1:{node.port}"
    port = free_port()
    config = f"""
    sources:
      feed: {{url: "{upstream.url}"}}
      ticker: {{nats: {{servers: ["{url}"], subject: {SUBJECT}}}}}
    endpoints:
      cluster: {{nats: {{servers: ["{url}"], subject: veylor.out}}}}
      local: {{websocket: {{port: {port}}}}}
    routes:
      out: {{from: feed, to: [cluster, local]}}
      in: {{from: ticker, to: local}}
    """
    proc = Proc(tmp_path, "veylor", config, "-vv")
    tail = password[5:]  # (what follows the first special character, or most of a plain one)
    if any(c in password for c in "/#?"):
        # Such a URL is refused, with the fix said (percent-encode), and without the password.
        checked = run_veylor("check", "--json", "-c", str(proc.path), cwd=proc.dir)
        shown = checked.stdout + checked.stderr
        checked = run_veylor("check", "-c", str(proc.path), cwd=proc.dir)
        shown += checked.stdout + checked.stderr
        await node.kill()
        assert checked.returncode == 1 and "percent-encode" in shown, shown
        assert tail not in shown and password[:4] not in shown, shown
        return
    try:
        await proc.start(timeout=20)
        await asyncio.sleep(2)
        seen = {
            "/graph": (await proc.get("/graph"))[1],
            "/readyz": (await proc.get("/readyz"))[1],
            "/metrics": (await proc.get("/metrics"))[1],
        }
        checked = run_veylor("check", "--json", "-c", str(proc.path), cwd=proc.dir)
        seen["check --json"] = checked.stdout + checked.stderr
        checked = run_veylor("check", "-c", str(proc.path), cwd=proc.dir)
        seen["check"] = checked.stdout + checked.stderr
        proc.proc.signal()
        await proc.proc.wait(timeout=15)
        seen["log"] = proc.proc.log + proc.proc.stdout
        leaks = {
            where: text[max(0, text.find(tail) - 60) : text.find(tail) + len(tail) + 10]
            for where, text in seen.items()
            if tail in text
        }
        assert not leaks, f"the password's tail {tail!r} is shown in: {leaks}"
    finally:
        await proc.stop()
        await node.kill()


async def test_no_credentials_seed_or_jwt_reaches_graph_check_or_the_log(
    tmp_path: Path, upstream: Upstream
) -> None:
    """A .creds file (user JWT and NKey seed): /graph, /metrics, `veylor check [--json]`
    and the log at -vv name the file, never its contents -- connected, and refused."""
    from conftest import run_veylor
    from natscreds import Authority

    auth = Authority(tmp_path / "auth")
    node = Node("auth", free_port(), 0, [], None)
    node.args_extra = ["-c", str(auth.server_config())]
    await node.start(tmp_path)
    good, good_seed = auth.user("edge")
    bad, bad_seed = Authority(tmp_path / "other").user("mallory")
    jwts = [p.read_text().split("\n")[1] for p in (good, bad)]
    url = f"nats://127.0.0.1:{node.port}"
    config = f"""
    sources:
      feed: {{url: "{upstream.url}"}}
      ticker: {{nats: {{servers: ["{url}"], subject: {SUBJECT}, credentials: {good}}}}}
    endpoints:
      cluster: {{nats: {{servers: ["{url}"], subject: veylor.out, credentials: {bad}}}}}
      local: {{websocket: {{port: {free_port()}}}}}
    routes:
      out: {{from: feed, to: [cluster, local]}}
      in: {{from: ticker, to: local}}
    """
    proc = Proc(tmp_path, "veylor", config, "-vv")
    try:
        await proc.start(timeout=20)
        await eventually(lambda: "Authorization Violation" in proc.proc.log, 15)
        await eventually(lambda: "source ticker: connected to NATS" in proc.proc.log, 15)
        seen = {path: (await proc.get(path))[1] for path in ("/graph", "/metrics", "/readyz")}
        for flags in (("check", "--json"), ("check",)):
            out = run_veylor(*flags, "-c", str(proc.path), cwd=proc.dir)
            seen[" ".join(flags)] = out.stdout + out.stderr
        proc.proc.signal()
        await proc.proc.wait(timeout=15)
        seen["log"] = proc.proc.log + proc.proc.stdout
        for secret in (good_seed, bad_seed, *jwts):
            leaks = [where for where, text in seen.items() if secret in text]
            assert not leaks, f"{secret[:8]}... is shown in {leaks}"
    finally:
        await proc.stop()
        await node.kill()


# -- Reloads and shutdown --------------------------------------------------------------------------


async def test_a_reload_that_moves_position_file_keeps_the_position_in_the_new_file(
    tmp_path: Path, upstream: Upstream
) -> None:
    """An edge reading a stream; reloads change its `replay` and move its
    `position_file` (one.pos -> two.pos -> one.pos -> two.pos). Its client sees each
    message once, in order. But on the last move, the position is written to the *old*
    file (stop() saves with the old spec, and marks it saved), so two.pos keeps the
    position of the first move: the edge restarted later resumes there and its clients
    get everything since again."""
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        url = cluster.urls[0]
        async with veylor_inprocess(tmp_path, core(upstream, url, ", stream: TICKER"), "core.yaml") as rt:
            ep = await ready_core(rt, upstream)
            port = free_port()
            one = edge(url, port, ", stream: TICKER, replay: last, position_file: one.pos")
            two = edge(url, port, ", stream: TICKER, replay: 50, position_file: two.pos")
            proc = Proc(tmp_path, "edge", one)
            async with running(proc):
                await eventually(lambda: "reading JetStream stream" in proc.proc.log, 15)
                client = await ws_client(f"ws://127.0.0.1:{port}/")
                await asyncio.sleep(0.3)
                got: list[str] = []
                n = 0
                for round_, config in enumerate((two, one, two)):
                    for _ in range(40):
                        await upstream.send(f"m{n}")
                        n += 1
                    got += await recv_all(client, 40, 15)
                    proc.write(config)
                    proc.proc.signal(signal.SIGHUP)
                    await proc.proc.wait_for("reading JetStream stream", 15, count=round_ + 2)
                await client.close()
                assert got == [f"m{i}" for i in range(n)]
            assert ep.status()["acked"] == n
            # The edge restarts (same configuration: two.pos): it should resume after m{n-1}.
            proc.proc = VeylorProcess("-c", str(proc.path), "--no-watch", cwd=proc.dir)
            async with running(proc):
                await eventually(lambda: "reading JetStream stream" in proc.proc.log, 15)
                client = await ws_client(f"ws://127.0.0.1:{port}/")
                await asyncio.sleep(0.3)
                await upstream.send(f"m{n}")
                assert await recv_all(client, 1, 10) == [f"m{n}"]
                await client.close()
                src = (await proc.graph())["sources"]["ticker"]
                assert src["resumed_from"] == n + 1 and src["messages_in"] == 1, (
                    f"the restarted edge resumed from {src['resumed_from']} (two.pos: "
                    f"{(proc.dir / 'two.pos').read_text()!r}, after m{n - 1}, sequence {n}) and delivered "
                    f"{src['messages_in'] - 1} messages again"
                )


@pytest.mark.slow  # a load test: floods, or hundreds of clients (the quick loop leaves it to the full suite)
async def test_shutdown_while_publishing_into_a_stream_is_bounded(tmp_path: Path, upstream: Upstream) -> None:
    """SIGTERM while the core publishes a burst into a stream (acknowledgements in
    flight): it exits within docs/operations.md's 5 s (plus slack), with what it could not
    publish counted in its log, and what reached the stream is in order, without
    repeats."""
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        url = cluster.urls[0]
        config = core(upstream, url, ", stream: TICKER", extra="client_buffer: 64MiB")
        async with running(Proc(tmp_path, "core", config)) as proc:
            await upstream.wait_connected()
            await eventually(lambda: "publishing into JetStream stream" in proc.proc.log, 15)
            n = 10_000
            await asyncio.gather(*(upstream.send(f"m{i:05d}" + "p" * 200) for i in range(n)))
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            proc.proc.signal()
            code = await proc.proc.wait(timeout=15)
            took = time.monotonic() - t0
            assert code == 0 and took < 7, f"exit {code} after {took:.1f}s"
        held = await stream_messages(url)
        numbers = [int(m[1:6]) for m in held]
        assert numbers == list(range(len(numbers))), "the stream holds repeats or is out of order"
