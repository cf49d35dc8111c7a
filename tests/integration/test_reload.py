"""Hot reload touches only what changed: a real Veylor process, real upstreams that count
their connections, real clients that count their messages, real files and signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import textwrap

import pytest
from conftest import run_veylor
from helpers import UnixClient, Upstream, VeylorProcess, eventually, free_port, ws_client
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(90)


class Setup:
    """Two upstreams, a config directory, and the Veylor process under test."""

    def __init__(self, tmp_path):
        self.dir = tmp_path / "etc"
        (self.dir / "routes.d").mkdir(parents=True)
        self.a = Upstream()
        self.b = Upstream()
        self.port1, self.port2 = free_port(), free_port()
        self.sock = str(tmp_path / "ipc.sock")
        self.veylor: VeylorProcess | None = None
        self.reloads = 0

    @property
    def main(self):
        return self.dir / "config.yaml"

    def config(self, filter_symbol: str = "BTC", b_headers: str = "{}", extra: str = "") -> str:
        return textwrap.dedent(
            f"""
            sources:
              a: {{url: "{self.a.url}", reconnect: {{initial_delay: 0.1, max_delay: 0.5}}}}
              b: {{url: "{self.b.url}", headers: {b_headers}, reconnect: {{initial_delay: 0.1, max_delay: 0.5}}}}
            endpoints:
              all: {{websocket: {{port: {self.port1}, path: /all}}}}
              filtered: {{websocket: {{port: {self.port1}, path: /filtered}}}}
              other: {{websocket: {{port: {self.port2}, path: /b}}}}
              ipc: {{unix: {{path: {self.sock}}}}}
            routes:
              all: {{from: a, to: [all, ipc], upstream: true}}
              filtered: {{from: a, to: filtered, filter: {{json: {{path: s, equals: {filter_symbol}}}}}}}
              b: {{from: b, to: other}}
            """
        ) + textwrap.dedent(extra)

    def write(self, text: str, name: str = "config.yaml") -> None:
        """Write like an editor does: a temporary file, then rename over the target."""
        target = self.dir / name
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)

    async def start(self, *args: str) -> VeylorProcess:
        await self.a.start()
        await self.b.start()
        self.main.write_text(self.config())
        self.veylor = await VeylorProcess("-c", str(self.main), *args).start()
        await self.a.wait_connected()
        await self.b.wait_connected()
        return self.veylor

    async def reloaded(self, timeout: float = 10.0) -> str:
        """Wait for the next applied reload's log line."""
        self.reloads += 1
        assert self.veylor is not None
        return await self.veylor.wait_for(f"reload #{self.reloads + 1} (", timeout)

    async def close(self) -> None:
        if self.veylor is not None:
            await self.veylor.stop()
        await self.a.stop()
        await self.b.stop()


@pytest.fixture
async def setup(tmp_path):
    s = Setup(tmp_path)
    yield s
    await s.close()


async def recv_json(conn, timeout: float = 5.0):
    return json.loads(await asyncio.wait_for(conn.recv(), timeout))


async def nothing_arrives(conn, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(conn.recv(), seconds)


async def test_unchanged_source_keeps_connection(setup):
    await setup.start()
    all_client = await ws_client(f"ws://127.0.0.1:{setup.port1}/all")
    other = await ws_client(f"ws://127.0.0.1:{setup.port2}/b")
    setup.write(setup.config(b_headers='{X-Key: "rotated"}'))
    line = await setup.reloaded()
    assert "1 change" in line
    restart = await setup.veylor.wait_for("~ source b: restart (headers)")
    assert restart.endswith("(1 client on its endpoints)")  # the plan says whom it affects
    await setup.b.wait_connected()
    assert setup.b.connects == 2 and setup.b.headers[-1]["x-key"] == "rotated"
    assert setup.a.connects == 1  # the other source kept its connection
    await setup.a.send('{"s": "X", "n": 1}')
    assert (await recv_json(all_client))["n"] == 1  # same socket, still receiving
    await setup.b.send('{"n": 2}')
    assert (await recv_json(other))["n"] == 2  # the restarted source's clients stayed connected too
    assert "rotated" not in setup.veylor.log  # header values never reach the log


async def test_route_filter_change_reconnects_nothing(setup):
    await setup.start()
    filtered = await ws_client(f"ws://127.0.0.1:{setup.port1}/filtered")
    unix = await UnixClient.connect(setup.sock)
    await setup.a.send('{"s": "BTC", "n": 1}')
    assert (await recv_json(filtered))["n"] == 1
    setup.write(setup.config(filter_symbol="ETH"))
    await setup.reloaded()
    await setup.veylor.wait_for("~ route filtered: rewire (filter)")
    await setup.a.send('{"s": "BTC", "n": 2}')
    await setup.a.send('{"s": "ETH", "n": 3}')
    assert (await recv_json(filtered))["n"] == 3  # the new filter applies to the next message
    assert json.loads(await unix.recv())["n"] == 1
    assert json.loads(await unix.recv())["n"] == 2
    assert setup.a.connects == 1 and setup.b.connects == 1
    await unix.close()


async def test_new_dropin_adds_route(setup):
    await setup.start()
    existing = await ws_client(f"ws://127.0.0.1:{setup.port1}/all")
    port = free_port()
    setup.write(
        f"endpoints:\n  new: {{websocket: {{port: {port}, path: /new}}}}\nroutes:\n  new: {{from: b, to: new}}\n",
        "routes.d/50-new.yaml",
    )
    await setup.reloaded()
    await setup.veylor.wait_for("+ route new")
    fresh = await ws_client(f"ws://127.0.0.1:{port}/new")
    await asyncio.sleep(0.1)
    await setup.b.send('{"n": 7}')
    assert (await recv_json(fresh))["n"] == 7
    await setup.a.send('{"n": 8}')
    assert (await recv_json(existing))["n"] == 8
    assert setup.a.connects == 1 and setup.b.connects == 1


async def test_removed_dropin_removes_only_its_components(setup):
    port = free_port()
    await setup.start()
    setup.write(
        f"sources:\n  c: {{url: '{setup.a.url}'}}\n"
        f"endpoints:\n  extra: {{websocket: {{port: {port}, path: /x}}}}\nroutes:\n  extra: {{from: c, to: extra}}\n",
        "routes.d/50-extra.yaml",
    )
    await setup.reloaded()
    await setup.a.wait_connected(2)  # "c" is a second connection to the same upstream
    extra = await ws_client(f"ws://127.0.0.1:{port}/x")
    stays = await ws_client(f"ws://127.0.0.1:{setup.port1}/all")
    (setup.dir / "routes.d" / "50-extra.yaml").unlink()
    line = await setup.reloaded()
    assert "4 changes" in line  # source, endpoint, route, and the listener it alone used
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(extra.recv(), 5)
    assert extra.close_code == 1001 and extra.close_reason == "endpoint removed"
    assert (await setup.veylor.wait_for("- endpoint extra")).endswith("(closed 1 client)")
    await eventually(lambda: len(setup.a.connections) == 1)
    await setup.a.send('{"n": 1}')
    assert (await recv_json(stays))["n"] == 1
    with pytest.raises((OSError, InvalidStatus)):
        await ws_client(f"ws://127.0.0.1:{port}/x")  # its listener is gone
    assert setup.b.connects == 1


async def test_invalid_dropin_keeps_running_graph(setup):
    await setup.start()
    client = await ws_client(f"ws://127.0.0.1:{setup.port1}/all")
    setup.write("routes:\n  broken:\n    from: a\n    to: nowhere\n", "routes.d/60-broken.yaml")
    error = await setup.veylor.wait_for(
        "routes.d/60-broken.yaml:4 routes.broken.to: unknown endpoint 'nowhere'"
    )
    assert "ERROR" in error
    assert "still running generation 1" in setup.veylor.log
    await setup.a.send('{"n": 1}')
    assert (await recv_json(client))["n"] == 1
    setup.write("routes:\n  fixed:\n    from: a\n    to: other\n", "routes.d/60-broken.yaml")
    await setup.reloaded()
    await setup.veylor.wait_for("+ route fixed")
    assert setup.a.connects == 1


async def test_port_in_use_aborts_reload_entirely(setup):
    await setup.start()
    filtered = await ws_client(f"ws://127.0.0.1:{setup.port1}/filtered")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    busy_port = busy.getsockname()[1]
    try:
        # A filter change, and a new endpoint on a port that is taken: neither may apply.
        text = setup.config(filter_symbol="ETH").replace(
            "endpoints:\n", f"endpoints:\n  taken: {{websocket: {{port: {busy_port}}}}}\n"
        )
        setup.write(text)
        line = await setup.veylor.wait_for("aborted")
        assert f"endpoint taken: cannot listen on 127.0.0.1:{busy_port}: address already in use" in line
        assert "nothing was changed" in line
        await setup.a.send('{"s": "BTC", "n": 1}')  # the old filter still applies
        assert (await recv_json(filtered))["n"] == 1
    finally:
        busy.close()


async def test_endpoint_port_change_moves_only_that_listener(setup):
    await setup.start()
    moving = await ws_client(f"ws://127.0.0.1:{setup.port2}/b")
    staying = await ws_client(f"ws://127.0.0.1:{setup.port1}/all")
    new_port = free_port()
    setup.write(setup.config().replace(f"port: {setup.port2}", f"port: {new_port}"))
    await setup.reloaded()
    await setup.veylor.wait_for("~ endpoint other: rebind")
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(moving.recv(), 5)
    moved = await ws_client(f"ws://127.0.0.1:{new_port}/b")
    await asyncio.sleep(0.1)
    await setup.b.send('{"n": 1}')
    assert (await recv_json(moved))["n"] == 1
    await setup.a.send('{"n": 2}')
    assert (await recv_json(staying))["n"] == 2
    assert setup.a.connects == 1 and setup.b.connects == 1


async def test_sighup_reloads(setup):
    await setup.start("--no-watch")
    filtered = await ws_client(f"ws://127.0.0.1:{setup.port1}/filtered")
    setup.main.write_text(setup.config(filter_symbol="ETH"))
    await asyncio.sleep(1.5)
    assert "reload #" not in setup.veylor.log  # --no-watch: no file watching
    setup.veylor.signal(signal.SIGHUP)
    line = await setup.reloaded()
    assert "(SIGHUP)" in line
    await setup.a.send('{"s": "ETH", "n": 1}')
    assert (await recv_json(filtered))["n"] == 1
    setup.veylor.signal(signal.SIGHUP)  # nothing changed since
    await setup.veylor.wait_for("reload (SIGHUP): no changes")


async def test_editor_style_save_reloads_once(setup):
    await setup.start()
    setup.write(setup.config(filter_symbol="ETH"))  # temp file + rename, as editors do
    await setup.reloaded()
    await asyncio.sleep(2.5)
    assert sum("reload #" in line for line in setup.veylor.lines) == 1, setup.veylor.log


async def test_rapid_successive_edits_converge_to_last(setup):
    await setup.start()
    filtered = await ws_client(f"ws://127.0.0.1:{setup.port1}/filtered")
    for i in range(10):
        setup.write(setup.config(filter_symbol=f"S{i}"))
        await asyncio.sleep(0.03)
    await setup.veylor.wait_for("reload #2 (")

    async def settled() -> None:
        while True:
            await setup.a.send('{"s": "S9", "n": 9}')
            try:
                if (await recv_json(filtered, 0.3))["n"] == 9:
                    return
            except TimeoutError:
                pass

    await asyncio.wait_for(settled(), 10)
    await asyncio.sleep(1.5)  # let any queued reload finish
    while True:  # drain duplicates of the probe
        try:
            await asyncio.wait_for(filtered.recv(), 0.2)
        except TimeoutError:
            break
    await setup.a.send('{"s": "S8", "n": 8}')
    await setup.a.send('{"s": "S9", "n": 10}')
    assert (await recv_json(filtered))["n"] == 10
    assert setup.a.connects == 1


async def test_no_message_lost_across_reload(setup):
    await setup.start("--no-watch")
    clients = [await ws_client(f"ws://127.0.0.1:{setup.port1}/all") for _ in range(3)]
    unix = await UnixClient.connect(setup.sock)
    total = 2000
    received: list[list[int]] = [[] for _ in clients]

    async def consume(i, conn):
        while len(received[i]) < total:
            received[i].append(json.loads(await asyncio.wait_for(conn.recv(), 10))["n"])

    consumers = [asyncio.create_task(consume(i, c)) for i, c in enumerate(clients)]

    async def produce():
        for n in range(total):
            await setup.a.send(json.dumps({"s": "X", "n": n}))
            if n % 20 == 0:
                await asyncio.sleep(0.005)

    producer = asyncio.create_task(produce())
    for i in range(20):  # 20 reloads while messages flow: other routes and sources change
        setup.main.write_text(setup.config(filter_symbol=f"F{i}", b_headers=f"{{X-N: '{i}'}}"))
        setup.veylor.signal(signal.SIGHUP)
        await setup.reloaded(15)
    await producer
    await asyncio.wait_for(asyncio.gather(*consumers), 30)
    for got in received:
        assert got == list(range(total))
    unix_got = [json.loads(await unix.recv())["n"] for _ in range(total)]
    assert unix_got == list(range(total))
    assert setup.a.connects == 1
    assert setup.b.connects == 21  # its headers changed every time: restarted each time


async def test_symlinked_config_dir_swap_with_polling(tmp_path):
    """Kubernetes ConfigMap style: the directory's files are symlinks into a versioned
    directory that is swapped by renaming a symlink."""
    up = await Upstream().start()
    port = free_port()
    mount = tmp_path / "mount"
    mount.mkdir()

    def version(name: str, symbol: str) -> None:
        d = mount / name
        d.mkdir()
        (d / "config.yaml").write_text(
            f"sources: {{a: {{url: '{up.url}'}}}}\n"
            f"endpoints: {{e: {{websocket: {{port: {port}}}}}}}\n"
            f"routes: {{r: {{from: a, to: e, filter: {{json: {{path: s, equals: {symbol}}}}}}}}}\n"
        )

    version("..v1", "BTC")
    (mount / "..data").symlink_to("..v1")
    (mount / "config.yaml").symlink_to("..data/config.yaml")
    veylor = await VeylorProcess("-c", str(mount / "config.yaml"), "--watch", "poll").start()
    try:
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        version("..v2", "ETH")
        (mount / "..data_tmp").symlink_to("..v2")
        os.replace(mount / "..data_tmp", mount / "..data")
        await veylor.wait_for("reload #2 (", 10)
        await up.send('{"s": "BTC", "n": 1}')
        await up.send('{"s": "ETH", "n": 2}')
        assert (await recv_json(client))["n"] == 2
    finally:
        await veylor.stop()
        await up.stop()


def test_check_against_prints_the_plan(tmp_path):
    old = tmp_path / "old.yaml"
    new = tmp_path / "new.yaml"
    base = "sources: {a: {url: 'ws://127.0.0.1:1/'}}\nendpoints: {e: {websocket: {port: 9001}}}\n"
    old.write_text(base + "routes: {r: {from: a, to: e}}\n")
    new.write_text(base + "routes: {r: {from: a, to: e, filter: {type: text}}, s: {from: a, to: e}}\n")
    result = run_veylor("check", "-c", str(new), "--against", str(old), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"A reload from {old} to {new} would:",
        "  + route s",
        "  ~ route r: rewire (filter)",
    ]
    as_json = run_veylor("check", "-c", str(new), "--against", str(old), "--json", cwd=tmp_path)
    assert json.loads(as_json.stdout) == {
        "ok": True,
        "empty": False,
        "plan": ["+ route s", "~ route r: rewire (filter)"],
        "steps": [{"op": "swap_routes", "name": "", "detail": []}],
    }


async def test_endpoint_losing_all_routes_keeps_its_clients(setup):
    await setup.start()
    other = await ws_client(f"ws://127.0.0.1:{setup.port2}/b")
    no_route = setup.config().replace("  b: {from: b, to: other}\n", "")
    setup.write(no_route)
    await setup.reloaded()
    await setup.veylor.wait_for("- route b")
    await setup.b.send('{"n": 1}')
    await nothing_arrives(other)  # connected, receiving nothing
    setup.write(setup.config())
    await setup.reloaded()
    await setup.b.send('{"n": 2}')
    assert (await recv_json(other))["n"] == 2  # the same socket, once the route is back
    assert setup.b.connects == 1
