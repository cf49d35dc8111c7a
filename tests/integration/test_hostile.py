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
import socket
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import VeylorProcess, eventually, free_port, raw_handshake, ws_client
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(120)

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

    def __init__(self, tmp_path: Path, witness: Witness, endpoints: str = "", routes: str = "") -> None:
        self.tmp = tmp_path
        self.witness = witness
        self.port = free_port()
        self.config = tmp_path / "config.yaml"
        self.config.write_text(
            textwrap.dedent(
                f"""
                sources:
                  feed: {{url: "ws://127.0.0.1:{witness.port}/feed"}}
                endpoints:
                  control: {{websocket: {{host: 127.0.0.1, port: {self.port}, path: /control}}}}
                """
            )
            + textwrap.indent(textwrap.dedent(endpoints), "  ")
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
        return report


@pytest.fixture
async def witness():
    w = await Witness().start()
    yield w
    await w.stop()


@pytest.fixture
async def arena(tmp_path, witness):
    arenas: list[Arena] = []

    async def make(endpoints: str = "", routes: str = "", args: tuple[str, ...] = ()) -> Arena:
        a = await Arena(tmp_path, witness, endpoints, routes).start(*args)
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


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_aborted_handshakes_never_count_as_clients(tmp_path):
    """200 clients that drop mid-handshake used to leave max_clients phantom entries:
    every real client then got HTTP 503."""
    from helpers import Upstream, veylor_inprocess

    from veylor.runtime.endpoints import DownstreamConnection

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
                return [o for o in gc.get_objects() if isinstance(o, DownstreamConnection)]

            try:
                await eventually(lambda: not alive(), timeout=5, interval=0.2, what="connections freed")
            except AssertionError:
                leftover = alive()
                refs = [type(r).__name__ for o in leftover for r in gc.get_referrers(o)]
                raise AssertionError(f"{len(leftover)} connections in memory, held by {refs}") from None
    finally:
        await up.stop()


async def test_churning_clients_do_not_disturb_a_control_client(arena):
    a = await arena()
    for round_ in range(5):
        await asyncio.gather(*(_abort_at(a.port, "/control", (round_ + i) % 5) for i in range(200)))
    await a.unharmed()
