"""The admin endpoint, its metrics and its CLI clients under hostile and faulty input.

Every test runs Veylor as a real process (``python -m veylor``) with real sockets on
127.0.0.1: hostile HTTP clients of the admin endpoint, counters after reloads, the
``veylor reload`` / ``veylor status`` clients against things that are not Veylor.
Each test's docstring says what was wrong before the fix it guards ("Was:").
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import run_veylor
from helpers import NOTIFY_VARS, Upstream, eventually, free_port, raw_handshake, ws_client
from helpers import quiet_veylor as veylor
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(120)


def write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(textwrap.dedent(text))
    os.replace(tmp, path)
    return path


async def get(admin: int, path: str, timeout: float = 10) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
        s.get(f"http://127.0.0.1:{admin}{path}") as r,
    ):
        return r.status, await r.text()


async def post(admin: int, path: str, timeout: float = 30) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
        s.post(f"http://127.0.0.1:{admin}{path}", headers={"X-Veylor-Reload": "1"}) as r,
    ):
        return r.status, await r.json()


async def metrics(admin: int) -> dict[tuple[str, tuple], float]:
    status, text = await get(admin, "/metrics")
    assert status == 200, text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def m(name: str, **labels: str) -> tuple[str, tuple]:
    return (name, tuple(sorted(labels.items())))


# ---------------------------------------------------------------------- counters after reloads


async def test_edge_of_a_route_moved_to_another_source_does_not_inherit_the_old_count(tmp_path):
    """Was: ``veylor_edge_messages_total{source,route,endpoint}`` is keyed by (route,
    endpoint) only (Stats.edges). A route whose ``from`` changes keeps its edge base, so the
    new series ``{source="b",route="r",endpoint="e"}`` appears with the messages that came
    from source ``a``: messages misattributed to a source that never sent them."""
    a, b = await Upstream().start(), await Upstream().start()
    port, admin = free_port(), free_port()
    main = tmp_path / "config.yaml"

    def config(source: str) -> str:
        return f"""
        admin: {{listen: "127.0.0.1:{admin}"}}
        sources:
          a: {{url: "{a.url}"}}
          b: {{url: "{b.url}"}}
        endpoints:
          e: {{websocket: {{port: {port}}}}}
        routes:
          r: {{from: {source}, to: e}}
        """

    write(main, config("a"))
    proc = veylor("-c", str(main), "--no-watch")
    try:
        await proc.start()
        await a.wait_connected()
        await b.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        for i in range(5):
            await a.send(f"from a {i}")
        for i in range(5):
            assert await asyncio.wait_for(client.recv(), 5) == f"from a {i}"
        before = await metrics(admin)
        assert before[m("veylor_edge_messages_total", source="a", route="r", endpoint="e")] == 5

        write(main, config("b"))
        status, body = await post(admin, "/reload")
        assert status == 200 and body["applied"], body
        after = await metrics(admin)
        # Nothing has come from b yet.
        assert after[m("veylor_source_messages_total", source="b")] == 0
        assert after[m("veylor_edge_messages_total", source="b", route="r", endpoint="e")] == 0, (
            "the edge b -> r -> e reports a's messages"
        )
        await client.close()
    finally:
        await proc.stop()
        await a.stop()
        await b.stop()


async def test_a_source_restarted_by_a_reload_counts_its_disconnect(tmp_path, upstream):
    """Was: a source restarted by a reload (its URL changed) ends its connection by
    cancellation: ``Source._run`` re-raises CancelledError before ``stats.disconnects +=
    1``, and the stats outlive the restart. After one restart: connects_total 2,
    disconnects_total 0, up 1 (connects - disconnects should be the connections open)."""
    port, admin = free_port(), free_port()
    main = tmp_path / "config.yaml"

    def config(query: str) -> str:
        return f"""
        admin: {{listen: "127.0.0.1:{admin}"}}
        sources: {{up: {{url: "{upstream.url}{query}"}}}}
        endpoints: {{e: {{websocket: {{port: {port}}}}}}}
        routes: {{r: {{from: up, to: e}}}}
        """

    write(main, config(""))
    proc = veylor("-c", str(main), "--no-watch")
    try:
        await proc.start()
        await upstream.wait_connected()
        write(main, config("?v=2"))
        status, body = await post(admin, "/reload")
        assert status == 200 and body["applied"], body
        await eventually(lambda: upstream.connects == 2 and len(upstream.connections) == 1, 10)

        async def connected() -> bool:
            return (await metrics(admin))[m("veylor_source_up", source="up")] == 1

        for _ in range(100):
            if await connected():
                break
            await asyncio.sleep(0.05)
        got = await metrics(admin)
        connects = got[m("veylor_source_connects_total", source="up")]
        disconnects = got[m("veylor_source_disconnects_total", source="up")]
        assert connects == 2
        assert connects - disconnects == got[m("veylor_source_up", source="up")], (
            f"connects {connects}, disconnects {disconnects}: the restart's disconnect is not counted"
        )
    finally:
        await proc.stop()


def stalled(port: int, path: str = "/") -> socket.socket:
    """A WebSocket client that completes the handshake and never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(raw_handshake(path))
    return sock


@pytest.mark.parametrize("policy", ["drop", "disconnect"])
async def test_memory_limit_is_counted_as_closed_only_for_clients_closed(tmp_path, upstream, policy):
    """Was: ``veylor_endpoint_closed_clients_total{reason="memory_limit"}`` ("Clients
    Veylor closed") is EndpointStats.memory_limited, which ``over_budget`` increments for
    every client given its policy: with ``slow_client: drop`` the client is not closed
    (only shed), and with ``disconnect`` the same client is also counted in
    ``veylor_endpoint_slow_clients_total{action="disconnect"}``, which the HELP text says
    is where slow clients are counted instead. The clients Veylor says it closed are not
    the clients that went."""
    port, admin = free_port(), free_port()
    main = write(
        tmp_path / "config.yaml",
        f"""
        admin: {{listen: "127.0.0.1:{admin}"}}
        limits: {{buffered: 8MiB}}
        sources: {{up: {{url: "{upstream.url}"}}}}
        endpoints:
          ws: {{websocket: {{port: {port}}}, slow_client: {policy}}}
        routes: {{r: {{from: up, to: ws}}}}
        """,
    )
    proc = veylor("-c", str(main), "--no-watch")
    socks: list[socket.socket] = []
    try:
        await proc.start()
        await upstream.wait_connected()
        socks = [stalled(port) for _ in range(20)]

        async def clients() -> float:
            return (await metrics(admin))[m("veylor_endpoint_clients", endpoint="ws")]

        for _ in range(100):
            if await clients() == 20:
                break
            await asyncio.sleep(0.05)
        assert await clients() == 20
        payload = "m" * 20_000
        for i in range(150):  # 3 MB per client (under client_buffer), 60 MB in all: over 8 MiB
            await upstream.send(f"{i:04d}{payload}")
            if i % 10 == 0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(1.5)  # the budget's sweeps have run; aborted clients are gone
        got = await metrics(admin)
        limited = got[m("veylor_endpoint_memory_limited_total", endpoint="ws", action=policy)]
        assert limited > 0, "the process-wide limit was not reached: the test did not exercise it"
        memory = got[m("veylor_endpoint_closed_clients_total", endpoint="ws", reason="memory_limit")]
        assert memory == (limited if policy == "disconnect" else 0)
        closed = sum(
            v
            for (name, labels), v in got.items()
            if name == "veylor_endpoint_closed_clients_total" and ("endpoint", "ws") in labels
        )
        slow_disconnects = got[m("veylor_endpoint_slow_clients_total", endpoint="ws", action="disconnect")]
        gone = (
            got[m("veylor_endpoint_accepted_total", endpoint="ws")]
            - got[m("veylor_endpoint_clients", endpoint="ws")]
        )
        assert closed + slow_disconnects == gone, (
            f"{policy}: closed_clients_total {closed} + slow_clients_total{{disconnect}} "
            f"{slow_disconnects}, but {gone} clients went"
        )
    finally:
        for s in socks:
            s.close()
        await proc.stop()


# ---------------------------------------------------------------------- hostile admin clients


def many_dropins(root: Path, admin: int, upstream: Upstream, port: int, n: int = 2000) -> Path:
    """A configuration of ``n`` drop-ins (one filtered route each): a full load takes a
    few tenths of a second, as a real configuration of that size does."""
    (root / "routes.d").mkdir()
    for i in range(n):
        (root / "routes.d" / f"r{i:04d}.yaml").write_text(
            f"routes: {{r{i}: {{from: up, to: e, filter: {{json: {{path: s, equals: X{i}}}}}}}}}\n"
        )
    return write(
        root / "config.yaml",
        f"""
        admin: {{listen: "127.0.0.1:{admin}"}}
        sources: {{up: {{url: "{upstream.url}"}}}}
        endpoints: {{e: {{websocket: {{port: {port}}}}}}}
        include: [routes.d/*.yaml]
        """,
    )


def fire_and_forget(admin: int, request: bytes, count: int) -> None:
    """``count`` connections that each send ``request`` and hang up at once."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", admin), timeout=5)
        s.sendall(request)
        socks.append(s)
    time.sleep(0.3)
    for s in socks:
        s.close()


DRY_RUN = (
    b"POST /reload?dry_run=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Veylor-Reload: 1\r\nContent-Length: 0\r\n\r\n"
)


@pytest.mark.slow  # a load test: floods, or hundreds of clients (the quick loop leaves it to the full suite)
async def test_a_dry_run_flood_does_not_starve_metrics(tmp_path, upstream):
    """Was: each POST /reload?dry_run=1 runs ``Reloader.plan`` (a full load, in
    ``asyncio.to_thread``) on its own: concurrent dry runs are not shared as real reloads
    are, a client that hangs up does not cancel its run, and the default executor's queue
    is unbounded. /metrics (its text is rendered by ``to_thread`` too) and real reloads
    queue behind them: 20 aborted dry-run requests made a 30 ms scrape take many
    seconds."""
    port, admin = free_port(), free_port()
    main = many_dropins(tmp_path, admin, upstream, port)
    proc = veylor("-c", str(main), "--no-watch")
    try:
        await proc.start(timeout=60)
        await upstream.wait_connected()
        started = time.monotonic()
        assert (await get(admin, "/metrics"))[0] == 200
        baseline = time.monotonic() - started
        await asyncio.to_thread(fire_and_forget, admin, DRY_RUN, 20)
        started = time.monotonic()
        try:
            status, _ = await get(admin, "/metrics", timeout=30)
        except TimeoutError:
            status = None
        took = time.monotonic() - started
        assert status == 200 and took < 3.0, (
            f"/metrics took {took:.1f}s after 20 aborted dry runs (status {status}; {baseline * 1000:.0f} ms before)"
        )
    finally:
        await proc.stop()


@pytest.mark.slow  # a load test: floods, or hundreds of clients (the quick loop leaves it to the full suite)
async def test_shutdown_is_bounded_after_a_dry_run_flood(tmp_path, upstream):
    """Was: SIGTERM logs "stopped" within SHUTDOWN_TIMEOUT, but the process exits only
    once every queued dry-run load has run: ``asyncio.Runner`` closes by shutting the
    default executor down (waiting for every queued work item). A client that fired dry
    runs and hung up holds the exit for as long as it likes."""
    port, admin = free_port(), free_port()
    main = many_dropins(tmp_path, admin, upstream, port, n=4000)
    proc = veylor("-c", str(main), "--no-watch")
    try:
        await proc.start(timeout=90)
        await upstream.wait_connected()
        await asyncio.to_thread(fire_and_forget, admin, DRY_RUN, 30)
        proc.signal(signal.SIGTERM)
        started = time.monotonic()
        await proc.wait_for("INFO veylor: stopped", 30)
        stopped = time.monotonic() - started
        code = await proc.wait(timeout=120)
        took = time.monotonic() - started
        assert code == 0
        # Runtime.stop's bound is SHUTDOWN_TIMEOUT (4 s), then aborts: the process should
        # be gone by then, give or take a second.
        assert took < 5.0, f"exit took {took:.1f}s after SIGTERM ('stopped' was logged after {stopped:.1f}s)"
    finally:
        await proc.stop()


async def test_malformed_admin_requests_do_not_flood_the_log(tmp_path, upstream):
    """Was: aiohttp's server logger ("aiohttp.server") logs every request it cannot
    parse (a header over 8190 bytes, too many headers, a bad chunk) at ERROR with a full
    traceback, once per request and unthrottled; Veylor's own logs are rate limited
    (Throttled). Any client that reaches the admin endpoint writes ~10 ERROR lines to the
    journal per request, with bytes of its choosing (the first 100 of the header)."""
    port, admin = free_port(), free_port()
    main = write(
        tmp_path / "config.yaml",
        f"""
        admin: {{listen: "127.0.0.1:{admin}"}}
        sources: {{up: {{url: "{upstream.url}"}}}}
        endpoints: {{e: {{websocket: {{port: {port}}}}}}}
        routes: {{r: {{from: up, to: e}}}}
        """,
    )
    proc = veylor("-c", str(main), "--no-watch")
    try:
        await proc.start()
        before = len(proc.lines)
        hostile = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Junk: INJECTED" + b"a" * 9000 + b"\r\n\r\n"

        def send_all() -> None:
            for _ in range(50):
                with socket.create_connection(("127.0.0.1", admin), timeout=5) as s:
                    s.sendall(hostile)
                    s.recv(100)

        await asyncio.to_thread(send_all)
        await asyncio.sleep(0.5)
        added = proc.lines[before:]
        errors = [line for line in added if " ERROR " in line]
        assert len(errors) <= 5, (
            f"{len(errors)} ERROR lines ({len(added)} lines in all) for 50 malformed requests:\n"
            + "\n".join(added[:12])
        )
        assert (await get(admin, "/healthz"))[0] == 200
    finally:
        await proc.stop()


# ---------------------------------------------------------------------- veylor reload / status


class NotVeylor:
    """An HTTP server that is not Veylor (another service on the port the admin:
    section names), answering every GET and POST with 200 and ``body``."""

    def __init__(self, body: bytes, content_type: str = "application/json") -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("command", ["reload", "status"])
@pytest.mark.parametrize(
    "body",
    [b'{"status": "ok"}', b"[1, 2, 3]", b"\xff\xfe\x00 not text"],
    ids=["json-object", "json-list", "binary"],
)
def test_reload_and_status_against_a_server_that_is_not_veylor(tmp_path, command, body):
    """Was: ``veylor reload`` / ``veylor status`` pointed at an HTTP server that is not
    Veylor's admin endpoint (a wrong port in admin:, a proxy) crash with a Python
    traceback (KeyError 'generation' / 'time', AttributeError on a list,
    UnicodeDecodeError, which ``call`` does not catch) and exit 1 — for ``reload``, the
    code that means "refused: the running configuration stays". Expected: exit 2 and one
    line saying the answer was not Veylor's."""
    other = NotVeylor(body)
    try:
        main = write(
            tmp_path / "config.yaml",
            f"""
            admin: {{listen: "127.0.0.1:{other.port}"}}
            sources: {{up: {{url: "ws://127.0.0.1:9/x"}}}}
            endpoints: {{e: {{websocket: {{port: {free_port()}}}}}}}
            routes: {{r: {{from: up, to: e}}}}
            """,
        )
        result = run_veylor(command, "-c", str(main), timeout=30)
    finally:
        other.close()
    said = result.stdout + result.stderr
    assert "Traceback" not in said, said
    assert result.returncode == 2, said
    assert f"127.0.0.1:{other.port}" in said, said


def test_status_with_an_admin_port_out_of_range_says_what_is_wrong(tmp_path):
    """Was (minor): ``admin_address`` validates the admin section against the schema
    (5 digits) but not ``AdminSpec.check`` (1..65535), which ``veylor run`` and ``check``
    apply: ``veylor status`` with ``listen: "127.0.0.1:99999"`` says "cannot reach Veylor's
    admin endpoint at http://127.0.0.1:99999: http://127.0.0.1:99999/graph" instead of
    the problem (file, line, "port 99999 is not between 1 and 65535")."""
    main = write(
        tmp_path / "config.yaml",
        """
        admin: {listen: "127.0.0.1:99999"}
        sources: {up: {url: "ws://127.0.0.1:9/x"}}
        endpoints: {e: {websocket: {port: 8765}}}
        routes: {r: {from: up, to: e}}
        """,
    )
    check = run_veylor("check", "-c", str(main), timeout=30)
    assert check.returncode == 1 and "65535" in check.stdout + check.stderr
    result = run_veylor("status", "-c", str(main), timeout=30)
    said = result.stdout + result.stderr
    assert result.returncode == 2, said
    assert "65535" in said, said


# ---------------------------------------------------------------------- names, labels


def test_a_name_with_a_trailing_newline_is_refused(tmp_path):
    """Was: the schema's name pattern ``^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`` is checked
    by jsonschema with ``re.search``, where ``$`` also matches before a final newline: a
    quoted key "up\\n" passes ``veylor check`` as a source, endpoint and route name. Such a
    name reaches every new output: a /metrics label (escaped, so the text still parses),
    /graph keys, a text log line broken in two, JSON log lines without their
    ``source``/``endpoint`` field."""
    main = tmp_path / "config.yaml"
    main.write_text(
        'sources: {"up\\n": {url: "ws://127.0.0.1:9/x"}}\n'
        'endpoints: {"e\\n": {websocket: {port: 8765}}}\n'
        'routes: {"r\\n": {from: "up\\n", to: "e\\n"}}\n'
    )
    result = run_veylor("check", "-c", str(main), timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is not a valid name" in result.stdout + result.stderr


# ---------------------------------------------------------------------- reload outcomes


SECRET = "sekrit-0123456789abcdef"


def tagged_secret_config(admin: int, upstream: Upstream, port: int, header: str) -> str:
    return f"""
    admin: {{listen: "127.0.0.1:{admin}"}}
    sources:
      up:
        url: "{upstream.url}"
        headers: {{X-Api-Key: {header}}}
    endpoints: {{e: {{websocket: {{port: {port}}}}}}}
    routes: {{r: {{from: up, to: e}}}}
    """


async def test_a_value_the_yaml_constructor_rejects_is_a_problem_not_a_500(tmp_path, upstream):
    """Was: a scalar PyYAML resolves implicitly but cannot construct (``2024-02-30``
    is a timestamp with no such day) raises ValueError out of ``read_yaml`` (only
    MarkedYAMLError is caught). ``Reloader.plan`` catches only ConfigError: POST
    /reload?dry_run=1 answers 500 "Internal Server Error" (text, a traceback in the log),
    and ``veylor reload --dry-run`` then says "cannot reach Veylor's admin endpoint" and
    exits 2 (Veylor is up). A real reload answers 500 with "unexpected error: day is out
    of range for month" (no file, no line). Expected: 422 with the problem located."""
    port, admin = free_port(), free_port()
    main = write(tmp_path / "config.yaml", tagged_secret_config(admin, upstream, port, '"ok-value"'))
    proc = veylor("-c", str(main), "--no-watch")
    try:
        await proc.start()
        await upstream.wait_connected()
        write(main, tagged_secret_config(admin, upstream, port, "2024-02-30"))
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s,
            s.post(f"http://127.0.0.1:{admin}/reload?dry_run=1", headers={"X-Veylor-Reload": "1"}) as r,
        ):
            dry_status, dry_text = r.status, await r.text()
        dry_cli = await asyncio.to_thread(run_veylor, "reload", "--dry-run", "-c", str(main))
        status, body = await post(admin, "/reload")
        assert (dry_status, status) == (422, 422), (dry_status, dry_text, status, body)
        assert body["problems"] and body["problems"][0]["line"], body
        assert dry_cli.returncode == 1, dry_cli.stdout + dry_cli.stderr
    finally:
        await proc.stop()


async def test_a_header_value_never_reaches_the_admin_endpoint_through_a_reload_error(tmp_path, upstream):
    """Was (secret exposure): a header value with a YAML tag its text does not fit
    (``X-Api-Key: !!int <secret>``) makes PyYAML raise ``ValueError: invalid literal for
    int() with base 10: '<secret>'``; the reload loop turns it into ``Outcome.error =
    "unexpected error: " + str(exc)``, which POST /reload, /readyz, /graph (reloads.last)
    and ``veylor status`` all serve, and which the log prints unmasked (the new value is
    not a known secret yet). docs/operations.md (Logs) says header values are never shown."""
    port, admin = free_port(), free_port()
    main = write(tmp_path / "config.yaml", tagged_secret_config(admin, upstream, port, '"ok-value"'))
    proc = veylor("-c", str(main), "--no-watch")
    try:
        await proc.start()
        await upstream.wait_connected()
        write(main, tagged_secret_config(admin, upstream, port, f"!!int {SECRET}"))
        status, body = await post(admin, "/reload")
        assert status in (422, 500), body
        served = {
            "POST /reload": json.dumps(body),
            "/readyz": (await get(admin, "/readyz"))[1],
            "/graph": (await get(admin, "/graph"))[1],
        }
        status_cli = await asyncio.to_thread(run_veylor, "status", "-c", str(main))
        served["veylor status"] = status_cli.stdout + status_cli.stderr
        served["log"] = proc.log
        leaked = [where for where, text in served.items() if SECRET in text]
        assert not leaked, f"the header value is shown by: {', '.join(leaked)}"
    finally:
        await proc.stop()


async def test_a_dry_run_changes_nothing(tmp_path, upstream):
    """CHECK (expected to pass): a dry run with a broken drop-in, then with a valid
    change, leaves the generation, the last outcome, /readyz and the reload counters as
    they were; the real reload that follows applies the change."""
    port, admin = free_port(), free_port()
    (tmp_path / "routes.d").mkdir()
    main = write(
        tmp_path / "config.yaml",
        f"""
        admin: {{listen: "127.0.0.1:{admin}"}}
        sources: {{up: {{url: "{upstream.url}"}}}}
        endpoints: {{e: {{websocket: {{port: {port}}}}}}}
        routes: {{r: {{from: up, to: e}}}}
        include: [routes.d/*.yaml]
        """,
    )
    proc = veylor("-c", str(main), "--no-watch")
    try:
        await proc.start()
        await upstream.wait_connected()
        graph_before = json.loads((await get(admin, "/graph"))[1])
        broken = tmp_path / "routes.d" / "broken.yaml"
        broken.write_text("routes: {x: {from: up, to: nowhere}}\n")
        status, body = await post(admin, "/reload?dry_run=1")
        assert status == 422 and body["dry_run"], body
        broken.write_text("routes: {x: {from: up, to: e}}\n")
        status, body = await post(admin, "/reload?dry_run=1")
        assert status == 200 and "+ route x" in body["changes"], body
        graph = json.loads((await get(admin, "/graph"))[1])
        assert (
            graph["reloads"]
            == graph_before["reloads"]
            == {"ok": 0, "failed": 0, "last": None, "last_change": None}
        )
        assert graph["config"] == graph_before["config"]
        assert set(graph["routes"]) == {"r"}
        assert (await get(admin, "/readyz"))[0] == 200
        status, body = await post(admin, "/reload")
        assert status == 200 and body["applied"] and body["generation"] == 2, body
    finally:
        await proc.stop()


# ---------------------------------------------------------------------- veylor check and admin:


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_check_refuses_an_admin_address_an_endpoint_uses(tmp_path, kind):
    """Was: ``_check_addresses`` compares endpoints with each other, not with
    ``admin:``. ``veylor check`` (ExecStartPre=, "run it before systemctl reload") says OK
    for an admin endpoint on an endpoint's port or socket path; ``veylor run`` then fails
    to start: "address already in use (another process listens there)" for TCP, and for
    a Unix path the admin's stale-socket probe connects to Veylor's own endpoint (a
    client connects and leaves in the log) and reports "another process is listening"."""
    port = free_port()
    sock = tmp_path / "shared.sock"
    if kind == "tcp":
        admin, endpoint = (
            f'{{listen: "127.0.0.1:{port}"}}',
            f"{{websocket: {{host: 127.0.0.1, port: {port}}}}}",
        )
    else:
        admin, endpoint = f'{{unix: "{sock}"}}', f'{{unix: {{path: "{sock}"}}}}'
    main = write(
        tmp_path / "config.yaml",
        f"""
        admin: {admin}
        sources: {{up: {{url: "ws://127.0.0.1:9/x"}}}}
        endpoints: {{e: {endpoint}}}
        routes: {{r: {{from: up, to: e}}}}
        """,
    )
    check = run_veylor("check", "-c", str(main), timeout=30)
    run = subprocess.run(
        [sys.executable, "-m", "veylor", "-c", str(main), "--no-watch"],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k not in NOTIFY_VARS},
    )
    assert check.returncode == 1 or run.returncode == 0, (
        f"veylor check: exit {check.returncode} ({check.stdout.strip().splitlines()[-1]}); "
        f"veylor run: exit {run.returncode}: {run.stderr.strip().splitlines()[-1]}"
    )


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_the_commands_and_top_read_a_bounded_answer_through_one_client(monkeypatch, framing):
    """Something else listening where the admin endpoint should be (or a Veylor gone
    wrong) answers /graph with more than an answer may hold: ``veylor status``'s request
    and ``veylor top``'s reader go through the one AdminClient, and both stop at
    MAX_BODY (a declared length, or a chunked stream with none), saying so."""
    from aiohttp import web

    from veylor.observe import client
    from veylor.observe.client import Unreachable, request, target
    from veylor.tui.reader import OverHttp, Unavailable

    monkeypatch.setattr(client, "MAX_BODY", 4096)

    async def graph(req: web.Request) -> web.StreamResponse:
        body = b'{"schema": 1, "pad": "' + b"x" * 10_000 + b'"}'
        if framing == "content-length":
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(req)
        for i in range(0, len(body), 1000):
            await response.write(body[i : i + 1000])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/graph", graph)
    async with _standing_in(app) as address:
        spec = target(None, address)
        with pytest.raises(Unreachable, match="an answer of"):
            await request(spec, "GET", "/graph", 5)
        reader = OverHttp(spec)
        try:
            with pytest.raises(Unavailable, match="an answer of"):
                await reader.read()
        finally:
            await reader.close()


@contextlib.asynccontextmanager
async def _standing_in(app):
    """Serve ``app`` (aiohttp) on 127.0.0.1 where an admin endpoint could be; its address."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("answer", [b'{"hello": "world"}', b"<html>not JSON</html>", b'["a list"]'])
async def test_the_commands_and_top_tell_a_foreign_answer_from_veylors_alike(answer):
    """Something else answers where the admin endpoint should be (another service on the
    port): ``veylor status`` and ``veylor top`` judge the answer in one place
    (AdminClient.call) and both say it is not Veylor's, instead of showing it."""
    from aiohttp import web

    from veylor.observe.client import Unreachable, call, target
    from veylor.tui.reader import OverHttp, Unavailable

    async def anything(req: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    async with _standing_in(app) as address:
        spec = target(None, address)
        with pytest.raises(Unreachable, match="not as Veylor's admin endpoint does"):
            await call(spec, "GET", "/graph", 5)
        reader = OverHttp(spec)
        try:
            with pytest.raises(Unavailable, match="not as Veylor's admin endpoint does"):
                await reader.read()
            with pytest.raises(Unavailable, match="not as Veylor's admin endpoint does"):
                await reader.reload()
        finally:
            await reader.close()
