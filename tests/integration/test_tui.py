"""The TUI against a real relay (real upstream, real clients), driven headless with
Textual's Pilot: the graph shows the configuration, counters move, clients come and go,
`r` reloads and shows a refused drop-in's file and line, `q` quits."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from conftest import run_veylor
from helpers import VeylorProcess, free_port, ws_client

pytest.importorskip("textual")

from textual.widgets import Static

from veylor.observe.client import target
from veylor.server import Server
from veylor.tui.app import VeylorApp
from veylor.tui.reader import InProcess, OverHttp


def cells(app: VeylorApp, table: str) -> dict[str, list[str]]:
    """What a table shows, row by row (in order), by the key of the item on each row."""
    t = app.tables[table]
    return {t.keys[i]: [str(c) for c in t.get_row_at(i)] for i in range(t.row_count)}


def first(text: str) -> str:
    """A number as the first of two side by side (a wide screen: ``25 (3/s)``): ``25``."""
    return text.split(" (")[0]


async def until(pilot, predicate, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def started(tmp_path, yaml: str) -> Server:
    """A Veylor Server in this process for ``yaml`` (dedented), started."""
    main = tmp_path / "config.yaml"
    main.write_text(textwrap.dedent(yaml))
    server = Server.load(str(main), watch="off")
    assert await server.startup()
    return server


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
            await until(pilot, lambda: "feed" in cells(app, "sources"), "the source")
            assert cells(app, "sources")["feed"][1].startswith("● connected")
            clients = app.tables["clients"]
            await until(pilot, lambda: clients.border_subtitle == "no clients connected", "the empty state")
            client = await ws_client(f"ws://127.0.0.1:{port}/ws")
            await until(pilot, lambda: len(cells(app, "clients")) == 1, "the client listed")
            for i in range(25):
                await upstream.send(f"m{i}")
            for _ in range(25):
                await asyncio.wait_for(client.recv(), 5)
            await until(pilot, lambda: cells(app, "graph")["feed|all|ws"][4] != "-", "a rate")
            await pilot.press("t")  # totals
            await until(
                pilot, lambda: first(cells(app, "graph")["feed|all|ws"][4]) == "25", "the edge's total"
            )
            await pilot.press("t")  # rates again
            await until(
                pilot, lambda: first(cells(app, "graph")["feed|all|ws"][4]).endswith("/s"), "rates again"
            )
            app.tables["graph"].focus()
            await until(pilot, lambda: app.selected_edge == ("feed", "all", "ws"), "the edge selected")
            spark = app.query_one("#sparkline")
            await until(pilot, lambda: len(spark.data) > 1 and max(spark.data) > 0, "the edge's sparkline")
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


def test_textual_is_installed_with_veylor_and_imported_only_by_the_tui(tmp_path):
    """Textual is a dependency (``pip install .`` gives ``veylor --tui`` and ``top``), and
    costs nothing to the relay: neither ``veylor check`` nor the relay imports it."""
    from importlib.metadata import requires

    assert any(
        r.split(">")[0].split("<")[0].strip() == "textual" for r in requires("veylor") if "extra" not in r
    )
    main = tmp_path / "config.yaml"
    main.write_text("sources: {a: {url: 'ws://127.0.0.1:9/'}}\nendpoints: {e: {websocket: {port: 9}}}\n"
                    "routes: {r: {from: a, to: e}}\n")  # fmt: skip
    probe = (
        "import sys, runpy; sys.argv = ['veylor', 'check', '-c', sys.argv[1]]\n"
        "try:\n    runpy.run_module('veylor', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "import veylor.server, veylor.runtime\n"  # the relay's own modules, as `veylor` runs them
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(main)], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


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
        assert "reinstall Veylor (pip install veylor)" in result.stderr, args


async def test_tui_keys_filter_sort_totals_pause_theme_and_tap(tmp_path, upstream):
    """/ filters every table by name, s sorts the focused table by its next column, t
    shows totals, p freezes the display, d switches dark and light, and m taps the
    selected edge's route: its last messages, one line each, newest first, escaped."""
    port = free_port()
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{ws: {{websocket: {{port: {port}, path: /ws}}}}}}
        routes:
          all: {{from: feed, to: ws}}
          majors: {{from: feed, to: ws, filter: {{text: {{contains: BTC}}}}}}
        """,
    )
    try:
        await upstream.wait_connected()
        app = VeylorApp(InProcess(server))
        async with app.run_test(size=(160, 48)) as pilot:
            graph = app.tables["graph"]
            await until(pilot, lambda: len(cells(app, "graph")) == 2, "both edges")

            await pilot.press("slash", "m", "a", "j")
            await until(pilot, lambda: list(cells(app, "graph")) == ["feed|majors|ws"], "the filter")
            assert "1 match “maj”" in str(graph.border_title)
            assert cells(app, "endpoints") == {}  # no endpoint is called "maj"
            await pilot.press("escape")
            await until(pilot, lambda: len(cells(app, "graph")) == 2, "the filter cleared")

            for i in range(30):  # all passes 30, majors 10
                await upstream.send(("BTC" if i % 3 == 0 else "ETH") + f" trade {i}")
            await pilot.press("t")
            await until(pilot, lambda: first(cells(app, "graph")["feed|all|ws"][4]) == "30", "the totals")
            assert [first(c) for c in cells(app, "graph")["feed|majors|ws"][4:6]] == [
                "10",
                "20",
            ]  # passed, filtered out
            graph.focus()
            for _ in range(4):  # source, route, filter, endpoint, msgs: the largest first
                await pilot.press("s")
            assert "msgs (/s) ▼" in graph.labels  # (160 columns: totals, their rates beside)
            await until(
                pilot, lambda: list(cells(app, "graph")) == ["feed|all|ws", "feed|majors|ws"], "by msgs"
            )
            await pilot.press("s")  # by filtered: majors first
            await until(pilot, lambda: next(iter(cells(app, "graph"))) == "feed|majors|ws", "by filtered")
            await pilot.press("1")  # a digit: that column (as shown, from the left)
            assert graph.labels[0] == "source ▼" and "filtered (/s)" in graph.labels
            await until(pilot, lambda: next(iter(cells(app, "graph"))) == "feed|all|ws", "by source")
            await pilot.press("1")  # the same digit again: the other way
            assert graph.labels[0] == "source ▲"
            await until(pilot, lambda: next(iter(cells(app, "graph"))) == "feed|majors|ws", "reversed")
            await pilot.press("5", "5")  # msgs, the other way: the smallest first
            assert "msgs (/s) ▲" in graph.labels
            await until(pilot, lambda: next(iter(cells(app, "graph"))) == "feed|majors|ws", "smallest first")

            await pilot.press("p")
            await pilot.pause(0.7)
            for i in range(5):
                await upstream.send(f"BTC while paused {i}")
            await pilot.pause(1.2)
            assert first(cells(app, "graph")["feed|all|ws"][4]) == "30"  # frozen
            await pilot.press("p")
            await until(pilot, lambda: first(cells(app, "graph")["feed|all|ws"][4]) == "35", "resumed")

            theme = app.theme
            await pilot.press("d")
            assert app.theme != theme
            await pilot.press("d")
            assert app.theme == theme

            # The tap: select the majors edge (it is first now), turn the tap on.
            graph.move_cursor(row=0)
            await until(pilot, lambda: app.selected_edge == ("feed", "majors", "ws"), "majors selected")
            tap = app.query_one("#tap", Static)
            assert not tap.display
            assert not server.runtime.taps  # off: nothing in the routing table
            await pilot.press("m")
            await until(pilot, lambda: "majors" in server.runtime.taps, "the tap on")
            await upstream.send("ETH not for majors")
            await upstream.send("BTC line one\nline two \x1b[31mred")
            await upstream.send("BTC newest")
            await until(pilot, lambda: "BTC newest" in str(tap.render()), "the tapped message")
            shown = str(tap.render()).splitlines()
            assert shown[0] == "BTC newest"  # newest first
            assert shown[1] == r"BTC line one\nline two \x1b[31mred"  # one line, escaped
            assert not any("ETH" in line for line in shown)  # only what passed the route
            await pilot.press("m")
            assert not tap.display
            await until(pilot, lambda: not server.runtime.taps, "the tap's lease ended", timeout=10)
            await pilot.press("q")
    finally:
        await server.shutdown()


async def test_veylor_top_marks_stale_data_and_reconnects_when_veylor_restarts(tmp_path, upstream):
    """Attached (veylor top): the daemon stops, the screen says STALE and keeps the last
    state; the daemon comes back, the graph is live again with the new process's
    counters; q detaches and leaves the daemon running."""
    port, port2, admin = free_port(), free_port(), free_port()
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(
            f"""
            admin: {{listen: "127.0.0.1:{admin}"}}
            sources: {{feed: {{url: "{upstream.url}"}}}}
            endpoints: {{ws: {{websocket: {{port: {port}, path: /ws}}}}, b: {{websocket: {{port: {port2}, path: /b}}}}}}
            routes: {{all: {{from: feed, to: ws}}}}
            """
        )
    )
    daemon = await VeylorProcess("-c", str(main), "--no-watch").start()
    try:
        app = VeylorApp(OverHttp(target(str(main), None)))
        async with app.run_test(size=(160, 48)) as pilot:
            status = app.query_one("#status", Static)
            await until(pilot, lambda: "feed|all|ws" in cells(app, "graph"), "the attached graph")
            first_pid = app.view["pid"]
            await daemon.stop()
            await until(pilot, lambda: "STALE" in str(status.render()), "STALE")
            assert "feed|all|ws" in cells(app, "graph")  # the last state stays on screen
            daemon = await VeylorProcess("-c", str(main), "--no-watch").start()
            await until(pilot, lambda: "generation" in str(status.render()), "live again", timeout=20)
            assert app.view["pid"] != first_pid and "feed|all|ws" in cells(app, "graph")
            # c: the clients of every endpoint, read over HTTP too (each bounded)
            one, two = (
                await ws_client(f"ws://127.0.0.1:{port}/ws"),
                await ws_client(f"ws://127.0.0.1:{port2}/b"),
            )
            await pilot.press("c")
            await until(pilot, lambda: len(cells(app, "clients")) == 2, "the clients of both endpoints")
            assert {key.split("|")[0] for key in cells(app, "clients")} == {"ws", "b"}
            assert app.tables["clients"].labels[:3] == ("client", "endpoint", "buffered ▼")
            await pilot.press("c")  # back to the selected endpoint's
            await until(pilot, lambda: len(cells(app, "clients")) == 1, "one endpoint's client")
            assert "|" not in next(iter(cells(app, "clients")))
            await one.close()
            await two.close()
            await pilot.press("q")
        assert daemon.proc.returncode is None  # detached: the daemon runs on
    finally:
        await daemon.stop()


async def test_in_process_logs_go_to_the_log_pane_coloured_by_level(tmp_path, upstream):
    import logging

    from textual.widgets import RichLog

    from veylor.tui.logpane import LogBuffer

    port = free_port()
    main = tmp_path / "config.yaml"
    main.write_text(
        f'sources: {{feed: {{url: "{upstream.url}"}}}}\n'
        f"endpoints: {{ws: {{websocket: {{port: {port}}}}}}}\nroutes: {{all: {{from: feed, to: ws}}}}\n"
    )
    server = Server.load(str(main), watch="off")
    assert await server.startup()
    buffer = LogBuffer(capacity=5)
    logging.getLogger().addHandler(buffer)
    try:
        app = VeylorApp(InProcess(server), logs=buffer)
        async with app.run_test(size=(160, 48)) as pilot:
            pane = app.query_one("#logs", RichLog)
            for i in range(20):  # bounded: only the last 5 wait for the pane
                logging.getLogger("veylor.test").warning("careful [red]%d[/red]", i)
            assert len(buffer.lines) == 5
            await until(pilot, lambda: len(pane.lines) >= 5, "the log lines in the pane")
            text = "\n".join(line.text for line in pane.lines)
            assert "careful [red]19[/red]" in text and "careful [red]14[/red]" not in text  # no markup
            assert any(s.style and "yellow" in str(s.style) for line in pane.lines for s in line)  # WARNING
            await pilot.press("q")
    finally:
        logging.getLogger().removeHandler(buffer)
        await server.shutdown()


async def test_the_views_and_outcomes_veylor_makes_pass_the_check_top_makes_of_them(tmp_path, upstream):
    """``veylor top`` refuses a view over HTTP with a field its panes could not read
    (veylor/tui/shape.py); the views a real relay makes pass that check, with clients
    listed, a tap (and one of no route), after a reload, and after a refused one."""
    from veylor.tui.shape import check_outcome, check_view

    port = free_port()
    (tmp_path / "routes.d").mkdir()
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(
            f"""
            sources: {{feed: {{url: "{upstream.url}"}}}}
            endpoints:
              ws: {{websocket: {{port: {port}, path: /ws}}}}
              ipc: {{unix: {{path: "{tmp_path / "ipc.sock"}"}}}}
            routes:
              all: {{from: feed, to: [ws, ipc], upstream: true}}
              some: {{from: feed, to: ws, filter: {{type: text}}}}
            """
        )
    )
    server = Server.load(str(main), watch="off")
    assert await server.startup()
    try:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/ws")
        await server.snapshot_async(tap="all")  # (the tap starts)
        for i in range(5):
            await upstream.send(f"m{i}")
        for _ in range(5):
            await asyncio.wait_for(client.recv(), 5)
        view = await server.snapshot_async(clients="ws", tap="all")
        assert view["endpoints"]["ws"]["client_list"] and view["tap"]["messages"]
        check_view(view)
        check_view(await server.snapshot_async(clients=True, tap="no-such-route"))
        (tmp_path / "routes.d" / "more.yaml").write_text("routes: {more: {from: feed, to: ipc}}\n")
        outcome = (await server.reload("test")).as_dict()
        assert outcome["steps"]
        check_outcome(outcome)
        check_view(await server.snapshot_async())
        (tmp_path / "routes.d" / "bad.yaml").write_text("routes:\n  x: {from: feed, to: nowhere}\n")
        outcome = (await server.reload("test")).as_dict()
        assert outcome["problems"]
        check_outcome(outcome)
        view = await server.snapshot_async()
        assert view["reloads"]["last"]["problems"]
        check_view(view)
        await client.close()
    finally:
        await server.shutdown()


async def test_drops_are_counted_once_where_they_happen(tmp_path, upstream, monkeypatch):
    """Issue 25, point 2: three routes into one endpoint with one slow client showed the
    endpoint's drops on each of the three edges (three times the real figure). Drops are
    the endpoint's: on its row once, equal to what /metrics says; the edges show none."""
    import socket

    from helpers import raw_handshake
    from prometheus_client.parser import text_string_to_metric_families

    from veylor.observe import state
    from veylor.observe.metrics import render

    port = free_port()
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints:
          ws: {{websocket: {{port: {port}, path: /ws}}, socket_buffer: 4KiB, client_buffer: 64KiB, slow_client: drop}}
        routes:
          a: {{from: feed, to: ws}}
          b: {{from: feed, to: ws, filter: {{text: {{contains: x}}}}}}
          c: {{from: feed, to: ws, filter: {{text: {{contains: y}}}}}}
        """,
    )
    slow = socket.socket()
    try:
        await upstream.wait_connected()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(slow, ("127.0.0.1", port))
        await loop.sock_sendall(slow, raw_handshake("/ws"))  # (and never reads)
        app = VeylorApp(InProcess(server))
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: len(cells(app, "graph")) == 3, "three edges")
            assert "drops" not in " ".join(app.tables["graph"].labels)
            ep = server.runtime.endpoints["ws"]
            for _ in range(200):
                for _ in range(20):
                    await upstream.send("xy" * 1000)
                if ep.stats.dropped > 100:
                    break
                await pilot.pause(0.01)
            await pilot.press("t")
            await pilot.pause(1.5)  # (two refreshes: the counts are still)

            def undelivered() -> int:
                total = 0
                for family in text_string_to_metric_families(render(server.snapshot())):
                    for sample in family.samples:
                        if (
                            sample.name == "veylor_endpoint_undelivered_total"
                            and sample.labels["endpoint"] == "ws"
                        ):
                            total += int(sample.value)
                return total

            await until(
                pilot,
                lambda: first(cells(app, "endpoints")["ws"][2]) == f"{undelivered():,}",
                "the endpoint's drops as /metrics counts them",
            )
            assert undelivered() > 100

            # Which client is slow: counted on its endpoint's row and in the summary, and
            # first among the endpoint's clients (those behind are listed first, whatever
            # the bound), its bytes and drops in red.
            others = [await ws_client(f"ws://127.0.0.1:{port}/ws") for _ in range(2)]
            label = f"127.0.0.1:{slow.getsockname()[1]}"
            await until(pilot, lambda: len(cells(app, "clients")) == 3, "three clients")
            assert cells(app, "endpoints")["ws"][3] == "1"  # slow now
            assert "1 slow client" in str(app.query_one("#summary").render())
            clients = app.tables["clients"]
            assert clients.keys[0] == label
            worst = clients.get_row_at(0)
            assert "red" in str(worst[1].style) and "red" in str(worst[2].style)
            assert int(str(worst[2]).replace(",", "")) > 100  # its drops
            monkeypatch.setattr(state, "CLIENTS_LISTED", 1)
            listed = server.snapshot(clients="ws")["endpoints"]["ws"]
            assert [c["client"] for c in listed["client_list"]] == [label]
            assert listed["clients_not_listed"] == 2 and listed["client_buffer"] == 64 * 1024
            monkeypatch.setattr(state, "CLIENTS_LISTED", 2)  # every endpoint's (c): bounded in all
            listed = server.snapshot(clients="*")["endpoints"]["ws"]
            assert len(listed["client_list"]) == 2 and listed["client_list"][0]["client"] == label
            for other in others:
                await other.close()
    finally:
        slow.close()
        await server.shutdown()


async def one_edge(tmp_path, upstream) -> Server:
    """A started Server with one edge: feed -> all -> ws."""
    return await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{ws: {{websocket: {{port: {free_port()}, path: /ws}}}}}}
        routes: {{all: {{from: feed, to: ws}}}}
        """,
    )


async def test_top_read_only_neither_reloads_nor_taps(tmp_path, upstream):
    """Issue 25, point 6: `veylor top --read-only` only looks: r and m do nothing, and
    the footer does not offer them."""
    server = await one_edge(tmp_path, upstream)
    try:
        app = VeylorApp(InProcess(server), read_only=True)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: len(cells(app, "graph")) == 1, "the edge")
            await pilot.press("r", "m")
            await pilot.pause(0.5)
            assert server.reloader is not None and server.reloader.last is None  # no reload
            assert not app.tapping
            shown = {binding.action for (_, binding, enabled, _) in app.active_bindings.values() if enabled}
            assert "reload" not in shown and "tap" not in shown and "quit" in shown
    finally:
        await server.shutdown()


async def test_the_in_process_tui_asks_before_q_stops_veylor(tmp_path, upstream):
    """Issue 25, point 6: in `veylor --tui`, q stops the relay and disconnects every
    client: the first q asks, a second one within 3 s quits."""
    server = await one_edge(tmp_path, upstream)
    try:
        app = VeylorApp(InProcess(server), confirm_quit=True)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: len(cells(app, "graph")) == 1, "the edge")
            await pilot.press("q")
            await pilot.pause(0.3)
            assert app.is_running, "one q quit the in-process TUI"
            await pilot.press("q")
            await pilot.pause(0.3)
            assert not app.is_running
    finally:
        await server.shutdown()


async def test_every_endpoints_clients_are_bounded_in_all_even_when_many_are_behind(
    tmp_path, upstream, monkeypatch
):
    """/graph?clients=* (the TUI's c) lists CLIENTS_LISTED clients in all: those behind
    first, wherever they are, and no more of them than the bound (one slow client on
    each of two endpoints, a bound of 1: one listed)."""
    import socket

    from helpers import raw_handshake

    from veylor.observe import state

    ports = [free_port(), free_port()]
    endpoints = ", ".join(
        f"e{i}: {{websocket: {{port: {p}, path: /ws}}, socket_buffer: 4KiB, client_buffer: 64KiB, slow_client: drop}}"
        for i, p in enumerate(ports)
    )
    server = await started(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{{endpoints}}}
        routes: {{all: {{from: feed, to: [e0, e1]}}}}
        """,
    )
    slow = [socket.socket() for _ in ports]
    try:
        await upstream.wait_connected()
        loop = asyncio.get_running_loop()
        for sock, port in zip(slow, ports, strict=True):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, raw_handshake("/ws"))  # (and never reads)
        for _ in range(200):
            for _ in range(20):
                await upstream.send("x" * 2000)
            view = server.snapshot()
            if all(view["endpoints"][f"e{i}"]["slow_clients"] for i in range(2)):
                break
            await asyncio.sleep(0.01)
        monkeypatch.setattr(state, "CLIENTS_LISTED", 1)
        view = server.snapshot(clients="*")
        listed = [c for e in view["endpoints"].values() for c in e.get("client_list", [])]
        assert len(listed) == 1
        assert sum(e["clients_not_listed"] for e in view["endpoints"].values()) == 1
    finally:
        for sock in slow:
            sock.close()
        await server.shutdown()
