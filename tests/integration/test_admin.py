"""The admin endpoint of a real Veylor process: /metrics counts what really flowed,
/readyz follows the upstream, /graph matches the configuration and its clients,
POST /reload and `veylor reload` answer with the outcome (and the exit code ExecReload=
needs), no secret is served."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path

import aiohttp
import pytest
from conftest import run_veylor
from helpers import Upstream, VeylorProcess, eventually, free_port, veylor_inprocess, ws_client
from prometheus_client.parser import text_string_to_metric_families

SECRET = "hdr-secret-0123456789"
TOKEN = "tok-secret-9876543210"
RELOAD = {"X-Veylor-Reload": "1"}  # what `veylor reload` sends (no HTML form can)


class Admin:
    """A Veylor process with an admin endpoint, its upstream and its config directory."""

    def __init__(self, tmp_path) -> None:
        self.dir = tmp_path
        (tmp_path / "routes.d").mkdir()
        self.upstream = Upstream()
        self.port, self.admin = free_port(), free_port()
        self.veylor: VeylorProcess | None = None
        self.admin_settings = ""  # more of admin's settings, as YAML flow-mapping entries

    @property
    def main(self):
        return self.dir / "config.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"

    def config(self, extra: str = "") -> str:
        return textwrap.dedent(
            f"""
            admin: {{listen: "127.0.0.1:{self.admin}"{", " + self.admin_settings if self.admin_settings else ""}}}
            sources:
              up:
                url: "{self.upstream.url}?token={TOKEN}"
                headers: {{X-Api-Key: "{SECRET}"}}
                reconnect: {{initial_delay: 0.1, max_delay: 0.3}}
            endpoints:
              e: {{websocket: {{port: {self.port}, path: /e}}}}
              f: {{websocket: {{port: {self.port}, path: /f}}}}
            routes:
              r: {{from: up, to: e, upstream: true}}
              btc: {{from: up, to: f, filter: {{json: {{path: s, equals: BTC}}}}}}
            """
        ) + textwrap.dedent(extra)

    async def start(self, *args: str) -> VeylorProcess:
        await self.upstream.start()
        self.main.write_text(self.config())
        self.veylor = await VeylorProcess("-c", str(self.main), "--no-watch", *args).start()
        await self.upstream.wait_connected()
        return self.veylor

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
            s.get(self.url + path) as r,
        ):
            return r.status, await r.text()

    async def post(self, path: str) -> tuple[int, dict]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s,
            s.post(self.url + path, headers={"X-Veylor-Reload": "1"}) as r,
        ):
            return r.status, await r.json()

    async def metrics(self) -> dict[tuple[str, tuple], float]:
        status, text = await self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    async def close(self) -> None:
        if self.veylor is not None:
            await self.veylor.stop()
        await self.upstream.stop()


@pytest.fixture
async def admin(tmp_path):
    a = Admin(tmp_path)
    yield a
    await a.close()


def m(name: str, **labels: str) -> tuple[str, tuple]:
    return (name, tuple(sorted(labels.items())))


async def test_metrics_count_what_flowed(admin):
    await admin.start()
    e1 = await ws_client(f"ws://127.0.0.1:{admin.port}/e")
    e2 = await ws_client(f"ws://127.0.0.1:{admin.port}/e")
    f = await ws_client(f"ws://127.0.0.1:{admin.port}/f")
    messages = [json.dumps({"s": "BTC" if i % 4 == 0 else "ETH", "i": i}) for i in range(40)]
    for text in messages:
        await admin.upstream.send(text)
    for client in (e1, e2):
        assert [await asyncio.wait_for(client.recv(), 5) for _ in messages] == messages
    btc = [t for t in messages if '"BTC"' in t]
    assert [await asyncio.wait_for(f.recv(), 5) for _ in btc] == btc
    await e1.send("to the upstream")
    await eventually(lambda: admin.upstream.received == ["to the upstream"])

    got = await admin.metrics()
    assert got[m("veylor_source_up", source="up")] == 1
    assert got[m("veylor_source_messages_total", source="up")] == 40
    assert got[m("veylor_source_bytes_total", source="up")] == sum(len(t) for t in messages)
    assert got[m("veylor_source_connects_total", source="up")] == 1
    assert got[m("veylor_source_upstream_messages_total", source="up")] == 1
    assert got[m("veylor_edge_messages_total", source="up", route="r", endpoint="e")] == 40
    assert got[m("veylor_edge_messages_total", source="up", route="btc", endpoint="f")] == len(btc)
    assert got[m("veylor_route_filtered_total", route="btc")] == 40 - len(btc)
    assert got[m("veylor_route_filtered_total", route="r")] == 0
    assert got[m("veylor_endpoint_deliveries_total", endpoint="e")] == 80
    assert got[m("veylor_endpoint_deliveries_total", endpoint="f")] == len(btc)
    assert got[m("veylor_endpoint_clients", endpoint="e")] == 2
    assert got[m("veylor_endpoint_client_messages_total", endpoint="e", result="forwarded")] == 1
    assert got[m("veylor_endpoint_refused_total", endpoint="e", reason="max_clients")] == 0
    assert got[m("veylor_endpoint_slow_clients_total", endpoint="e", action="disconnect")] == 0
    assert got[m("veylor_config_reloads_total", result="ok")] == 0
    assert got[m("veylor_config_generation")] == 1
    assert any(name == "veylor_build_info" for name, _ in got)

    await e2.close()

    async def clients_now() -> float:
        return (await admin.metrics())[m("veylor_endpoint_clients", endpoint="e")]

    for _ in range(100):
        if await clients_now() == 1:
            break
        await asyncio.sleep(0.05)
    assert await clients_now() == 1
    await e1.close()
    await f.close()


async def test_readyz_follows_the_upstream_it_requires(admin):
    admin.admin_settings = "ready_requires: [up]"
    await admin.start()
    status, body = await admin.get("/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert (await admin.get("/healthz"))[0] == 200
    await admin.upstream.stop(abort=True)
    for _ in range(100):
        status, body = await admin.get("/readyz")
        if status == 503:
            break
        await asyncio.sleep(0.05)
    assert status == 503
    assert json.loads(body)["sources_not_connected"].keys() == {"up"}
    assert (await admin.get("/healthz"))[0] == 200  # alive, only not ready
    await admin.upstream.start()
    await admin.upstream.wait_connected()
    for _ in range(100):
        status, body = await admin.get("/readyz")
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200, body


async def test_graph_matches_the_configuration_and_lists_clients(admin):
    await admin.start()
    client = await ws_client(f"ws://127.0.0.1:{admin.port}/e")
    status, text = await admin.get("/graph")
    assert status == 200
    graph = json.loads(text)
    assert graph["schema"] == 1 and graph["config"]["generation"] == 1
    assert set(graph["sources"]) == {"up"} and graph["sources"]["up"]["state"] == "connected"
    assert set(graph["endpoints"]) == {"e", "f"} and set(graph["routes"]) == {"r", "btc"}
    assert graph["routes"]["btc"]["to"] == ["f"] and graph["routes"]["r"]["upstream"] is True
    assert {(x["source"], x["route"], x["endpoint"]) for x in graph["edges"]} == {
        ("up", "r", "e"),
        ("up", "btc", "f"),
    }
    (listed,) = graph["endpoints"]["e"]["client_list"]
    local = client.transport.get_extra_info("sockname")
    assert listed["client"] == f"{local[0]}:{local[1]}"
    assert listed["messages"] == 0 and listed["buffered"] == 0
    one = json.loads((await admin.get("/graph?clients=e"))[1])  # what the TUI asks for
    assert "client_list" in one["endpoints"]["e"] and "client_list" not in one["endpoints"]["f"]
    none = json.loads((await admin.get("/graph?clients="))[1])
    assert not any("client_list" in e for e in none["endpoints"].values())
    # No secret is served: not the header, not the URL's token.
    for path in ("/graph", "/metrics", "/readyz"):
        body = (await admin.get(path))[1]
        assert SECRET not in body and TOKEN not in body, path
    await client.close()


async def test_veylor_reload_applies_and_the_new_route_is_live_on_return(admin):
    await admin.start()
    (admin.dir / "routes.d" / "g.yaml").write_text(
        f"endpoints: {{g: {{websocket: {{port: {admin.port}, path: /g}}}}}}\nroutes: {{g: {{from: up, to: g}}}}\n"
    )
    result = await asyncio.to_thread(run_veylor, "reload", "-c", str(admin.main))
    assert result.returncode == 0, result.stderr
    assert "Reloaded: generation 2" in result.stdout
    assert "+ route g" in result.stdout and "+ endpoint g" in result.stdout
    client = await ws_client(f"ws://127.0.0.1:{admin.port}/g")  # no sleep: it is live
    await admin.upstream.send("after the reload")
    assert await asyncio.wait_for(client.recv(), 5) == "after the reload"
    again = await asyncio.to_thread(run_veylor, "reload", "-c", str(admin.main))
    assert again.returncode == 0 and "No changes: still generation 2" in again.stdout
    await client.close()


async def test_veylor_reload_refused_names_file_and_line_and_keeps_running(admin):
    await admin.start()
    broken = admin.dir / "routes.d" / "broken.yaml"
    broken.write_text("routes:\n  x: {from: up, to: nowhere}\n")
    dry = await asyncio.to_thread(run_veylor, "reload", "--dry-run", "-c", str(admin.main))
    assert dry.returncode == 1
    result = await asyncio.to_thread(run_veylor, "reload", "-c", str(admin.main))
    assert result.returncode == 1
    assert f"{broken}:2 routes.x.to: unknown endpoint 'nowhere'" in result.stderr
    assert "still running generation 1" in result.stderr
    client = await ws_client(f"ws://127.0.0.1:{admin.port}/e")  # the running graph serves on
    await admin.upstream.send("still here")
    assert await asyncio.wait_for(client.recv(), 5) == "still here"
    status, body = await admin.post("/reload")
    assert status == 422 and body["problems"][0]["line"] == 2
    # The refused reload leaves the running configuration serving: still ready (one typo
    # in a ConfigMap that replicas share must not take them all out of their Service).
    status, ready = await admin.get("/readyz")
    assert status == 200 and json.loads(ready)["last_reload_ok"] is False, ready
    broken.unlink()
    status, body = await admin.post("/reload?dry_run=1")
    assert status == 200 and body["dry_run"] and body["changes"] == [] and not body["applied"]
    await client.close()


async def test_veylor_reload_when_veylor_is_down_exits_2_naming_the_address(admin):
    admin.main.write_text(admin.config())
    result = await asyncio.to_thread(run_veylor, "reload", "-c", str(admin.main))
    assert result.returncode == 2
    assert f"http://127.0.0.1:{admin.admin}" in result.stderr


async def test_concurrent_reloads_are_one_reload(admin):
    await admin.start()
    (admin.dir / "routes.d" / "h.yaml").write_text("routes: {h: {from: up, to: e}}\n")
    (a, body_a), (b, body_b) = await asyncio.gather(admin.post("/reload"), admin.post("/reload"))
    assert a == b == 200
    assert body_a["generation"] == body_b["generation"] == 2  # not 3: one apply served both
    assert body_a["applied"] or body_b["applied"]
    assert sum("reload #" in line for line in admin.veylor.lines) == 1


async def test_admin_endpoint_moves_by_reload(admin):
    await admin.start()
    old = admin.admin
    admin.admin = free_port()
    admin.main.write_text(admin.config())
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.post(f"http://127.0.0.1:{old}/reload", headers=RELOAD) as r,
    ):
        body = await r.json()
    assert r.status == 200 and body["applied"], body
    assert f"+ admin http://127.0.0.1:{admin.admin}" in body["changes"]
    assert (await admin.get("/healthz"))[0] == 200

    async def old_refuses() -> bool:
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(f"http://127.0.0.1:{old}/healthz"):
                return False
        except aiohttp.ClientConnectionError:
            return True

    for _ in range(50):
        if await old_refuses():
            break
        await asyncio.sleep(0.1)
    assert await old_refuses()  # the old address is released


async def test_admin_on_a_unix_socket_with_its_mode(tmp_path, upstream):
    sock = tmp_path / "admin.sock"
    port = free_port()
    main = tmp_path / "config.yaml"
    main.write_text(
        f'admin: {{unix: "{sock}", mode: "0600"}}\n'
        f'sources: {{up: {{url: "{upstream.url}"}}}}\n'
        f"endpoints: {{e: {{websocket: {{port: {port}}}}}}}\n"
        "routes: {r: {from: up, to: e}}\n"
    )
    veylor = await VeylorProcess("-c", str(main), "--no-watch").start()
    try:
        assert oct(sock.stat().st_mode & 0o777) == "0o600"
        status = await asyncio.to_thread(run_veylor, "status", "--json", "-c", str(main))
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["sources"]["up"]["state"] in ("connected", "connecting")
        main.write_text(main.read_text().replace('mode: "0600"', 'mode: "0660"'))
        result = await asyncio.to_thread(run_veylor, "reload", "--admin", f"unix:{sock}")
        assert result.returncode == 0, result.stderr
        assert "~ admin unix:" in result.stdout
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
        veylor.signal()
        assert await veylor.wait() == 0
        assert not sock.exists()
    finally:
        await veylor.stop()


async def test_veylor_health_is_0_while_the_admin_endpoint_answers_and_1_when_not(admin, tmp_path):
    """What the container's HEALTHCHECK runs: 0 while /healthz answers; 1 when Veylor
    does not answer; 0, saying so, for a configuration without an admin endpoint."""
    await admin.start()
    ok = await asyncio.to_thread(run_veylor, "health", "-c", str(admin.main))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith(": ok")
    await admin.veylor.stop()
    down = await asyncio.to_thread(run_veylor, "health", "-c", str(admin.main))
    assert down.returncode == 1 and f"127.0.0.1:{admin.admin}" in down.stderr
    plain = tmp_path / "plain.yaml"
    plain.write_text("sources:" + admin.config().split("sources:", 1)[1])  # without admin:
    none = await asyncio.to_thread(run_veylor, "health", "-c", str(plain))
    assert none.returncode == 0 and "no admin endpoint" in none.stdout
    # An edit that does not parse: Veylor would run on with what it had; the health
    # check does not call it unhealthy for that (a restart would fail on the file).
    if not Path("/run/veylor/admin.sock").exists():
        plain.write_text("sources: [unclosed\n")
        broken = await asyncio.to_thread(run_veylor, "health", "-c", str(plain))
        assert broken.returncode == 0 and "not judging" in broken.stderr


async def test_a_runtime_run_without_a_configuration_file_refuses_reloads_and_keeps_running(
    tmp_path, upstream
):
    """In process (embedded, the tests' own runtimes), the admin endpoint has no file to
    read again: POST /reload answers 500 with why, at once, and the graph stays."""
    port, admin = free_port(), free_port()
    config = f"""
    sources: {{up: {{url: "{upstream.url}"}}}}
    endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}}}}}}}
    routes: {{r: {{from: up, to: ws}}}}
    admin: {{listen: "127.0.0.1:{admin}"}}
    """
    async with veylor_inprocess(tmp_path, config) as rt, aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{admin}/reload", headers=RELOAD) as r:
            body = await r.json()
        assert r.status == 500 and body["error"] == "no configuration file to reload", body
        assert body["generation"] == rt.generation == 1 and not body["applied"]


async def test_readyz_by_default_is_veylor_itself_not_its_upstreams(admin):
    """Issue 25: /readyz answered 503 whenever one source was backing off, so one flaky
    upstream took every replica out of its Service at once. By default, ready means the
    configuration's listeners are bound; the sources' state is in the body (and in the
    metrics)."""
    await admin.start()
    status, body = await admin.get("/readyz")
    assert status == 200, body
    ready = json.loads(body)
    assert ready["ready"] is True and ready["why"] == [] and ready["ready_requires"] == []
    assert ready["listeners"]["bound"] == ready["listeners"]["configured"] > 0
    await admin.upstream.stop(abort=True)
    for _ in range(100):
        status, body = await admin.get("/readyz")
        if json.loads(body)["sources_not_connected"]:
            break
        await asyncio.sleep(0.05)
    assert status == 200 and json.loads(body)["sources_not_connected"].keys() == {"up"}, body
    text = (await admin.get("/metrics"))[1]
    assert 'veylor_source_up{source="up"} 0' in text


async def test_ready_requires_names_only_sources_that_exist(admin, tmp_path):
    admin.admin_settings = "ready_requires: [up, upp]"
    admin.main.write_text(admin.config())
    result = await asyncio.to_thread(run_veylor, "-c", str(admin.main), "check")
    assert result.returncode == 1
    assert (
        "config.yaml:2 admin.ready_requires[1]: no source is named 'upp' (the sources: up)" in result.stderr
    ), result.stderr


async def test_metrics_an_operator_alerts_on(admin):
    """Issue 25, point 9: the process (process_*, as Prometheus' client libraries name
    them), the last reload's outcome and time, clients behind now, and a source's failed
    attempts in a row."""
    import socket
    import time

    from helpers import raw_handshake

    await admin.start()
    got = await admin.metrics()
    started = got[m("process_start_time_seconds")]
    assert abs(started - time.time()) < 60
    assert got[m("process_resident_memory_bytes")] > 10 * 2**20
    assert 3 < got[m("process_open_fds")] <= got[m("process_max_fds")]
    assert got[m("process_cpu_seconds_total")] > 0
    assert got[m("veylor_config_last_reload_successful")] == 1
    assert got[m("veylor_config_last_reload_timestamp_seconds")] == started  # (none yet)
    assert got[m("veylor_endpoint_slow_clients", endpoint="e")] == 0
    assert got[m("veylor_source_consecutive_failures", source="up")] == 0

    # A client that reads nothing, with a small receive buffer: behind once the feed
    # fills its socket, long before client_buffer (4 MiB) closes it.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", admin.port))
    await loop.sock_sendall(sock, raw_handshake("/e"))
    try:
        for _ in range(100):
            for _ in range(20):
                await admin.upstream.send("x" * 5000)
            if (await admin.metrics())[m("veylor_endpoint_slow_clients", endpoint="e")] >= 1:
                break
        assert (await admin.metrics())[m("veylor_endpoint_slow_clients", endpoint="e")] == 1
    finally:
        sock.close()

    broken = admin.dir / "routes.d" / "broken.yaml"
    broken.write_text("routes:\n  x: {from: up, to: nowhere}\n")
    assert (await admin.post("/reload"))[0] == 422
    got = await admin.metrics()
    assert got[m("veylor_config_last_reload_successful")] == 0
    assert got[m("veylor_config_last_reload_timestamp_seconds")] > started
    broken.unlink()
    assert (await admin.post("/reload"))[0] == 200
    assert (await admin.metrics())[m("veylor_config_last_reload_successful")] == 1

    await admin.upstream.stop(abort=True)
    for _ in range(100):
        failures = (await admin.metrics())[m("veylor_source_consecutive_failures", source="up")]
        if failures >= 2:
            break
        await asyncio.sleep(0.05)
    assert failures >= 2
    assert (await admin.metrics())[m("veylor_source_up", source="up")] == 0
