"""Veylor as a real process: signals, exit codes, startup failures, 1.x files, the demo,
and a real third-party upstream (websocketd)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import textwrap
import time

import pytest
from conftest import run_veylor
from helpers import UnixClient, Upstream, VeylorProcess, eventually, free_port, stalled_ws_client, ws_client
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.timeout(60)

# Python prints these when a program leaves tasks or transports behind at exit.
LEAKS = ("Task was destroyed", "unclosed", "Exception ignored", "Traceback", "never awaited")
DEV_ENV = {"PYTHONWARNINGS": "default"}


def write(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


async def test_sigterm_with_clients_exits_0_quickly_and_cleans_up(tmp_path):
    up = await Upstream().start()
    port, sock = free_port(), tmp_path / "v.sock"
    config = write(
        tmp_path,
        f"""
        sources:
          up: {{url: {up.url}}}
        endpoints:
          ws: {{websocket: {{port: {port}}}, client_buffer: 32MiB}}  # nobody is too slow here
          ipc: {{unix: {{path: {sock}}}, client_buffer: 32MiB}}
        routes:
          r: {{from: up, to: [ws, ipc]}}
        """,
    )
    veylor = await VeylorProcess("-c", str(config), env=DEV_ENV).start()
    try:
        await up.wait_connected()
        ws = await ws_client(f"ws://127.0.0.1:{port}/")
        unix = await UnixClient.connect(sock)
        stalled = await asyncio.to_thread(stalled_ws_client, port)
        await veylor.wait_for("client 127.0.0.1", 5)
        sent = ["z" * 20_000 + f"{i:03d}" for i in range(300)]
        for message in sent:  # fill the stalled client's buffers: its close cannot complete
            await up.send(message)
        # Everything was fanned out before the signal: the WebSocket client has read it all,
        # the Unix client nothing yet (its frames wait in Veylor's buffer and the kernel's).
        assert [await asyncio.wait_for(ws.recv(), 10) for _ in sent] == sent
        started = time.monotonic()
        veylor.signal(signal.SIGTERM)
        unix_read = asyncio.create_task(asyncio.wait_for(unix.reader.read(), 5))  # to EOF
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)  # nothing more, then the close
        assert ws.close_code == 1001
        # The Unix client's close flushes first: every frame, whole, then EOF.
        data, frames = await unix_read, []
        while len(data) >= 4:
            n = int.from_bytes(data[:4], "big")
            frames.append(data[4 : 4 + n])
            data = data[4 + n :]
        assert data == b"" and [f.decode() for f in frames] == sent
        code = await veylor.wait(10)
        elapsed = time.monotonic() - started
        assert code == 0, veylor.log
        assert elapsed < 5.0, elapsed
        assert not sock.exists()
        assert "received SIGTERM: shutting down" in veylor.log and "stopped" in veylor.log
        for leak in LEAKS:
            assert leak not in veylor.log, veylor.log
        stalled.close()
        await unix.close()
    finally:
        await veylor.stop()
        await up.stop()


async def test_sigint_also_stops_cleanly(tmp_path):
    config = write(
        tmp_path,
        f"""
        sources: {{up: {{url: "ws://127.0.0.1:{free_port()}/"}}}}
        endpoints: {{ws: {{websocket: {{port: {free_port()}}}}}}}
        routes: {{r: {{from: up, to: ws}}}}
        """,
    )
    veylor = await VeylorProcess("-c", str(config), env=DEV_ENV).start()
    try:
        veylor.signal(signal.SIGINT)
        assert await veylor.wait(10) == 0
        for leak in LEAKS:
            assert leak not in veylor.log, veylor.log
    finally:
        await veylor.stop()


async def test_port_in_use_fails_with_one_clear_line_and_cleans_up(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    free = free_port()
    sock = tmp_path / "ok.sock"
    config = write(
        tmp_path,
        f"""
        sources: {{up: {{url: "ws://127.0.0.1:{free_port()}/"}}}}
        endpoints:
          fine: {{websocket: {{port: {free}}}}}
          public: {{websocket: {{port: {port}, path: /feed}}}}
          ipc: {{unix: {{path: {sock}}}}}
        routes: {{r: {{from: up, to: [fine, public, ipc]}}}}
        """,
    )
    veylor = await VeylorProcess("-c", str(config)).start(ready=None)
    try:
        code = await veylor.wait(10)
        assert code == 1
        errors = [line for line in veylor.lines if " ERROR " in line]
        assert len(errors) == 1, veylor.log
        assert f"endpoint public: cannot listen on 127.0.0.1:{port}: address already in use" in errors[0]
        # What was bound before the failure was released.
        with socket.socket() as s:
            s.bind(("127.0.0.1", free))
        assert not sock.exists()
    finally:
        busy.close()
        await veylor.stop()


async def test_socket_path_that_is_not_a_socket_is_an_error_and_never_deleted(tmp_path):
    path = tmp_path / "precious.txt"
    path.write_text("do not delete")
    port = free_port()
    config = write(
        tmp_path,
        f"""
        sources: {{up: {{url: "ws://127.0.0.1:{free_port()}/"}}}}
        endpoints:
          ws: {{websocket: {{port: {port}}}}}
          ipc: {{unix: {{path: {path}}}}}
        routes: {{r: {{from: up, to: [ws, ipc]}}}}
        """,
    )
    veylor = await VeylorProcess("-c", str(config)).start(ready=None)
    try:
        assert await veylor.wait(10) == 1
        assert f"endpoint ipc: cannot listen on unix:{path}: {path} exists and is not a socket" in veylor.log
        assert path.read_text() == "do not delete"
        with socket.socket() as s:  # the WebSocket listener bound first was closed
            s.bind(("127.0.0.1", port))
    finally:
        await veylor.stop()


async def test_invalid_config_does_not_start(tmp_path):
    config = write(tmp_path, "sources: {up: {url: http://nope}}\n")
    veylor = await VeylorProcess("-c", str(config)).start(ready=None)
    try:
        assert await veylor.wait(10) == 1
        assert "sources.up.url: 'http://nope' is not a ws:// or wss:// URL" in veylor.log
        assert "not starting" in veylor.log
    finally:
        await veylor.stop()


async def test_veylor_11_config_end_to_end_with_a_11_unix_client(tmp_path):
    """A 1.1 file and a 1.1 client (4-byte big-endian length framing), unchanged."""
    up = await Upstream().start()
    port, sock = free_port(), tmp_path / "legacy.sock"
    config = write(
        tmp_path,
        f"""
        sources:
          - url: {up.url}
            headers: {{Authorization: "Bearer t"}}
            websocket_host: 127.0.0.1
            websocket_port: {port}
            unix_socket_path: {sock}
        performance:
          reconnect_delay: 0.2
        """,
    )
    veylor = await VeylorProcess("-c", str(config)).start()
    try:
        assert "Veylor 1.1 format" in veylor.log
        await up.wait_connected()
        assert up.headers[0]["authorization"] == "Bearer t"

        # The 1.1 client, as written for 1.1: raw socket, struct framing.
        reader, writer = await asyncio.open_unix_connection(str(sock))
        ws = await ws_client(f"ws://127.0.0.1:{port}/any/path/works")
        await asyncio.sleep(0.1)
        await up.send(json.dumps({"price": 1}))
        header = await asyncio.wait_for(reader.readexactly(4), 5)
        assert json.loads(await reader.readexactly(int.from_bytes(header, "big"))) == {"price": 1}
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"price": 1}
        order = b'{"op":"buy"}'
        writer.write(len(order).to_bytes(4, "big") + order)  # 1.x clients could send upstream
        await writer.drain()
        await eventually(lambda: up.received == ['{"op":"buy"}'])
        # 1.1 closed the clients when the source dropped: so does the translation.
        await up.stop(abort=True)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await veylor.stop()
        await up.stop()


@pytest.mark.skipif(
    shutil.which("websocketd") is None, reason="websocketd is not installed (apt-get install websocketd)"
)
async def test_real_third_party_upstream_websocketd(tmp_path):
    up_port, port = free_port(), free_port()
    script = tmp_path / "feed.sh"
    script.write_text(
        '#!/bin/sh\ni=0\nwhile [ $i -lt 1000 ]; do echo "tick $i"; i=$((i+1)); sleep 0.01; done\n'
    )
    script.chmod(0o755)
    websocketd = await asyncio.create_subprocess_exec(
        "websocketd",
        f"--port={up_port}",
        "--address=127.0.0.1",
        str(script),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    config = write(
        tmp_path,
        f"""
        sources:
          shell: {{url: "ws://127.0.0.1:{up_port}/", reconnect: {{initial_delay: 0.1, max_delay: 0.5}}}}
        endpoints:
          ws: {{websocket: {{port: {port}}}}}
        routes:
          r: {{from: shell, to: ws}}
        """,
    )
    veylor = None
    try:
        # websocketd may need a moment to listen; Veylor's backoff covers that.
        veylor = await VeylorProcess("-c", str(config)).start()
        await veylor.wait_for("source shell: connected", 10)
        clients = [await ws_client(f"ws://127.0.0.1:{port}/") for _ in range(3)]
        got = [[await asyncio.wait_for(c.recv(), 5) for _ in range(20)] for c in clients]
        for messages in got:
            numbers = [int(m.split()[1]) for m in messages]
            assert numbers == list(range(numbers[0], numbers[0] + 20))  # consecutive, in order
        for c in clients:
            await c.close()
    finally:
        if veylor is not None:
            await veylor.stop()
        websocketd.terminate()
        await websocketd.wait()


async def test_demo_command_runs_and_stops(tmp_path):
    port = free_port()
    scratch = tmp_path / "tmp"  # the demo's files go here, and must be gone afterwards
    scratch.mkdir()
    veylor = await VeylorProcess(
        "demo", "--port", str(port), "--rate", "100", cwd=tmp_path, env={**DEV_ENV, "TMPDIR": str(scratch)}
    ).start()
    try:
        btc = await ws_client(f"ws://127.0.0.1:{port}/btc")
        ticker = await ws_client(f"ws://127.0.0.1:{port}/ticker")
        for _ in range(5):
            assert json.loads(await asyncio.wait_for(btc.recv(), 5))["s"] == "BTCUSDT"
        await ticker.send("hello")
        for _ in range(200):
            message = json.loads(await asyncio.wait_for(ticker.recv(), 5))
            if message.get("e") == "echo" and message["data"] == "hello":
                break  # (the echo of the on_connect subscription may come first)
        else:
            pytest.fail("no echo from the demo upstream")
        sock = veylor.log.split("unix:")[1].split()[0]
        unix = await UnixClient.connect(sock)
        assert json.loads(await unix.recv())["e"] in ("trade", "echo")
        await unix.close()
        veylor.signal(signal.SIGINT)
        assert await veylor.wait(10) == 0
        assert f"ws://127.0.0.1:{port}/ticker" in veylor.stdout
        for leak in LEAKS:
            assert leak not in veylor.log, veylor.log
        assert list(scratch.iterdir()) == []  # its configuration and socket removed
        # The commands it prints work from where the user stands (the venv need not be on PATH).
        command = veylor.stdout.split("(try: ")[1].split(")")[0]
        assert command.split()[0] != "veylor" or shutil.which("veylor")
        assert "-m websockets" in veylor.stdout
    finally:
        await veylor.stop()


async def test_printed_demo_commands_run_as_printed(tmp_path):
    """The check, status and top commands the demo prints work when pasted, from the
    directory it ran in, by a user whose virtual environment is not activated (top in a
    real terminal)."""
    port = free_port()
    env = {**DEV_ENV, "PATH": "/usr/bin:/bin"}
    veylor = await VeylorProcess("demo", "--port", str(port), cwd=tmp_path, env=env).start()
    try:

        async def paste(marker: str) -> str:
            """Run the command the demo printed after ``marker`` as a user would; its output."""
            assert veylor.proc is not None and veylor.proc.stdout is not None
            line = b""
            while marker.encode() not in line:
                line = await asyncio.wait_for(veylor.proc.stdout.readline(), 10)
                assert line, f"the demo printed no {marker!r} command"
            command = line.decode().split(marker)[1].split(")")[0]
            proc = await asyncio.create_subprocess_shell(
                command, cwd=tmp_path, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, command
            return out.decode()

        assert "OK: 1 source, 3 endpoints, 2 routes" in await paste("(try: ")
        status = await paste("(status: ")
        assert "demo -> everything -> ticker" in status, status
        # The terminal UI's command, pasted in a real terminal: Textual comes with Veylor.
        line = b""
        while b" top -c " not in line:
            line = await asyncio.wait_for(veylor.proc.stdout.readline(), 10)
            assert line, "the demo printed no top command"
        if shutil.which("tmux") is not None:
            from test_tui_terminal import Tmux

            tmux = Tmux(tmp_path, ["sh", "-c", f"PATH=/usr/bin:/bin {line.decode().strip()}"])
            try:
                await tmux.until(lambda screen: "ticker" in screen and "btc" in screen, "the demo's graph")
                tmux.press("q")
                assert await tmux.exit_code() == 0
            finally:
                tmux.kill()
        veylor.signal(signal.SIGINT)
        assert await veylor.wait(10) == 0
    finally:
        await veylor.stop()


def test_missing_configuration_says_what_was_tried_and_what_to_do(tmp_path):
    if os.path.exists("/etc/veylor/config.yaml"):
        pytest.skip("this machine has /etc/veylor/config.yaml")
    for args in ([], ["check"]):
        result = run_veylor(*args, cwd=tmp_path)
        assert result.returncode == 1
        text = result.stderr
        assert f"tried {tmp_path}/config.yaml and /etc/veylor/config.yaml" in text
        assert "-c FILE" in text and "config.yaml.example" in text and "veylor demo" in text
    result = run_veylor("-c", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 1 and "nope.yaml: no such file (given with -c)" in result.stderr
