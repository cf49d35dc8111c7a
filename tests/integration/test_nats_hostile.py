"""The NATS kinds against what a faulty or hostile party does: anyone who may publish on
the subjects (bad bytes, wrong headers, huge messages, floods, a thousand subjects), a
NATS that is down at start or goes away, and secrets in server URLs. Each case: only the
bad message is lost, it is counted, and everything else goes on."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from pathlib import Path

import nats
import pytest
from helpers import Upstream, VeylorProcess, eventually, free_port, veylor_inprocess, ws_client
from natscluster import Node, nats_cluster, needs_nats

from veylor.observe.state import snapshot as state_view

pytestmark = [needs_nats]

SUBJECT = "veylor.ticker"


def edge(url: str, port: int, subject: str = SUBJECT, extra: str = "") -> str:
    return f"""
    sources:
      ticker:
        nats: {{servers: ["{url}"], subject: "{subject}"{extra}}}
        max_message_size: 1KiB
    endpoints:
      local: {{websocket: {{port: {port}}}}}
    routes:
      serve: {{from: ticker, to: local}}
    """


async def test_bad_messages_on_the_subject_are_dropped_and_counted_and_the_rest_flows(tmp_path: Path) -> None:
    async with nats_cluster(tmp_path / "nats") as cluster:
        port = free_port()
        async with veylor_inprocess(tmp_path, edge(cluster.urls[0], port)) as rt:
            src = rt.sources["ticker"]
            await eventually(lambda: src.status()["state"] == "connected", 10)
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            attacker = await nats.connect(cluster.urls[0])
            try:
                pub = attacker.publish
                await pub(SUBJECT, b"\xff\xfe not utf-8", headers={"Veylor-Type": "text"})
                await pub(SUBJECT, b"x" * 2000, headers={"Veylor-Type": "text"})  # over max_message_size
                await pub(SUBJECT, b"seq?", headers={"Veylor-Type": "text", "Veylor-Seq": "abc"})
                await pub(SUBJECT, b"\xff\x00", headers={"Veylor-Type": "nonsense"})
                await pub(SUBJECT, b"plain text, no headers")
                await pub(SUBJECT, b"\x80\x81 raw bytes, no headers")
                await pub(SUBJECT, b"last", headers={"Veylor-Type": "text"})
                await attacker.flush()
                got = [await asyncio.wait_for(client.recv(), 5) for _ in range(5)]
                # Invalid text and the oversized message are dropped and counted; a bad
                # sequence number is ignored; a message of a type Veylor does not write,
                # or with no headers (not from a Veylor), is text if it reads as UTF-8.
                assert got == [
                    "seq?",
                    b"\xff\x00",
                    "plain text, no headers",
                    b"\x80\x81 raw bytes, no headers",
                    "last",
                ]
                assert src.stats.invalid_utf8 == 1 and src.stats.oversize == 1
                assert src.stats.gaps == 0 and src.state == "connected"
            finally:
                await attacker.close()
                await client.close()


async def test_sequence_numbers_gaps_restarts_duplicates_and_a_bound_on_subjects(tmp_path: Path) -> None:
    from veylor.runtime.nats.source import MAX_SUBJECTS_TRACKED

    async with nats_cluster(tmp_path / "nats") as cluster:
        port = free_port()
        config = edge(cluster.urls[0], port, "veylor.>", ", upstream_subject: up.x")
        async with veylor_inprocess(tmp_path, config) as rt:
            src = rt.sources["ticker"]
            await eventually(lambda: src.status()["state"] == "connected", 10)
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            pub = await nats.connect(cluster.urls[0])
            try:

                async def send(subject: str, node: str, seq: int) -> None:
                    h = {"Veylor-Type": "text", "Veylor-Node": node, "Veylor-Seq": str(seq)}
                    await pub.publish(subject, f"{node}{seq}".encode(), headers=h)

                sent = (("A", 1), ("A", 2), ("A", 5), ("B", 1), ("B", 2), ("B", 3), ("B", 3), ("B", 4))
                for node, seq in sent:
                    await send("veylor.a", node, seq)
                await send("veylor.b", "A", 7)  # another subject: its own sequence
                await pub.flush()
                got = [await asyncio.wait_for(client.recv(), 5) for _ in range(9)]
                # Everything is delivered, in order; what was missed is counted, not invented.
                assert got == ["A1", "A2", "A5", "B1", "B2", "B3", "B3", "B4", "A7"]
                assert src.stats.gaps == 2  # A3, A4
                assert src.stats.publisher_changes == 1  # B took over from A (three in a row): not a gap
                assert src.stats.out_of_order == 1  # B3 twice
                # A forged jump (here with no node id at all) is not followed, not 10**18 lost.
                for seq in ("1", "999999999999999999"):
                    await pub.publish("veylor.c", b"c", headers={"Veylor-Type": "text", "Veylor-Seq": seq})
                await pub.flush()
                await eventually(lambda: src.stats.messages_in == 11, 5)
                assert src.stats.gaps == 2 and src.stats.publisher_changes == 1
                # A thousand of everything: what a source remembers per subject is bounded.
                # (The client goes first: one that reads nothing would hold the edge for
                # its stall_timeout, 10 s, once 10,500 messages filled its buffers.)
                await client.close()
                for i in range(MAX_SUBJECTS_TRACKED + 500):
                    await send(f"veylor.s{i}", "N", 1)
                await pub.flush()
                await eventually(lambda: src.stats.messages_in >= 11 + MAX_SUBJECTS_TRACKED + 500, 20)
                assert len(src.sequences) <= MAX_SUBJECTS_TRACKED
            finally:
                await pub.close()
                await client.close()


def core(upstream: Upstream, url: str, policy: str = "true", buffer: str = "4MiB") -> str:
    return f"""
    sources:
      feed: {{url: "{upstream.url}"}}
    endpoints:
      cluster:
        nats: {{servers: ["{url}"], subject: {SUBJECT}}}
        client_buffer: {buffer}
        max_message_size: 1KiB
    routes:
      out: {{from: feed, to: cluster, upstream: {policy}}}
    """


async def test_what_anyone_publishes_to_the_upstream_subject_goes_through_the_cores_policy(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with nats_cluster(tmp_path / "nats") as cluster:
        policy = "{allow: [{json: {path: op, in: [subscribe]}}], rate: 5, burst: 5}"
        async with veylor_inprocess(tmp_path, core(upstream, cluster.urls[0], policy)) as rt:
            ep = rt.endpoints["cluster"]
            await upstream.wait_connected()
            await eventually(lambda: ep.status()["state"] == "connected", 10)
            await asyncio.sleep(0.2)  # (its subscription reaches the server)
            attacker = await nats.connect(cluster.urls[0])
            up = "_VEYLOR.up." + SUBJECT
            try:
                await attacker.publish(up, b"x" * 2000, headers={"Veylor-Type": "text"})
                await attacker.publish(up, b'{"op":"subscribe"}\xff', headers={"Veylor-Type": "text"})
                await attacker.publish(up, b'{"op":"unsubscribe"}', headers={"Veylor-Type": "text"})
                for _ in range(50):
                    await attacker.publish(up, b'{"op":"subscribe"}', headers={"Veylor-Type": "text"})
                await attacker.flush()
                await eventually(lambda: ep.stats.received >= 51, 10, what="every message taken")
                await asyncio.sleep(0.3)
                # Only allowed messages, at the route's rate, reach the upstream.
                assert upstream.received and all(m == '{"op":"subscribe"}' for m in upstream.received)
                assert len(upstream.received) <= 7, len(upstream.received)
                assert ep.stats.bad_frames == 1  # the oversized one
                assert ep.stats.invalid_utf8 == 1
                assert ep.stats.upstream_denied == 1
                assert ep.stats.upstream_limited >= 43
                assert len(upstream.connections) == 1  # the shared upstream connection stays
            finally:
                await attacker.close()


class Gate:
    """A TCP relay to a NATS server on 127.0.0.1 that can be shut (connections refused,
    those open cut) and opened again: NATS as the core sees it, down and back."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.links: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def shut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in self.links:
            w.transport.abort()
        self.links.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection("127.0.0.1", self.target)
        self.links += [writer, w2]

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except Exception:
                pass
            finally:
                w.transport.abort()

        await asyncio.gather(pipe(reader, w2), pipe(r2, writer))


async def test_nats_down_at_start_messages_wait_bounded_then_go_in_order(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with nats_cluster(tmp_path / "nats") as cluster:
        gate = Gate(cluster.nodes[0].port)
        async with veylor_inprocess(tmp_path, core(upstream, gate.url, buffer="2KiB")) as rt:
            ep = rt.endpoints["cluster"]
            await upstream.wait_connected()
            assert ep.status()["state"] != "connected"
            listener = await nats.connect(cluster.urls[0])
            sub = await listener.subscribe(SUBJECT)
            await listener.flush()
            for i in range(100):
                await upstream.send(json.dumps({"n": i, "pad": "x" * 80}))
            await eventually(lambda: ep.seq == 100, 5)
            waiting = len(ep.outbox.items)
            # What does not fit in client_buffer is dropped and counted, never blocking.
            assert 5 <= waiting < 30 and ep.stats.dropped == 100 - waiting
            assert state_view(rt)["endpoints"]["cluster"]["dropped"] == 100 - waiting
            await gate.open()
            got = []
            for _ in range(waiting):
                msg = await sub.next_msg(timeout=10)
                got.append((int(msg.headers["Veylor-Seq"]), json.loads(msg.data)["n"]))
            # The messages that waited go, in order, numbered as they came.
            assert got == [(i + 1, i) for i in range(waiting)]
            await eventually(lambda: ep.status()["state"] == "connected", 5)
            # NATS goes away again: the core's fan-out never waits for it.
            await gate.shut()
            await eventually(lambda: ep.status()["state"] != "connected", 10)
            for i in range(100, 110):
                await upstream.send(json.dumps({"n": i}))
            await eventually(lambda: ep.seq == 110, 5)
            await gate.open()
            seqs = []
            for _ in range(10):
                msg = await sub.next_msg(timeout=15)
                seqs.append(int(msg.headers["Veylor-Seq"]))
            assert seqs == list(range(101, 111))
            await listener.close()


async def test_no_secret_of_a_server_url_reaches_the_log_at_any_level(
    tmp_path: Path, upstream: Upstream
) -> None:
    password = "n4ts-s3cret-passw0rd"
    node = Node("auth", free_port(), 0, [], None)
    node.args_extra = ["--user", "veylor", "--pass", password]
    await node.start(tmp_path)
    url = f"nats://veylor:{password}@127.0.0.1:{node.port}"
    (tmp_path / "config.yaml").write_text(core(upstream, url).replace("\n    ", "\n"))
    proc = await VeylorProcess("-vv", "-c", str(tmp_path / "config.yaml"), "--no-watch").start()
    try:
        await proc.wait_for("connected to NATS", 15)
        await node.kill()  # disconnected, reconnecting...
        await proc.wait_for("disconnected from NATS", 10)
        await asyncio.sleep(2.5)  # (a few failed attempts, logged)
        await node.start(tmp_path)
        await proc.wait_for("reconnected to NATS", 20)
        proc.signal()
        assert await proc.wait() == 0
        assert password not in proc.log + proc.stdout
    finally:
        await proc.stop()
        await node.kill()


async def test_shutdown_is_bounded_while_nats_is_unreachable(tmp_path: Path, upstream: Upstream) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    (tmp_path / "config.yaml").write_text(core(upstream, dead).replace("\n    ", "\n"))
    proc = await VeylorProcess("-c", str(tmp_path / "config.yaml"), "--no-watch").start()
    try:
        await upstream.wait_connected()
        await upstream.send("one that waits")
        await asyncio.sleep(1.5)
        start = asyncio.get_running_loop().time()
        proc.signal()
        assert await proc.wait(timeout=10) == 0
        assert asyncio.get_running_loop().time() - start < 8
        assert "not published to NATS before it closed" in proc.log
    finally:
        await proc.stop()


async def test_a_stream_that_cannot_be_used_is_said_and_messages_wait_bounded(
    tmp_path: Path, upstream: Upstream
) -> None:
    # JetStream off on the server: the endpoint says so; messages wait (bounded), counted.
    async with nats_cluster(tmp_path / "plain") as cluster:
        config = core(upstream, cluster.urls[0], buffer="4KiB").replace(
            f"subject: {SUBJECT}}}", f"subject: {SUBJECT}, stream: TICKER}}"
        )
        async with veylor_inprocess(tmp_path, config) as rt:
            ep = rt.endpoints["cluster"]
            await upstream.wait_connected()
            await eventually(lambda: ep.status()["state"] == "connected", 10)
            await eventually(lambda: "JetStream is not enabled" in (ep.status()["last_failure"] or ""), 15)
            for i in range(200):
                await upstream.send(json.dumps({"n": i, "pad": "y" * 100}))
            await eventually(lambda: ep.seq == 200, 5)
            assert not ep.status()["stream_ready"]
            assert ep.stats.dropped > 100 and len(ep.outbox.items) + ep.stats.dropped == 200
    # A stream of that name exists and captures another subject: said, never changed.
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        admin = await nats.connect(cluster.urls[0])
        js = admin.jetstream()
        await js.add_stream(name="TICKER", subjects=["other.subject"])
        config = core(upstream, cluster.urls[0]).replace(
            f"subject: {SUBJECT}}}", f"subject: {SUBJECT}, stream: TICKER}}"
        )
        async with veylor_inprocess(tmp_path, config) as rt:
            ep = rt.endpoints["cluster"]
            await eventually(
                lambda: "does not capture veylor.ticker" in (ep.status()["last_failure"] or ""), 15
            )
            info = await js.stream_info("TICKER")
            assert info.config.subjects == ["other.subject"]
        await admin.close()


async def test_a_damaged_position_file_starts_as_replay_says(
    tmp_path: Path, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    async with nats_cluster(tmp_path / "js", jetstream=True) as cluster:
        url = cluster.urls[0]
        config = core(upstream, url).replace(f"subject: {SUBJECT}}}", f"subject: {SUBJECT}, stream: TICKER}}")
        async with veylor_inprocess(tmp_path, config, "core.yaml") as core_rt:
            await upstream.wait_connected()
            for i in range(20):
                await upstream.send(f"m{i}")
            ep = core_rt.endpoints["cluster"]
            await eventually(lambda: ep.status()["acked"] == 20, 10)
            port = free_port()
            for garbage, why in (
                ("\x00\xff garbage", "does not hold a position"),
                ("OTHER 5\n", "is for stream OTHER"),
            ):
                (tmp_path / "edge.pos").write_bytes(garbage.encode("latin-1"))
                text = edge(url, port, extra=", stream: TICKER, replay: 3, position_file: edge.pos")
                async with veylor_inprocess(tmp_path, text, "edge.yaml") as rt:
                    src = rt.sources["ticker"]
                    await eventually(lambda src=src: src.position == 20, 10)
                    assert src.resumed_from == 18  # the last 3 messages, as replay says
                assert why in caplog.text
                assert (tmp_path / "edge.pos").read_text() == "TICKER 20\n"


async def test_credentials_files_connect_a_wrong_one_is_refused_and_no_seed_is_logged(
    tmp_path: Path, upstream: Upstream
) -> None:
    from natscreds import Authority

    auth = Authority(tmp_path / "auth")
    node = Node("auth", free_port(), 0, [], None)
    node.args_extra = ["-c", str(auth.server_config())]
    await node.start(tmp_path)
    core_creds, core_seed = auth.user("core")
    stranger = Authority(tmp_path / "other")  # another operator's user: not trusted here
    bad_creds, bad_seed = stranger.user("mallory")
    url = f"nats://127.0.0.1:{node.port}"
    config = core(upstream, url).replace(
        f"subject: {SUBJECT}}}", f"subject: {SUBJECT}, credentials: {core_creds}}}"
    )
    path = tmp_path / "config.yaml"
    path.write_text(config.replace("\n    ", "\n"))
    proc = await VeylorProcess("-vv", "-c", str(path), "--no-watch").start()
    try:
        await proc.wait_for("connected to NATS", 15)
        # A reload with a user the server does not know: that endpoint reconnects, is
        # refused, and says why; the seed is never shown.
        path.write_text(config.replace(str(core_creds), str(bad_creds)).replace("\n    ", "\n"))
        proc.signal(signal.SIGHUP)
        await proc.wait_for("Authorization Violation", 15)
        proc.signal()
        assert await proc.wait() == 0
        for secret in (core_seed, bad_seed):
            assert secret not in proc.log + proc.stdout
    finally:
        await proc.stop()
        await node.kill()


async def test_publishing_never_holds_up_local_clients(tmp_path: Path, upstream: Upstream) -> None:
    # NATS unreachable: the core's local clients get every message all the same, and what
    # cannot wait for NATS is counted.
    port = free_port()
    config = f"""
    sources:
      feed: {{url: "{upstream.url}"}}
    endpoints:
      cluster:
        nats: {{servers: ["nats://127.0.0.1:{free_port()}"], subject: {SUBJECT}}}
        client_buffer: 16KiB
      local: {{websocket: {{port: {port}}}}}
    routes:
      both: {{from: feed, to: [cluster, local]}}
    """
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        await eventually(lambda: len(rt.endpoints["local"].clients) == 1, 5)
        n = 2000
        for i in range(n):
            await upstream.send(f"m{i}")
        got = [await asyncio.wait_for(client.recv(), 5) for _ in range(n)]
        assert got == [f"m{i}" for i in range(n)]
        ep = rt.endpoints["cluster"]
        assert ep.seq == n and ep.stats.dropped == n - len(ep.outbox.items) > 1500
        assert state_view(rt)["endpoints"]["cluster"]["state"] != "connected"
        await client.close()


async def test_tls_to_nats_checks_the_servers_certificate(tmp_path: Path, upstream: Upstream) -> None:
    from helpers import make_ca, make_cert

    ca = make_ca(tmp_path / "pki")
    cert, key = make_cert(tmp_path / "pki", ca, "nats")
    other_ca = make_ca(tmp_path / "pki", "other")
    node = Node("tls", free_port(), 0, [], None)
    node.args_extra = ["--tls", "--tlscert", str(cert), "--tlskey", str(key)]
    await node.start(tmp_path)
    try:
        url = f"tls://127.0.0.1:{node.port}"
        good = core(upstream, url).replace(
            f"subject: {SUBJECT}}}", f"subject: {SUBJECT}, tls: {{ca_file: {ca}}}}}"
        )
        async with veylor_inprocess(tmp_path, good) as rt:
            await eventually(lambda: rt.endpoints["cluster"].status()["state"] == "connected", 10)
        wrong = good.replace(str(ca), str(other_ca))
        async with veylor_inprocess(tmp_path, wrong) as rt:
            ep = rt.endpoints["cluster"]
            await eventually(lambda: "CERTIFICATE_VERIFY_FAILED" in (ep.status().get("last_error") or ""), 10)
            assert ep.status()["state"] != "connected"
    finally:
        await node.kill()


async def test_a_backlog_is_published_in_slices_that_leave_the_loop_to_the_clients(
    tmp_path: Path, upstream: Upstream
) -> None:
    from veylor.runtime.nats.outbox import YIELD_EVERY

    async with nats_cluster(tmp_path / "nats") as cluster:
        gate = Gate(cluster.nodes[0].port)
        async with veylor_inprocess(tmp_path, core(upstream, gate.url, buffer="16MiB")) as rt:
            ep = rt.endpoints["cluster"]
            await upstream.wait_connected()
            n = 5000
            for i in range(n):
                await upstream.send(f"backlog {i}")
            await eventually(lambda: len(ep.outbox.items) == n, 10)
            seen = []

            async def watch() -> None:  # one sample per turn of the event loop
                while ep.outbox.items or not seen:
                    seen.append(len(ep.outbox.items))
                    await asyncio.sleep(0)
                seen.append(0)

            watcher = asyncio.create_task(watch())
            await gate.open()
            await asyncio.wait_for(watcher, 20)
            drops = [a - b for a, b in itertools.pairwise(seen) if a > b]
            # Published in slices of at most YIELD_EVERY between two turns: never the whole
            # backlog at once (5,000 publishes, about 40 ms, would hold every client).
            assert drops and max(drops) <= YIELD_EVERY <= 1000, max(drops)
            assert ep.stats.dropped == 0


async def test_a_queue_group_shares_the_messages_between_its_members(tmp_path: Path) -> None:
    async with nats_cluster(tmp_path / "nats") as cluster:
        url = cluster.urls[0]
        config = f"""
        sources:
          a: {{nats: {{servers: ["{url}"], subject: {SUBJECT}, queue: edges}}}}
          b: {{nats: {{servers: ["{url}"], subject: {SUBJECT}, queue: edges}}}}
        endpoints:
          local: {{websocket: {{port: {free_port()}}}}}
        routes:
          ra: {{from: a, to: local}}
          rb: {{from: b, to: local}}
        """
        async with veylor_inprocess(tmp_path, config) as rt:
            a, b = rt.sources["a"], rt.sources["b"]
            await eventually(lambda: a.state == b.state == "connected", 10)
            await asyncio.sleep(0.2)
            pub = await nats.connect(url)
            for i in range(400):
                await pub.publish(SUBJECT, f"m{i}".encode(), headers={"Veylor-Type": "text"})
            await pub.flush()
            await pub.close()
            await eventually(lambda: a.stats.messages_in + b.stats.messages_in == 400, 10)
            # Each message went to one member of the group, and both took their share.
            assert a.stats.messages_in > 0 and b.stats.messages_in > 0
