"""No client, upstream message or file can hurt the others.

Each attack runs against a real Veylor process while a witness (``tests/monitor.py``, a
process of its own: an upstream sending 200 msg/s and a control client of the same
source) checks that the control client lost nothing and never waited more than
``MAX_GAP_MS`` between two messages. The attacks come from this test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import VeylorProcess, eventually, free_port, raw_handshake, ws_client
from websockets.exceptions import InvalidStatus

pytestmark = [pytest.mark.timeout(120), pytest.mark.latency]  # (the witness's gaps: see conftest)

MONITOR = Path(__file__).resolve().parents[1] / "monitor.py"
MAX_GAP_MS = 100.0  # between two of the control client's messages (the feed: one every 5 ms)


class Witness:
    """The monitor process: an upstream feed and a control client."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> Witness:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(MONITOR), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        line = await self._line()
        self.port = int(line.split()[1])
        return self

    async def _line(self, timeout: float = 15) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise AssertionError("the monitor exited")
        return line.decode().strip()

    async def command(self, text: str) -> str:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._line()

    async def report(self) -> dict:
        return json.loads(await self.command("report"))

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(Exception):
                self.proc.stdin.write(b"quit\n")  # type: ignore[union-attr]
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Arena:
    """A Veylor process with the witness's feed routed to a control endpoint and to
    endpoints the attacks use."""

    def __init__(
        self, tmp_path: Path, witness: Witness, endpoints: str = "", routes: str = "", head: str = ""
    ) -> None:
        self.tmp = tmp_path
        self.witness = witness
        self.port = free_port()
        self.config = tmp_path / "config.yaml"
        self.config.write_text(
            textwrap.dedent(head)
            + textwrap.dedent(
                f"""
                sources:
                  feed: {{url: "ws://127.0.0.1:{witness.port}/feed"}}
                endpoints:
                  control: {{websocket: {{host: 127.0.0.1, port: {self.port}, path: /control}}}}
                """
            )
            + textwrap.indent(textwrap.dedent(endpoints).replace("PORT", str(self.port)), "  ")
            + "routes:\n  control: {from: feed, to: control}\n"
            + textwrap.indent(textwrap.dedent(routes), "  ")
        )
        self.veylor: VeylorProcess | None = None

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def start(self, *args: str) -> Arena:
        self.veylor = await VeylorProcess("-c", str(self.config), *args).start()
        assert await self.witness.command(f"connect {self.url('/control')}") == "connected"
        await asyncio.sleep(0.3)
        assert await self.witness.command("reset") == "ok"
        return self

    async def unharmed(self) -> dict:
        """The control client lost nothing and never waited long."""
        await asyncio.sleep(0.2)
        report = await self.witness.report()
        assert report["closed"] is None, report
        assert report["lost"] == 0 and report["reordered"] == 0, report
        assert report["received"] > 0, report
        assert report["max_gap_ms"] < MAX_GAP_MS, report
        assert report["connections"] == 1 and report["upstream_errors"] == [], report  # the feed held
        return report


@pytest.fixture
async def witness():
    w = await Witness().start()
    yield w
    await w.stop()


@pytest.fixture
async def arena(tmp_path, witness):
    arenas: list[Arena] = []

    async def make(
        endpoints: str = "", routes: str = "", args: tuple[str, ...] = (), head: str = ""
    ) -> Arena:
        a = await Arena(tmp_path, witness, endpoints, routes, head).start(*args)
        arenas.append(a)
        return a

    yield make
    for a in arenas:
        if a.veylor is not None:
            await a.veylor.stop()


# ------------------------------------------------------------------ clients


async def _abort_at(port: int, path: str, stage: int) -> None:
    """Open a connection and leave at ``stage``: 0 at once, 1 mid-request, 2 right after
    the request, 3 a moment later, 4 after the response; even stages with a TCP reset."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    request = raw_handshake(path)
    try:
        if stage == 1:
            writer.write(request[:25])
        elif stage >= 2:
            writer.write(request)
        await writer.drain()
        if stage == 3:
            await asyncio.sleep(0.001)
        elif stage == 4:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        if stage % 2 == 0:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        pass
    if stage % 2 == 0:
        writer.transport.abort()
    else:
        writer.close()


def _holders(conn: object, ignore: list) -> str:
    """What keeps ``conn`` (a DownstreamConnection) in memory, for a failure message: its
    state, and each referrer (but ``ignore``, the test's own list) with what refers to that
    in turn, by type and by the attribute or key that holds it (an object's ``__dict__``
    is named by its class: ``PendingHandshakes.conns``, ``Budget.watched``)."""
    proto = getattr(conn, "protocol", None)
    transport = getattr(conn, "transport", None)
    state = {
        "label": getattr(conn, "label", "?"),
        "made": getattr(conn, "made", None),
        "closed": getattr(conn, "closed", None),
        "protocol": None if proto is None else proto.state.name,
        "pending": getattr(conn, "listener", None) is not None,
        "handshake_timer": getattr(conn, "handshake_timer", None) is not None,
        "endpoint": getattr(getattr(conn, "endpoint", None), "name", None),
        "transport_closing": None if transport is None else transport.is_closing(),
    }
    refs = gc.get_referrers(conn)
    skip = {id(ignore), id(refs), id(sys._getframe()), id(sys._getframe(1))}  # (not holders)
    held = []
    for ref in refs:
        if id(ref) in skip:
            continue
        what = type(ref).__name__
        if isinstance(ref, dict):
            what += " (as a key)" if conn in ref else f" (at {_keys_of(ref, conn)})"
        owners = []
        for owner in gc.get_referrers(ref):
            if id(owner) not in skip:
                owners.append(_owner(owner, ref, skip))
        held.append(f"{what} <- {', '.join(owners) or 'nothing the collector sees'}")
    return f"{state} held by [{'; '.join(held)}]"


def _keys_of(mapping: dict, value: object) -> list:
    keys = []
    for k, v in mapping.items():
        if v is value:
            keys.append(k)
    return keys[:3]


def _owner(owner: object, ref: object, skip: set[int]) -> str:
    """``owner``, which refers to ``ref``: its type and where it holds it; an object's
    ``__dict__`` is named by the object's class and the attribute."""
    if isinstance(owner, dict):
        keys = _keys_of(owner, ref)
        for obj in gc.get_referrers(owner):
            if id(obj) not in skip and _dict_of(obj) is owner:
                return f"{type(obj).__name__}.{','.join(map(str, keys))}"
        return f"dict{keys}"
    attrs = _keys_of(_dict_of(owner) or {}, ref)
    return type(owner).__name__ + (f".{','.join(attrs)}" if attrs else "")


def _dict_of(obj: object) -> dict | None:
    try:
        return getattr(obj, "__dict__", None)
    except Exception:  # (a dead weakref.proxy raises ReferenceError)
        return None


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_aborted_handshakes_never_count_as_clients(tmp_path):
    """200 clients that drop mid-handshake used to leave max_clients phantom entries:
    every real client then got HTTP 503."""
    from helpers import Upstream, veylor_inprocess

    from veylor.runtime.downstream import DownstreamConnection

    up = await Upstream().start()
    port = free_port()
    config = f"""
sources: {{up: {{url: "{up.url}"}}}}
endpoints: {{ws: {{websocket: {{port: {port}}}, max_clients: 50}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    try:
        async with veylor_inprocess(tmp_path, config) as rt:
            ep = rt.endpoints["ws"]
            await up.wait_connected()
            fds = _open_fds()
            for round_ in range(10):  # 2,000 connections, each leaving at one of five stages
                await asyncio.gather(*(_abort_at(port, "/", (round_ + i) % 5) for i in range(200)))
                await eventually(lambda: not ep.clients, timeout=10, what="no clients left")
            # Admission still works, up to max_clients and not beyond.
            clients = [await ws_client(f"ws://127.0.0.1:{port}/") for _ in range(50)]
            assert len(ep.clients) == 50
            with pytest.raises(InvalidStatus) as refused:
                await ws_client(f"ws://127.0.0.1:{port}/")
            assert refused.value.response.status_code == 503
            for c in clients:
                await c.close()
            await eventually(lambda: not ep.clients, timeout=10, what="clients gone")
            await eventually(lambda: _open_fds() <= fds, timeout=10, what="file descriptors back")

            def alive() -> list:
                gc.collect()
                # (type(), not isinstance(): a dead weakref.proxy among the objects would raise)
                return [o for o in gc.get_objects() if type(o) is DownstreamConnection]

            try:
                await eventually(lambda: not alive(), timeout=5, interval=0.2, what="connections freed")
            except AssertionError:
                leftover = alive()
                held = "; ".join([_holders(o, leftover) for o in leftover])
                raise AssertionError(f"{len(leftover)} connections in memory: {held}") from None
    finally:
        await up.stop()


@pytest.mark.slow  # a load test: floods, or hundreds of clients (the quick loop leaves it to the full suite)
async def test_churning_clients_do_not_disturb_a_control_client(arena):
    a = await arena()
    for round_ in range(5):
        await asyncio.gather(*(_abort_at(a.port, "/control", (round_ + i) % 5) for i in range(200)))
    await a.unharmed()


def client_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    """A masked client-to-server WebSocket frame (RFC 6455 5.2), built by hand: a real
    client library would refuse to send invalid UTF-8."""
    mask = b"\x11\x22\x33\x44"
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_client(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw_handshake(path))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def close_code(reader: asyncio.StreamReader) -> int | None:
    """Read server frames until a close frame; its code (None if the connection ends first)."""
    try:
        while True:
            b0, b1 = await asyncio.wait_for(reader.readexactly(2), 5)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await reader.readexactly(8), "big")
            payload = await reader.readexactly(n)
            if b0 & 0x0F == 8:
                return int.from_bytes(payload[:2], "big")
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        return None


async def test_invalid_utf8_from_a_client_closes_it_with_1007_and_never_goes_upstream(tmp_path, witness):
    sock = tmp_path / "lines.sock"
    a = Arena(
        tmp_path,
        witness,
        endpoints=f"""
attack: {{websocket: {{host: 127.0.0.1, port: PORT, path: /attack}}}}
lines: {{unix: {{path: {sock}, framing: lines}}}}
""",
        routes="attack: {from: feed, to: [attack, lines], upstream: true}\n",
    )
    await a.start()
    try:
        before = (await witness.report())["upstream_received"]
        for _ in range(40):  # the report: 40 such frames in 20 s starved everyone
            reader, writer = await raw_client(a.port, "/attack")
            writer.write(client_frame(b"bad \xff\xfe text"))
            await writer.drain()
            assert await close_code(reader) == 1007
            writer.close()
        # Split across fragments, the bytes of one character: still invalid, still refused.
        reader, writer = await raw_client(a.port, "/attack")
        writer.write(client_frame(b"ok \xe2\x82", fin=False) + client_frame(b"\xff", opcode=0))
        await writer.drain()
        assert await close_code(reader) == 1007
        writer.close()
        # A valid message split inside a character goes through.
        reader, writer = await raw_client(a.port, "/attack")
        writer.write(client_frame(b"euro \xe2\x82", fin=False) + client_frame(b"\xac", opcode=0))
        await writer.drain()
        # Unix lines: a line that is not UTF-8 closes that client and goes nowhere.
        ur, uw = await asyncio.open_unix_connection(str(sock))
        uw.write(b"fine line\n\xff\xfe not text\nnever read\n")
        await uw.drain()
        await asyncio.wait_for(ur.read(), 5)  # returns at end of stream: Veylor closed it
        report = await a.unharmed()
        assert report["upstream_received"] - before == 2, report  # the euro sign and "fine line"
        assert "invalid" not in " ".join(report["upstream_errors"])
        writer.close()
        uw.close()
        assert a.veylor is not None
        assert "not valid UTF-8" in a.veylor.log
        # Rate limited: 42 closed clients, a handful of lines.
        assert sum("not valid UTF-8" in line for line in a.veylor.lines) <= 3
    finally:
        if a.veylor is not None:
            await a.veylor.stop()


async def test_invalid_utf8_from_the_upstream_is_dropped_not_relayed_as_text(arena):
    """Relayed as text, it made every standard client close with 1007."""
    a = await arena()
    bad_text_frame = b"\x81\x06bad\xff\xfe!"
    for _ in range(40):
        assert await a.witness.command(f"raw {bad_text_frame.hex()}") == "ok"
        await asyncio.sleep(0.01)
    report = await a.unharmed()  # the control client (a websockets client) was not closed
    assert report["closed"] is None
    assert a.veylor is not None
    line = await a.veylor.wait_for("not valid UTF-8")
    assert "source feed" in line and "dropped" in line


async def test_a_ping_flood_closes_that_client_with_1008(arena):
    a = await arena()
    reader, writer = await raw_client(a.port, "/control")
    for _ in range(400):
        writer.write(client_frame(b"p" * 125, opcode=9))
    await writer.drain()
    assert await close_code(reader) == 1008
    writer.close()
    await a.unharmed()
    assert a.veylor is not None and "more than 50 pings or pongs in a second" in a.veylor.log


async def test_a_client_that_pings_and_never_reads_is_disconnected_whatever_the_policy(tmp_path):
    """Pongs queued for a client that never reads used to grow without bound (+141 MiB
    in 4 s on an endpoint with no route). They count against client_buffer, and a
    client whose own pings fill it is disconnected, even with slow_client: drop."""
    from helpers import Upstream, veylor_inprocess

    up = await Upstream().start()
    port = free_port()
    config = f"""
sources: {{up: {{url: "{up.url}"}}}}
endpoints:
  quiet: {{websocket: {{port: {port}}}, client_buffer: 1KiB, slow_client: drop}}
routes: {{}}
"""
    try:
        async with veylor_inprocess(tmp_path, config) as rt:
            ep = rt.endpoints["quiet"]
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # before connecting: the window
            sock.connect(("127.0.0.1", port))
            sock.sendall(raw_handshake("/"))
            await eventually(lambda: len(ep.clients) == 1, what="connected")
            # Shrink the kernel's send buffer for this client (to about 4 KiB): what the
            # kernel holds, Veylor does not queue, and the test would take minutes.
            (conn,) = ep.clients
            conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2048)
            sock.setblocking(False)
            closed = False
            for _ in range(600):  # 40 pings a second, under the rate cap; never reads
                try:
                    sock.send(client_frame(b"p" * 125, opcode=9))
                except (BlockingIOError, ConnectionError):
                    closed = True
                    break
                await asyncio.sleep(0.025)
                if ep.stats.control_closed:
                    break
            assert ep.stats.control_closed == 1 or closed
            await eventually(lambda: not ep.clients, what="the client gone")
            sock.close()
    finally:
        await up.stop()


async def test_a_catastrophic_regex_route_cannot_stall_the_relay(arena):
    """(a+)+$ with one crafted 26-character value froze every client for 3 s."""
    a = await arena(
        endpoints="filtered: {websocket: {host: 127.0.0.1, port: PORT, path: /filtered}}\n",
        routes="filtered: {from: feed, to: filtered, filter: {json: {path: s, regex: '(a+)+$'}}}\n",
    )
    for n in (26, 30, 40):
        crafted = json.dumps({"s": "a" * n + "!"})
        assert await a.witness.command(f"send {crafted}") == "ok"
    await a.unharmed()


# ------------------------------------------------------------------ files


def alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


async def test_hostile_files_in_routes_d_cost_the_relay_nothing(arena, tmp_path):
    """An alias bomb (548 bytes) froze every client for 24 s and SIGTERM did not stop the
    process in 5 s; a 50 MB file froze delivery for 47 s; deep nesting crashed check."""
    a = await arena()
    (tmp_path / "routes.d").mkdir()
    assert a.veylor is not None
    hostile = {
        "10-bomb.yaml": (alias_bomb(), "more than 250,000 values (each use of an alias"),
        "20-huge.yaml": ("# " + "x" * (5 * 2**20) + "\n", "is larger than 4 MiB"),
        "30-deep.yaml": ("x: " + "[" * 10000 + "]" * 10000 + "\n", "nesting depth"),
        "40-many.yaml": ("x: [" + ",".join(["1"] * 600_000) + "]\n", "lines and commas: refused unread"),
    }
    for name, (text, problem) in hostile.items():
        tmp = tmp_path / "routes.d" / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, tmp_path / "routes.d" / name)
        line = await a.veylor.wait_for(problem, 15)
        assert name in line
        (tmp_path / "routes.d" / name).unlink()
        await a.veylor.wait_for("valid again", 15, count=len(a.veylor.log.split("valid again")))
    assert "Traceback" not in a.veylor.log
    await a.unharmed()
    # And it still stops promptly.
    (tmp_path / "routes.d" / "10-bomb.yaml").write_text(alias_bomb())
    await asyncio.sleep(0.1)  # the bomb's reload under way
    started = asyncio.get_running_loop().time()
    a.veylor.signal()
    assert await a.veylor.wait(10) == 0
    assert asyncio.get_running_loop().time() - started < 5


# ------------------------------------------------------------------ memory


def stalled(port: int, path: str = "/", mss: int | None = None) -> socket.socket:
    """A client that completes the handshake and never reads again (small receive buffer,
    set before connecting, so that the kernel holds little for it; ``mss``: segments of an
    Internet path's size rather than loopback's 64 KiB)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if mss is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    sock.connect(("127.0.0.1", port))
    sock.sendall(raw_handshake(path))
    return sock


@pytest.mark.slow  # a load test: floods, or hundreds of clients (the quick loop leaves it to the full suite)
@pytest.mark.parametrize("policy", ["disconnect", "drop", "conflate"])
async def test_the_process_wide_buffer_limit_applies_to_the_clients_holding_the_most(tmp_path, policy):
    """2,000 stalled clients, each within its own client_buffer, held 0.5 GiB: limits.buffered
    bounds the sum; the heaviest get their endpoint's policy first, the others keep going."""
    from helpers import Upstream, veylor_inprocess

    up = await Upstream().start()
    port = free_port()
    config = f"""
limits: {{buffered: 8MiB}}
sources: {{up: {{url: "{up.url}"}}}}
endpoints:
  ws: {{websocket: {{port: {port}}}, slow_client: {policy}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    try:
        async with veylor_inprocess(tmp_path, config) as rt:
            ep = rt.endpoints["ws"]
            assert rt.budget.limit == 8 * 2**20
            await up.wait_connected()
            socks = [stalled(port) for _ in range(60)]
            reader = await ws_client(f"ws://127.0.0.1:{port}/", max_size=None, max_queue=None)
            await eventually(lambda: len(ep.clients) == 61)
            got: list[str] = []

            arrived = asyncio.Event()

            async def consume() -> None:
                async for message in reader:
                    got.append(message)
                    arrived.set()

            consuming = asyncio.create_task(consume())
            payload = "m" * 20_000
            for i in range(300):  # 6 MB per client: 360 MB if nobody stepped in
                await up.send(f"{i:04d}{payload}")
                # The reader keeps up: never more than 5 messages (100 kB) behind. On a
                # machine starved of CPU (the suite runs in parallel) it could fall behind
                # until its own kernel buffer filled, and then be a laggard like the others.
                while len(got) < i - 4:
                    arrived.clear()
                    await asyncio.wait_for(arrived.wait(), 10)
            await eventually(lambda: len(got) == 300, timeout=30, what="the reader got everything")
            assert [int(m[:4]) for m in got] == list(range(300))
            assert ep.stats.memory_limited > 0 and rt.budget.enforced > 0
            # Closed either way: with drop, a client whose data the limit stopped and that
            # still takes nothing is closed (it would hold its kernel buffer until its
            # stall_timeout).
            await eventually(lambda: len(ep.clients) < 61, what="stalled clients closed")
            if policy == "drop":
                assert ep.stats.stalled_closed > 0
            peak = rt.budget.peak
            for s in socks:
                s.close()
            await eventually(lambda: len(ep.clients) == 1, timeout=15, what="stalled clients gone")
            await eventually(lambda: not rt.budget.watched, timeout=5, what="no laggards left")
            # The sum stayed within twice the limit (plus one client's pass), far from the
            # 240 MiB that the clients' own client_buffer (4 MiB) would have allowed.
            assert peak < 2 * 8 * 2**20 + 2**20, peak
            consuming.cancel()
            await reader.close()
    finally:
        await up.stop()


@pytest.mark.slow  # a load test: floods, or hundreds of clients (the quick loop leaves it to the full suite)
async def test_stalled_clients_do_not_disturb_a_control_client(arena):
    a = await arena(
        endpoints="stall: {websocket: {host: 127.0.0.1, port: PORT, path: /stall}}\n",
        routes="stall: {from: feed, to: stall}\n",
    )
    # 100 clients that never read, sent 1.5 MB each in 0.6 s. (Beyond what the limits let
    # them hold, stalled clients cost the event loop about 1 ms per MB written to them
    # until the limits cut them off: 300 of them here gave gaps of 100-360 ms.)
    socks = [stalled(a.port, "/stall") for _ in range(100)]
    await asyncio.sleep(0.5)  # (100 handshakes at once cost the loop about 0.3 ms each)
    assert await a.witness.command("reset") == "ok"
    for _ in range(30):  # big messages: the stalled clients fill up fast
        assert await a.witness.command("send " + json.dumps({"pad": "z" * 50_000})) == "ok"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    await a.unharmed()
    for s in socks:
        s.close()


async def test_each_client_socket_gets_the_configured_kernel_send_buffer(tmp_path, upstream):
    """Left to itself, Linux grows a TCP send buffer to several MiB: copying that much
    for clients that never read stalled the loop for 100 ms (300 such clients)."""
    from helpers import veylor_inprocess

    port = free_port()
    sock_path = tmp_path / "u.sock"
    config = f"""
sources: {{up: {{url: "{upstream.url}"}}}}
endpoints:
  ws: {{websocket: {{port: {port}}}}}
  big: {{websocket: {{port: {port}, path: /big}}, socket_buffer: 1MiB}}
  kernel: {{websocket: {{port: {port}, path: /kernel}}, socket_buffer: null}}
  ux: {{unix: {{path: {sock_path}}}}}
routes: {{r: {{from: up, to: [ws, big, kernel, ux]}}}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        clients = [await ws_client(f"ws://127.0.0.1:{port}{p}") for p in ("/", "/big", "/kernel")]
        _reader, writer = await asyncio.open_unix_connection(str(sock_path))

        def sndbuf(name: str) -> int:
            (conn,) = rt.endpoints[name].clients
            return conn.transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)

        await eventually(
            lambda: all(len(rt.endpoints[n].clients) == 1 for n in ("ws", "big", "kernel", "ux"))
        )
        assert sndbuf("ws") == 2 * 64 * 1024  # Linux doubles what it is given
        assert sndbuf("big") == 2 * 2**20
        assert sndbuf("ux") == 2 * 64 * 1024
        assert sndbuf("kernel") not in (2 * 64 * 1024, 2 * 2**20)  # the kernel's own
        # What the budget counts for a client whose kernel buffer is full (0: read then).
        assert [next(iter(rt.endpoints[n].clients)).sndbuf for n in ("ws", "big", "ux", "kernel")] == [
            2 * 64 * 1024,
            2 * 2**20,
            2 * 64 * 1024,
            0,
        ]
        for c in clients:
            await c.close()
        writer.close()


# ------------------------------------------------------------------ the kernel's memory

SOCKET_BUFFER = 64 * 1024  # the default socket_buffer
# What one client that reads nothing may make the kernel hold on Veylor's side: its send
# buffer (socket_buffer, which Linux doubles; measured: that plus 1%) and what the socket
# keeps in reserve. (The stalled client's own receive buffer is on its side: not counted.)
KERNEL_EACH = 2 * SOCKET_BUFFER + 16 * 1024
STALLED = 300
needs_ss = pytest.mark.skipif(
    shutil.which("ss") is None, reason="reads the kernel's memory of Veylor's sockets with ss (iproute2)"
)


def kernel_held(port: int) -> tuple[int, int]:
    """Veylor's established TCP sockets on ``port``: how many, and the memory the kernel
    holds for them (``ss -tm``: receive queue, send queue, in transmission, reserved).
    ``ss`` runs at the lowest priority (nice 19 more than this test's): listing 600
    sockets ten times a second, it must not take the CPU from the Veylor it measures."""
    out = subprocess.run(
        ["nice", "-n", "19", "ss", "-tmnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    count = held = 0
    for skmem in re.findall(r"skmem:\(([^)]*)\)", out):
        fields = dict(re.match(r"([a-z]+)(\d+)", f).groups() for f in skmem.split(","))  # type: ignore[union-attr]
        count += 1
        held += sum(int(fields.get(k, 0)) for k in ("r", "t", "f", "w"))
    return count, held


async def watch_kernel(port: int, until: float, done) -> tuple[int, int, list[tuple[float, int, int]]]:
    """Sample :func:`kernel_held` every 0.1 s until ``done(count)`` or ``until`` (loop time):
    the peak held, the last count, and every sample (time, count, held)."""
    loop = asyncio.get_running_loop()
    samples: list[tuple[float, int, int]] = []
    peak = count = 0
    while loop.time() < until:
        count, held = await asyncio.to_thread(kernel_held, port)
        samples.append((loop.time(), count, held))
        peak = max(peak, held)
        if done(count):
            break
        await asyncio.sleep(0.1)
    return peak, count, samples


def stalled_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return sock


def closed_by_veylor(sock: socket.socket) -> bool:
    """Whether Veylor closed this client (what it had sent is read, then the end), without
    blocking: a client still served never reaches the end."""
    sock.setblocking(False)
    try:
        for _ in range(10_000):
            if not sock.recv(1 << 20):
                return True
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True
    return False


@pytest.mark.slow  # a load test: floods, or hundreds of clients (the quick loop leaves it to the full suite)
@needs_ss
async def test_stalled_clients_hold_little_kernel_memory_and_go_at_stall_timeout(arena, tmp_path):
    """Was a bug (issue 22, 7). 2,000 clients that read nothing, each with a 512 KiB
    ``socket_buffer`` (1 MiB in the kernel), took 1.7 GiB of the host's TCP memory, past
    ``tcp_mem``'s pressure line, where every TCP user of the host suffers; they stayed
    until a byte limit was reached, or for good with limits that were not. Now each makes
    the kernel hold its send buffer at most (``socket_buffer`` 64 KiB, doubled), and
    clients that read nothing while data waits for them go after ``stall_timeout``,
    Unix clients too. Neither ``client_buffer`` nor ``limits.buffered`` is reached here:
    the stall timeout is what acts. 300 clients at 1 KiB messages, 1,000 a second."""
    sock_path = tmp_path / "stall.sock"
    a = await arena(
        head="limits: {buffered: 2GiB}\n",
        endpoints=f"""
        stall: {{websocket: {{host: 127.0.0.1, port: PORT, path: /stall}}, client_buffer: 64MiB, stall_timeout: 2}}
        ustall: {{unix: {{path: "{sock_path}"}}, client_buffer: 64MiB, stall_timeout: 2}}
        """,
        routes="stall: {from: feed, to: [stall, ustall]}\n",
    )
    loop = asyncio.get_running_loop()
    assert await a.witness.command("feed 1000 1000") == "ok"
    socks = await asyncio.to_thread(lambda: [stalled(a.port, "/stall", mss=1400) for _ in range(STALLED)])
    units = [stalled_unix(sock_path) for _ in range(20)]
    connected = loop.time()
    assert await a.witness.command("reset") == "ok"
    try:
        peak, count, samples = await watch_kernel(
            a.port, connected + 2 + 4, lambda n: n <= 1 and loop.time() > connected + 1
        )
        took = loop.time() - connected
        most = max(n for _, n, _ in samples)
        assert most > STALLED * 0.9, f"only {most} connections seen on Veylor's side"
        assert count == 1, (
            f"{count - 1} of {STALLED} stalled clients still connected {took:.1f} s after they connected "
            "(stall_timeout: 2 s)"
        )
        assert peak <= STALLED * KERNEL_EACH + 2**20, (
            f"Veylor's sockets made the kernel hold {peak / 2**20:.1f} MiB for {STALLED} stalled clients, "
            f"over {STALLED} x {KERNEL_EACH // 1024} KiB"
        )
        assert all(closed_by_veylor(u) for u in units), "a stalled Unix client is still served"
        assert "stall_timeout 2s" in a.veylor.log  # type: ignore[union-attr]
        await a.unharmed()
    finally:
        for s_ in socks + units:
            s_.close()


@pytest.mark.slow  # a load test: floods, or hundreds of clients (the quick loop leaves it to the full suite)
@needs_ss
async def test_the_buffer_limit_counts_what_the_kernel_holds(arena):
    """Was a bug (issue 22, 7). ``limits.buffered`` counted Veylor's own buffers only,
    and only clients holding more than 64 KiB there: stalled clients whose Veylor buffer
    stays small (``client_buffer`` 32 KiB, ``slow_client: drop``) each made the kernel
    hold their whole send buffer beside it, uncounted, however many. Here 300 x 128 KiB
    (37.5 MiB; 300 MiB with the former 512 KiB default) against a 16 MiB limit, with a
    ``stall_timeout`` too long to matter. Now the kernel's bytes count: those that read
    nothing are dropped for, then closed, until the whole is within the limit."""
    a = await arena(
        head="limits: {buffered: 16MiB}\n",
        endpoints="""
        stall: {websocket: {host: 127.0.0.1, port: PORT, path: /stall}, client_buffer: 32KiB, slow_client: drop,
                stall_timeout: 60}
        """,
        routes="stall: {from: feed, to: stall}\n",
    )
    loop = asyncio.get_running_loop()
    assert await a.witness.command("feed 1000 1000") == "ok"
    socks = await asyncio.to_thread(lambda: [stalled(a.port, "/stall", mss=1400) for _ in range(STALLED)])
    connected = loop.time()
    assert await a.witness.command("reset") == "ok"
    try:
        _peak, count, samples = await watch_kernel(a.port, connected + 4, lambda n: False)
        settled = [held for t, _, held in samples if t > connected + 2]
        assert settled and max(settled) <= 16 * 2**20 + 2**20, (
            f"Veylor's sockets made the kernel hold up to {max(settled) / 2**20:.1f} MiB after 2 s "
            f"(limits.buffered: 16 MiB; {count - 1} stalled clients connected)"
        )
        assert "limits.buffered is reached" in a.veylor.log  # type: ignore[union-attr]
        await a.unharmed()
    finally:
        for s_ in socks:
            s_.close()
