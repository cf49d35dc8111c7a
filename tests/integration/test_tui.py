"""The TUI against a real relay (real upstream, real clients), driven headless with
Textual's Pilot: the graph shows the configuration, counters move, clients come and go,
`r` reloads and shows a refused drop-in's file and line, `q` quits."""

from __future__ import annotations

import asyncio
import textwrap

import pytest
from conftest import run_veylor
from helpers import free_port, ws_client

pytest.importorskip("textual")

from textual.widgets import DataTable, Static

from veylor.server import Server
from veylor.tui.app import VeylorApp
from veylor.tui.reader import InProcess


def cells(app: VeylorApp, table: str) -> dict[str, list[str]]:
    t = app.query_one(f"#{table}", DataTable)
    return {key.value: [str(c) for c in t.get_row(key)] for key in t.rows}


async def until(pilot, predicate, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def test_tui_shows_the_live_graph_and_drives_reloads(tmp_path, upstream):
    port = free_port()
    (tmp_path / "routes.d").mkdir()
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(
            f"""
            sources: {{feed: {{url: "{upstream.url}"}}}}
            endpoints: {{ws: {{websocket: {{port: {port}, path: /ws}}}}}}
            routes: {{all: {{from: feed, to: ws}}}}
            """
        )
    )
    server = Server.load(str(main), watch="off")
    assert await server.startup()
    try:
        await upstream.wait_connected()
        app = VeylorApp(InProcess(server))
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: "feed|all|ws" in cells(app, "graph"), "the edge")
            assert cells(app, "sources")["feed"][1].startswith("● connected")
            clients = app.query_one("#clients", DataTable)
            await until(pilot, lambda: clients.border_subtitle == "no clients connected", "the empty state")
            client = await ws_client(f"ws://127.0.0.1:{port}/ws")
            await until(pilot, lambda: len(cells(app, "clients")) == 1, "the client listed")
            for i in range(25):
                await upstream.send(f"m{i}")
            for _ in range(25):
                await asyncio.wait_for(client.recv(), 5)
            await until(pilot, lambda: cells(app, "graph")["feed|all|ws"][5] == "25", "the edge's total")
            await until(pilot, lambda: cells(app, "graph")["feed|all|ws"][4] != "-", "a rate")
            app.query_one("#graph", DataTable).focus()
            await until(pilot, lambda: app.selected_edge == ("feed", "all", "ws"), "the edge selected")
            spark = app.query_one("#sparkline")
            await until(pilot, lambda: len(spark.data) > 1 and max(spark.data) > 0, "the edge's sparkline")
            await pilot.press("s")
            assert "by connected" in str(clients.border_title)
            await pilot.press("question_mark")
            await until(pilot, lambda: type(app.screen).__name__ == "Help", "the help")
            await pilot.press("escape")
            await until(pilot, lambda: type(app.screen).__name__ != "Help", "the help closed")
            await client.close()
            await until(pilot, lambda: len(cells(app, "clients")) == 0, "the client gone")

            (tmp_path / "routes.d" / "more.yaml").write_text(
                "routes: {more: {from: feed, to: ws, filter: {type: text}}}\n"
            )
            await pilot.press("r")
            await until(pilot, lambda: "feed|more|ws" in cells(app, "graph"), "the new route")
            (tmp_path / "routes.d" / "bad.yaml").write_text("routes:\n  x: {from: feed, to: nowhere}\n")
            await pilot.press("r")
            status = app.query_one("#status", Static)
            await until(pilot, lambda: "bad.yaml:2" in str(status.render()), "the refused file and line")
            assert "unknown endpoint 'nowhere'" in str(status.render())
            await pilot.press("q")
        assert app.return_code in (0, None)
    finally:
        await server.shutdown()


def test_tui_without_a_terminal_is_refused(tmp_path):
    main = tmp_path / "config.yaml"
    main.write_text("sources: {}\n")
    result = run_veylor("--tui", "-c", str(main), cwd=tmp_path)
    assert result.returncode == 2
    assert "needs a terminal" in result.stderr and "without --tui" in result.stderr


def test_tui_and_top_without_textual_say_how_to_install_it(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\nsys.modules['textual'] = None  # as if not installed\n"
    )
    env = {"PYTHONPATH": str(shim)}
    for args in (["--tui", "-c", "x.yaml"], ["top", "--admin", "127.0.0.1:9"], ["demo", "--tui"]):
        result = run_veylor(*args, cwd=tmp_path, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert "pip install 'veylor[tui]'" in result.stderr, args
