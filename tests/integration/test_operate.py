"""Operating Veylor: systemd's notify protocol, ``--log-format json``, ``veylor status``,
and nothing listening that the configuration does not name.

Veylor runs as a real process (``python -m veylor``); systemd's side of the notify
protocol is a real AF_UNIX datagram socket bound by the test, clients and upstreams are
real WebSocket connections on 127.0.0.1, and the listening sockets are read from the
kernel (``/proc/<pid>/net``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import struct
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_veylor
from helpers import UnixClient, Upstream, eventually, free_port, ws_client
from helpers import quiet_veylor as veylor
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(60)

# Inherited from a test run under systemd, these would point Veylor at the wrong socket.
STATUS_LINE = re.compile(r"^\d+/\d+ sources connected, \d+ clients?, generation \d+$")


def write(path: Path, text: str) -> Path:
    """Write ``text`` (dedented) to ``path`` by renaming it into place (atomic)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(textwrap.dedent(text))
    os.replace(tmp, path)
    return path


def basic_config(up: Upstream, port: int, admin: int | None = None) -> str:
    admin_line = f'admin: {{listen: "127.0.0.1:{admin}"}}\n' if admin is not None else ""
    return admin_line + textwrap.dedent(
        f"""
        sources:
          feed: {{url: "{up.url}", reconnect: {{initial_delay: 0.1, max_delay: 0.2}}}}
        endpoints:
          ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}
        routes:
          r: {{from: feed, to: ws}}
        """
    )


# ---------------------------------------------------------------------- systemd notify


def now_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@dataclass
class Datagram:
    received_usec: int  # CLOCK_MONOTONIC when the test read it
    lines: list[str]

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.partition("=")[::2] for line in self.lines)

    def has(self, line: str) -> bool:
        return line in self.lines


class NotifySocket:
    """systemd's end of ``NOTIFY_SOCKET``: an AF_UNIX SOCK_DGRAM socket bound at a path
    (or an abstract name), every datagram recorded as it arrives. ``hooks`` run in the
    event loop's reader callback, the moment a datagram is read."""

    def __init__(self, address: str) -> None:
        """``address``: a path, or ``@name`` for the abstract namespace (as systemd
        writes it in ``NOTIFY_SOCKET``)."""
        self.env_value = address
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.setblocking(False)
        self.datagrams: list[Datagram] = []
        self.hooks: list[Callable[[Datagram], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> NotifySocket:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._read)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            datagram = Datagram(now_usec(), data.decode().split("\n"))
            self.datagrams.append(datagram)
            for hook in self.hooks:
                hook(datagram)

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value}

    async def wait(self, line: str, after: int = 0, timeout: float = 10.0) -> int:
        """The index of the first datagram at ``after`` or later that holds ``line``."""

        def find() -> int | None:
            for i in range(after, len(self.datagrams)):
                if self.datagrams[i].has(line):
                    return i
            return None

        try:
            await eventually(lambda: find() is not None, timeout, what=line)
        except AssertionError:
            raise AssertionError(
                f"no datagram with {line!r} within {timeout}s after #{after}: {self.transcript()}"
            ) from None
        index = find()
        assert index is not None
        return index

    def statuses(self, after: int = 0) -> list[str]:
        return [d.fields["STATUS"] for d in self.datagrams[after:] if "STATUS" in d.fields]

    def transcript(self) -> str:
        return "\n".join(f"  #{i} {d.lines}" for i, d in enumerate(self.datagrams)) or "  (none)"


def port_accepts(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:``port`` is accepted now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


async def test_notify_ready_reloading_stopping(tmp_path, upstream):
    """READY=1 with a STATUS= once the listeners accept; SIGHUP: RELOADING=1 with
    MONOTONIC_USEC (the time it started, on CLOCK_MONOTONIC), then READY=1 again;
    SIGTERM: STOPPING=1, exit 0."""
    port = free_port()
    config = write(tmp_path / "config.yaml", basic_config(upstream, port))
    accepted_at_ready: list[bool] = []
    with NotifySocket(str(tmp_path / "notify.sock")) as notify:
        # Probed the moment READY=1 is read: systemd starts dependent units then.
        notify.hooks.append(lambda d: d.has("READY=1") and accepted_at_ready.append(port_accepts(port)))
        proc = veylor("-c", str(config), "--no-watch", env=notify.env)
        try:
            await proc.start()
            ready = await notify.wait("READY=1")
            first = notify.datagrams[ready]
            assert accepted_at_ready[0], f"READY=1 sent before 127.0.0.1:{port} accepted connections"
            assert "STATUS" in first.fields, f"READY=1 without STATUS=: {first.lines}"
            assert STATUS_LINE.match(first.fields["STATUS"]), first.fields["STATUS"]
            early = [d.lines for d in notify.datagrams[:ready] if d.has("RELOADING=1") or d.has("STOPPING=1")]
            assert early == [], f"before the first READY=1: {early}"

            await upstream.wait_connected()
            before = len(notify.datagrams)
            signalled = now_usec()
            proc.signal(signal.SIGHUP)
            reloading = await notify.wait("RELOADING=1", after=before)
            datagram = notify.datagrams[reloading]
            fields = datagram.fields
            assert "MONOTONIC_USEC" in fields, (
                f"RELOADING=1 without MONOTONIC_USEC= in the same message: {datagram.lines}"
            )
            assert fields["MONOTONIC_USEC"].isdigit(), datagram.lines
            stamp = int(fields["MONOTONIC_USEC"])
            assert signalled <= stamp <= datagram.received_usec, (
                f"MONOTONIC_USEC={stamp} is not CLOCK_MONOTONIC between the signal ({signalled}) "
                f"and its arrival ({datagram.received_usec})"
            )
            assert datagram.received_usec - stamp < 2_000_000
            ready_again = await notify.wait("READY=1", after=reloading + 1)
            between = notify.datagrams[reloading + 1 : ready_again]
            assert not any(d.has("STOPPING=1") for d in between), notify.transcript()
            await proc.wait_for("(SIGHUP)", 10)

            before = len(notify.datagrams)
            proc.signal(signal.SIGTERM)
            stopping = await notify.wait("STOPPING=1", after=before)
            assert await proc.wait() == 0, proc.log
            after_stop = notify.datagrams[stopping + 1 :]
            assert not any(d.has("READY=1") for d in after_stop), notify.transcript()
        finally:
            await proc.stop()


async def test_notify_status_reports_clients(tmp_path, upstream):
    """STATUS= is refreshed (about once a second) when what it reports changes: the
    sources connected and the clients."""
    port = free_port()
    config = write(tmp_path / "config.yaml", basic_config(upstream, port))
    with NotifySocket(str(tmp_path / "notify.sock")) as notify:
        proc = veylor("-c", str(config), "--no-watch", env=notify.env)
        try:
            await proc.start()
            await notify.wait("READY=1")
            await upstream.wait_connected()

            def last_status() -> str:
                statuses = notify.statuses()
                return statuses[-1] if statuses else ""

            await eventually(
                lambda: last_status().startswith("1/1 sources connected, 0 clients"),
                3,
                what=f"STATUS= with the source connected: {notify.statuses()}",
            )
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            try:
                await eventually(
                    lambda: re.search(r"\b1 clients?\b", last_status()) is not None,
                    3,
                    what=f"STATUS= with 1 client: {notify.statuses()}",
                )
            finally:
                await client.close()
            await eventually(
                lambda: ", 0 clients" in last_status(),
                3,
                what=f"STATUS= back to 0 clients: {notify.statuses()}",
            )
            for status in notify.statuses():
                assert STATUS_LINE.match(status) or status == "stopping", status
            proc.signal(signal.SIGTERM)
            assert await proc.wait() == 0, proc.log
        finally:
            await proc.stop()


async def test_notify_watchdog_is_fed(tmp_path, upstream):
    """WATCHDOG_USEC=400000 (no WATCHDOG_PID): WATCHDOG=1 comes repeatedly, never more
    than the 0.4 s systemd waits apart."""
    port = free_port()
    config = write(tmp_path / "config.yaml", basic_config(upstream, port))
    with NotifySocket(str(tmp_path / "notify.sock")) as notify:
        proc = veylor("-c", str(config), "--no-watch", env={**notify.env, "WATCHDOG_USEC": "400000"})
        try:
            await proc.start()
            ready = await notify.wait("READY=1")
            start = notify.datagrams[ready].received_usec

            def fed() -> list[int]:
                return [d.received_usec for d in notify.datagrams if d.has("WATCHDOG=1")]

            await eventually(
                lambda: len([t for t in fed() if t >= start]) >= 3,
                2.5,
                what=f"3 WATCHDOG=1 within ~2 s of READY=1:\n{notify.transcript()}",
            )
            await eventually(lambda: now_usec() - start >= 2_000_000, 3, what="2 s")
            times = [t for t in fed() if t >= start]
            assert len(times) >= 4, notify.transcript()
            gaps = [b - a for a, b in zip([start, *times], times, strict=False)]
            assert max(gaps) < 400_000, f"the watchdog went hungry: gaps {gaps} us"
            proc.signal(signal.SIGTERM)
            assert await proc.wait() == 0, proc.log
        finally:
            await proc.stop()


async def test_notify_watchdog_for_another_pid_is_not_fed(tmp_path, upstream):
    """WATCHDOG_PID names another process: the watchdog is not Veylor's to feed."""
    port = free_port()
    config = write(tmp_path / "config.yaml", basic_config(upstream, port))
    with NotifySocket(str(tmp_path / "notify.sock")) as notify:
        env = {**notify.env, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}
        proc = veylor("-c", str(config), "--no-watch", env=env)
        try:
            await proc.start()
            ready = await notify.wait("READY=1")
            start = notify.datagrams[ready].received_usec
            await eventually(lambda: now_usec() - start >= 1_000_000, 3, what="1 s")
            proc.signal(signal.SIGTERM)
            await notify.wait("STOPPING=1")
            assert await proc.wait() == 0, proc.log
            assert not any(d.has("WATCHDOG=1") for d in notify.datagrams), notify.transcript()
        finally:
            await proc.stop()


async def test_notify_abstract_socket(tmp_path, upstream):
    """NOTIFY_SOCKET=@name: a socket in the abstract namespace (what systemd uses)."""
    port = free_port()
    config = write(tmp_path / "config.yaml", basic_config(upstream, port))
    with NotifySocket(f"@veylor-test-{os.getpid()}-{uuid.uuid4().hex}") as notify:
        proc = veylor("-c", str(config), "--no-watch", env=notify.env)
        try:
            await proc.start()
            ready = await notify.wait("READY=1")
            assert STATUS_LINE.match(notify.datagrams[ready].fields.get("STATUS", "")), notify.transcript()
            assert "systemd notify" not in proc.log, proc.log
            proc.signal(signal.SIGTERM)
            await notify.wait("STOPPING=1", after=ready + 1)
            assert await proc.wait() == 0, proc.log
        finally:
            await proc.stop()


# ---------------------------------------------------------------------- --log-format json

API_KEY = "apikey-0123456789"
QUERY_TOKEN = "query-token-abcdef"
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


class RejectingUpstream:
    """An upstream that closes the first connection with a reason that echoes the API key
    it was sent (as some exchanges do), then keeps the next ones."""

    def __init__(self) -> None:
        self.port = free_port()
        self.paths: list[str] = []
        self.keys: list[str | None] = []
        self.reasons: list[str] = []
        self.connections: list[ServerConnection] = []

    async def handler(self, conn: ServerConnection) -> None:
        self.paths.append(conn.request.path)
        key = conn.request.headers.get("X-Api-Key")
        self.keys.append(key)
        if len(self.paths) == 1:
            reason = f"invalid api key {key}"
            self.reasons.append(reason)
            await conn.close(4001, reason)
            return
        self.connections.append(conn)
        try:
            async for _ in conn:
                pass
        except ConnectionClosed:
            pass
        finally:
            self.connections.remove(conn)


@pytest.mark.parametrize("flags", [[], ["-vv", "--trace-frames"]])
async def test_json_logs(tmp_path, flags):
    """Every line is one JSON object (time, level, logger, message); a client's connection
    line names the endpoint and the client; a source's secrets (a header value echoed in
    the upstream's close reason, a token in the URL's query) are in no line."""
    up = RejectingUpstream()
    server = await serve(up.handler, "127.0.0.1", up.port)
    port = free_port()
    config = write(
        tmp_path / "config.yaml",
        f"""
        sources:
          feed:
            url: "ws://127.0.0.1:{up.port}/feed?token=${{QTOKEN}}"
            headers: {{X-Api-Key: "${{APIKEY}}"}}
            reconnect: {{initial_delay: 0.1, max_delay: 0.2}}
        endpoints:
          ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}
          ipc: {{unix: {{path: "{tmp_path / "v.sock"}"}}}}
        routes:
          r: {{from: feed, to: [ws, ipc], upstream: true}}
        """,
    )
    env = {"APIKEY": API_KEY, "QTOKEN": QUERY_TOKEN}
    proc = veylor(*flags, "--log-format", "json", "-c", str(config), "--no-watch", env=env)
    try:
        await proc.start()
        await eventually(lambda: len(up.connections) == 1, 10, what="the second upstream connection")
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        client_address = "{}:{}".format(*client.local_address[:2])
        await proc.wait_for(f"client {client_address} connected", 5)
        await client.send("hello upstream")
        await client.close()
        await proc.wait_for(f"client {client_address} disconnected", 5)
        unix = await UnixClient.connect(tmp_path / "v.sock")
        await proc.wait_for("client unix#", 5)
        await unix.close()
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.log
    finally:
        await proc.stop()
        server.close()
        await server.wait_closed()

    # The secrets really travelled where they could have leaked from.
    assert up.keys[0] == API_KEY and API_KEY in up.reasons[0]
    assert f"token={QUERY_TOKEN}" in up.paths[0]

    assert proc.lines, "no log at all"
    records = []
    for line in proc.lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n{proc.log}")
        assert isinstance(record, dict), line
        for key in ("time", "level", "logger", "message"):
            assert key in record, f"no {key!r} in {line}"
        assert ISO_TIME.match(record["time"]), line
        assert record["level"] in LEVELS, line
        assert isinstance(record["logger"], str) and record["logger"], line
        assert isinstance(record["message"], str), line
        records.append(record)

    connected = [r for r in records if re.search(r"\bclient .* connected \(", r["message"])]
    assert connected, proc.log
    assert connected[0].get("endpoint") == "ws", connected[0]
    assert connected[0].get("client") == client_address, connected[0]
    assert len(connected) == 2, connected
    assert connected[1].get("endpoint") == "ipc", connected[1]
    assert connected[1].get("client", "").startswith("unix#"), connected[1]
    closed = [r for r in records if r.get("source") == "feed" and "4001" in r["message"]]
    assert closed, f"the upstream's close (4001, its reason) is not logged:\n{proc.log}"

    for secret in (API_KEY, QUERY_TOKEN):
        assert secret not in proc.log, f"{secret!r} in the log:\n{proc.log}"
        for record in records:  # decoded too (a secret with JSON escapes in it)
            assert all(secret not in str(value) for value in record.values()), record


async def test_json_logs_name_the_listener(tmp_path, upstream):
    """A line about a listener ("listener 127.0.0.1:PORT: refused ...") gives its whole
    address in ``listener``, as the line names it."""
    port = free_port()
    config = write(
        tmp_path / "config.yaml",
        f"""
        sources:
          feed: {{url: "{upstream.url}"}}
        endpoints:
          ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /only}}}}
        routes:
          r: {{from: feed, to: ws}}
        """,
    )
    proc = veylor("--log-format", "json", "-c", str(config), "--no-watch")
    try:
        await proc.start()
        with pytest.raises(InvalidStatus):
            await ws_client(f"ws://127.0.0.1:{port}/elsewhere")
        line = await proc.wait_for("no endpoint at path /elsewhere", 5)
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.log
    finally:
        await proc.stop()
    record = json.loads(line)
    assert record["message"].startswith(f"listener 127.0.0.1:{port}: "), record
    assert record.get("listener") == f"127.0.0.1:{port}", record


# ---------------------------------------------------------------------- veylor status


async def test_status_of_a_running_veylor(tmp_path, upstream):
    """``veylor status`` (text, then ``--json``) against a running Veylor with ``admin:``:
    each source with its state, each endpoint with its clients, each edge; no secret."""
    port, admin = free_port(), free_port()
    config = write(
        tmp_path / "config.yaml",
        f"""
        admin: {{listen: "127.0.0.1:{admin}"}}
        sources:
          feed:
            url: "{upstream.url}?token=${{QTOKEN}}"
            headers: {{X-Api-Key: "${{APIKEY}}"}}
        endpoints:
          ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}
        routes:
          r: {{from: feed, to: ws}}
        """,
    )
    env = {"APIKEY": API_KEY, "QTOKEN": QUERY_TOKEN}
    proc = veylor("-c", str(config), "--no-watch", env=env)
    try:
        await proc.start()
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        try:
            client_address = "{}:{}".format(*client.local_address[:2])
            await proc.wait_for(f"client {client_address} connected", 5)
            await upstream.send("tick")
            assert await asyncio.wait_for(client.recv(), 5) == "tick"

            text = await asyncio.to_thread(run_veylor, "status", "-c", str(config), timeout=30)
            assert text.returncode == 0, text.stdout + text.stderr
            out = text.stdout
            assert re.search(r"^\s+feed\s+connected\b", out, re.M), out
            assert re.search(r"^\s+ws\s+1 clients?\b", out, re.M), out
            assert re.search(r"^\s+feed -> r -> ws\b", out, re.M), out

            as_json = await asyncio.to_thread(run_veylor, "status", "--json", "-c", str(config), timeout=30)
            assert as_json.returncode == 0, as_json.stdout + as_json.stderr
            view = json.loads(as_json.stdout)
            assert view["schema"] == 1, view
            assert view["pid"] == proc.proc.pid
            assert view["sources"]["feed"]["state"] == "connected", view["sources"]
            ws = view["endpoints"]["ws"]
            assert ws["clients"] == 1, ws
            assert [c["client"] for c in ws["client_list"]] == [client_address], ws
            assert {"source": "feed", "route": "r", "endpoint": "ws"}.items() <= view["edges"][0].items()
            assert upstream.headers[0]["x-api-key"] == API_KEY
            for secret in (API_KEY, QUERY_TOKEN):
                assert secret not in text.stdout + text.stderr, text.stdout
                assert secret not in as_json.stdout + as_json.stderr, as_json.stdout
        finally:
            await client.close()
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.log
    finally:
        await proc.stop()


def test_status_when_veylor_is_not_running(tmp_path):
    admin = free_port()
    config = write(
        tmp_path / "config.yaml",
        basic_config(Upstream(free_port()), free_port(), admin=admin),
    )
    result = run_veylor("status", "-c", str(config), timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"127.0.0.1:{admin}" in result.stdout + result.stderr, result.stdout + result.stderr


def test_status_without_admin_says_how_to_add_it(tmp_path):
    config = write(tmp_path / "config.yaml", basic_config(Upstream(free_port()), free_port()))
    result = run_veylor("status", "-c", str(config), timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert "admin:" in said and "listen" in said, said


# ---------------------------------------------------------------------- what listens


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(int(m.group(1)))
    return inodes


def _address(hex_addr: str) -> tuple[str, int]:
    host, port = hex_addr.split(":")
    words = [int(host[i : i + 8], 16) for i in range(0, len(host), 8)]
    raw = b"".join(struct.pack("=I", w) for w in words)
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw), int(port, 16)


def listening(pid: int) -> dict[str, set]:
    """What process ``pid`` listens on: TCP sockets in state LISTEN, bound UDP sockets,
    Unix stream sockets that accept."""
    inodes = _socket_inodes(pid)
    out: dict[str, set] = {"tcp": set(), "udp": set(), "unix": set()}
    for proto, kind in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 here
            continue
        for line in lines:
            f = line.split()
            if int(f[9]) not in inodes:
                continue
            if kind == "tcp" and f[3] != "0A":
                continue
            out[kind].add(_address(f[1]))
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[6]) in inodes and int(f[3], 16) & 0x10000:  # __SO_ACCEPTCON: listening
            out["unix"].add(f[7] if len(f) > 7 else "(unnamed)")
    return out


async def test_nothing_listens_that_the_configuration_does_not_name(tmp_path, upstream):
    """One WebSocket endpoint and no ``admin:``: the process listens on that port and
    nothing else. ``admin:`` added (reload): its port too; removed: gone again."""
    port, admin = free_port(), free_port()
    config = write(tmp_path / "config.yaml", basic_config(upstream, port))
    proc = veylor("-c", str(config))  # the file watcher runs too
    try:
        await proc.start()
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        await upstream.send("tick")
        assert await asyncio.wait_for(client.recv(), 5) == "tick"
        pid = proc.proc.pid
        assert listening(pid) == {"tcp": {("127.0.0.1", port)}, "udp": set(), "unix": set()}

        write(config, basic_config(upstream, port, admin=admin))
        proc.signal(signal.SIGHUP)
        await proc.wait_for("admin endpoint on", 10)
        await eventually(
            lambda: listening(pid)["tcp"] == {("127.0.0.1", port), ("127.0.0.1", admin)},
            5,
            what=f"the admin port among the listeners: {listening(pid)}",
        )
        assert listening(pid) == {
            "tcp": {("127.0.0.1", port), ("127.0.0.1", admin)},
            "udp": set(),
            "unix": set(),
        }

        write(config, basic_config(upstream, port))
        proc.signal(signal.SIGHUP)
        await eventually(
            lambda: listening(pid)["tcp"] == {("127.0.0.1", port)},
            10,
            what=f"the admin port closed after admin: was removed: {listening(pid)}",
        )
        await client.close()
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0, proc.log
    finally:
        await proc.stop()
