"""What an operator reads, said once and in good English (issue 25, point 11): one client
is "1 client"; a shutdown with clients connected is one line per endpoint, not one per
client; watchfiles' own "1 change detected" stays out of the log; `veylor top` without
a terminal points to what works there. A real Veylor process each, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import signal
import textwrap
from pathlib import Path

from conftest import run_veylor
from helpers import VeylorProcess, free_port, ws_client


def _config(tmp_path: Path, port: int) -> Path:
    (tmp_path / "routes.d").mkdir(exist_ok=True)
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(
            f"""
            sources: {{up: {{url: "ws://127.0.0.1:9/"}}}}
            endpoints: {{e: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}}}
            routes: {{r: {{from: up, to: e}}}}
            include: [routes.d/*.yaml]
            """
        )
    )
    return main


async def test_one_client_is_one_client_and_a_shutdown_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    veylor = await VeylorProcess("-c", str(_config(tmp_path, port)), "--no-watch").start()
    clients = []
    try:
        clients.append(await ws_client(f"ws://127.0.0.1:{port}/"))
        await veylor.wait_for("connected (1 client)")
        for _ in range(3):
            clients.append(await ws_client(f"ws://127.0.0.1:{port}/"))
        await veylor.wait_for("connected (4 clients)")
        veylor.signal(signal.SIGTERM)
        assert await veylor.wait(15) == 0
    finally:
        await veylor.stop()
        for client in clients:
            await client.close()
    assert "endpoint e: closing 4 clients (1001, Veylor is shutting down)" in veylor.log, veylor.log
    assert "disconnected (code 1001" not in veylor.log  # (each client's line is at DEBUG)
    assert "1 clients" not in veylor.log


async def test_a_file_change_is_told_by_veylor_not_by_watchfiles(tmp_path: Path) -> None:
    port = free_port()
    # -v: the watcher's catch-up look says it found nothing (at DEBUG), so that the change
    # below is one the watch reports, not one the catch-up finds.
    veylor = await VeylorProcess("-v", "-c", str(_config(tmp_path, port))).start()
    try:
        await veylor.wait_for("catching up after the watch started): no changes", 15)
        (tmp_path / "routes.d" / "more.yaml").write_text(
            f"endpoints: {{f: {{websocket: {{host: 127.0.0.1, port: {port}, path: /f}}}}}}\n"
            "routes: {s: {from: up, to: f}}\n"
        )
        await veylor.wait_for("more.yaml", timeout=15)  # (the reload line names the file)
        await asyncio.sleep(0.5)
    finally:
        await veylor.stop()
    assert "change detected" not in veylor.log, veylor.log


def test_top_without_a_terminal_points_to_status(tmp_path: Path) -> None:
    main = _config(tmp_path, free_port())
    result = run_veylor("top", "-c", str(main), cwd=tmp_path)
    assert result.returncode == 2
    assert "veylor top needs a terminal" in result.stderr and "veylor status" in result.stderr
    assert "--tui" not in result.stderr


async def test_after_on_disconnect_closes_everyone_later_clients_are_told_again(
    tmp_path: Path, upstream
) -> None:
    """on_disconnect: close_clients closes every client of a live endpoint: one line for
    all of them, and the clients that come after are each told again at INFO (the
    one-line mode ends with the last client it closed)."""
    port = free_port()
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(
            f"""
            sources: {{up: {{url: "{upstream.url}", on_disconnect: close_clients, reconnect: {{initial_delay: 0.1, max_delay: 0.2}}}}}}
            endpoints: {{e: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}}}
            routes: {{r: {{from: up, to: e}}}}
            """
        )
    )
    veylor = await VeylorProcess("-c", str(main), "--no-watch").start()
    try:
        await upstream.wait_connected()
        first = [await ws_client(f"ws://127.0.0.1:{port}/") for _ in range(2)]
        await veylor.wait_for("connected (2 clients)")
        await upstream.stop(abort=True)
        await veylor.wait_for("endpoint e: closing 2 clients (1011, upstream up disconnected)")
        await upstream.start()
        await upstream.wait_connected()
        late = await ws_client(f"ws://127.0.0.1:{port}/")
        await veylor.wait_for("connected (1 client)")
        await late.close()
        await veylor.wait_for("disconnected (code 1000, 0 clients)")
        for client in first:
            await client.close()
    finally:
        await veylor.stop()
    assert veylor.log.count("closing 2 clients") == 1, veylor.log
