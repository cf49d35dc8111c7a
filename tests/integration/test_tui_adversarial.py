"""The TUI and the tap under attack: text from configuration, clients, upstreams and the
admin endpoint that must reach the screen as plain, escaped text (never as Rich/Textual
markup, never as a terminal escape sequence); `veylor top` against an admin endpoint
that answers what Veylor's would not; taps hammered, toggled under a steady feed,
reloaded away, and holding large messages; the table at its edges; and what the TUI
runs on the event loop it shares with the relay.

Everything on 127.0.0.1 (real upstream, real clients, a real Veylor, a real admin
endpoint or a real HTTP server answering garbage); each test bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import textwrap
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import VeylorProcess, eventually, free_port, veylor_inprocess, ws_client
from test_tap import config as config_of_routes
from test_tui_pty import Pty

pytest.importorskip("textual")

from rich.text import Text
from textual.widgets import RichLog, Static

from veylor.observe.client import target
from veylor.runtime import supervisor
from veylor.runtime.tap import KEEP, LINE, MAX_TAPS
from veylor.server import Server
from veylor.tui.app import VeylorApp
from veylor.tui.logpane import LogBuffer
from veylor.tui.reader import InProcess, OverHttp
from veylor.tui.table import Table

ESC = "\x1b"


# ---------------------------------------------------------------------- helpers


def cells(app: VeylorApp, table: str) -> dict[str, list[str]]:
    t = app.tables[table]
    return {t.keys[i]: [str(c) for c in t.get_row_at(i)] for i in range(t.row_count)}


def screen_text(widget) -> str:
    """What a line-drawn widget (our Table) puts on the screen, line by line: the text
    of the segments Textual writes to the terminal as they are."""
    out = []
    for y in range(widget.size.height):
        out.append("".join(s.text for s in widget.render_line(y)))
    return "\n".join(out)


async def until(pilot, predicate, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def write_config(tmp_path, text: str):
    main = tmp_path / "config.yaml"
    main.write_text(textwrap.dedent(text))
    return main


@contextlib.asynccontextmanager
async def serving(main):
    server = Server.load(str(main), watch="off")
    assert await server.startup()
    try:
        yield server
    finally:
        await server.shutdown()


# ---------------------------------------------------------------------- markup and escapes


@pytest.mark.parametrize(
    "keys, typed",
    [(("left_square_bracket", "slash"), "[/"), (("left_square_bracket", "b", "right_square_bracket"), "[b]")],
    ids=["crash", "bold"],
)
async def test_find_text_is_shown_as_typed_not_parsed_as_markup(tmp_path, upstream, keys, typed):
    """Was a finding: The text of `/` goes into every table's border title
    (`_fill`: ``match “{self.find}”``), and Textual parses a border title as markup:
    `[/` (two keys) raises MarkupError in the `find` watcher and the App stops
    (in-process: Veylor stops with it); `[b]` shows `“”` and bolds the rest."""
    port = free_port()
    main = write_config(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{ws: {{websocket: {{port: {port}, path: /ws}}}}}}
        routes: {{all: {{from: feed, to: ws}}}}
        """,
    )
    async with serving(main) as server:
        app = VeylorApp(InProcess(server))
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: "feed|all|ws" in cells(app, "graph"), "the edge")
            graph = app.tables["graph"]
            await pilot.press("slash", *keys)
            await pilot.pause(0.3)
            assert app.is_running, f"the TUI stopped when {typed!r} was typed after /"
            title = graph._border_title.plain
            assert f"“{typed}”" in title and not graph._border_title.spans, title
            await pilot.press("escape", "q")


async def test_configuration_text_reaches_the_screen_without_escape_sequences(tmp_path, upstream):
    """Was a finding: The schema lets a source URL (`[^\\s]*`) and a WebSocket path
    (`[^\\s?#]*`) hold ESC: YAML's "\\e" in any main file or drop-in. The sources table's
    url and the endpoints table's address are drawn from them as they are: the
    segments Textual writes to the terminal carry ESC [2J (clear the screen), ESC ] 0 ;
    (set the window title), ... (Tapped messages are escaped; these are not)."""
    port = free_port()
    main = write_config(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}?x=\\e]0;owned\\e\\\\\\e[2J"}}}}
        endpoints: {{ws: {{websocket: {{port: {port}, path: "/ws\\e[5mBLINK"}}}}}}
        routes: {{all: {{from: feed, to: ws}}}}
        """,
    )
    async with serving(main) as server:
        app = VeylorApp(InProcess(server))
        async with app.run_test(size=(200, 48)) as pilot:
            await until(pilot, lambda: "feed" in cells(app, "sources"), "the source")
            await until(pilot, lambda: "ws" in cells(app, "endpoints"), "the endpoint")
            await pilot.pause(0.2)
            url, address = cells(app, "sources")["feed"][10], cells(app, "endpoints")["ws"][7]
            assert "owned" in url and "BLINK" in address  # shown, somehow
            for name in ("sources", "endpoints"):
                drawn = screen_text(app.tables[name])
                assert ESC not in drawn, f"an escape sequence goes to the terminal from {name}: {drawn!r}"
            await pilot.press("q")


async def test_an_upstream_close_reason_reaches_the_log_pane_without_escape_sequences(tmp_path, upstream):
    """Was a finding: An upstream closes its connection with a reason holding ESC ] 0 ; ... ESC \\
    (set the terminal's title) or ESC [ 2 J: Veylor logs "connection to URL closed (code
    1000, REASON)" and the log pane (RichLog, Text) draws the line as it is: Rich strips
    BEL, CR, BS, VT, FF only, so ESC goes to the operator's terminal. The tap escapes
    what upstreams send; the log pane does not."""
    port = free_port()
    main = write_config(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}", reconnect: {{initial_delay: 0.1}}}}}}
        endpoints: {{ws: {{websocket: {{port: {port}, path: /ws}}}}}}
        routes: {{all: {{from: feed, to: ws}}}}
        """,
    )
    async with serving(main) as server:
        buffer = LogBuffer()
        logging.getLogger().addHandler(buffer)
        try:
            app = VeylorApp(InProcess(server), logs=buffer)
            async with app.run_test(size=(200, 48)) as pilot:
                await upstream.wait_connected()
                pane = app.query_one("#logs", RichLog)
                await upstream.connections[0].close(1000, "bye \x1b]0;owned\x1b\\ \x1b[2J")
                await until(
                    pilot, lambda: any("owned" in line.text for line in pane.lines), "the close logged"
                )
                drawn = [line.text for line in pane.lines if "owned" in line.text]
                assert not any(ESC in line for line in drawn), f"ESC reaches the terminal: {drawn!r}"
                await pilot.press("q")
        finally:
            logging.getLogger().removeHandler(buffer)


Terminal = Pty  # veylor --tui on a pseudo-terminal the test holds


async def test_an_upstream_cannot_set_the_operators_terminal_title(tmp_path, upstream):
    """Was a finding (the same, end to end): `veylor --tui` in a real pseudo-terminal; the
    upstream closes with the reason ESC ] 0 ; owned ESC \\: the bytes the terminal
    receives hold that OSC sequence as it is (a terminal sets its title; other
    sequences clear the screen, move the cursor, or on some terminals write files or
    answer back)."""
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        f'sources: {{feed: {{url: "{upstream.url}", reconnect: {{initial_delay: 0.1}}}}}}\n'
        f"endpoints: {{ws: {{websocket: {{port: {port}, path: /ws}}}}}}\n"
        "routes: {all: {from: feed, to: ws}}\n"
    )
    term = Terminal(tmp_path, ["--tui", "-c", "config.yaml", "--no-watch"], columns=300)
    try:
        await term.until("\u2192 all".encode(), "the graph")
        await upstream.wait_connected()
        await upstream.connections[0].close(1000, "\x1b]0;owned\x1b\\")
        await term.until(b"owned", "the close reason on the screen", timeout=10)
        term.proc.terminate()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while term.proc.poll() is None and loop.time() < deadline:
            term.drain()
            await asyncio.sleep(0.05)
        written = b"\x1b]0;owned" in term.seen
        assert not written, "the upstream's OSC sequence was written to the terminal as it is"
    finally:
        term.close()


async def test_sigterm_stops_veylor_whose_terminal_stopped_reading(tmp_path, upstream):
    """Was a finding: The terminal stops reading (a stalled ssh connection) and stays so;
    SIGTERM: the TUI quits (its writer drops frames: fine), run.in_process puts the
    stderr log handler back, and the shutdown's log lines are written to the full
    terminal from the event loop: write(2) blocks it for good (seen with faulthandler:
    Server.shutdown's `log.info("stopped")`, in StreamHandler.emit). Veylor never
    exits; a supervisor waits for its stop timeout and kills it. (test_tui_pty's
    SIGTERM case reads the terminal while it waits for the exit.)"""
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        f'sources: {{feed: {{url: "{upstream.url}"}}}}\n'
        f"endpoints: {{ws: {{websocket: {{port: {port}, path: /ws}}}}}}\n"
        "routes: {all: {from: feed, to: ws}}\n"
    )
    term = Terminal(tmp_path, ["--tui", "-c", "config.yaml", "--no-watch"])
    try:
        await term.until("\u2192 all".encode(), "the graph")
        await upstream.wait_connected()
        for _ in range(15):  # the terminal reads no more; whole screens fill it
            os.write(term.master, b"?")
            await asyncio.sleep(0.05)
            os.write(term.master, b"\x1b")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        term.proc.terminate()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 8
        while term.proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.1)  # not reading
        assert term.proc.poll() is not None, "Veylor still runs 8 s after SIGTERM (its terminal stalled)"
    finally:
        term.close()


async def test_tapped_messages_reload_problems_and_where_are_never_markup(tmp_path, upstream):
    """Held: Rich markup in what an upstream sends (tap pane), in a refused drop-in's
    name and key (status line, notification), and in the sub title, is shown as it
    is; the tap pane escapes ESC and newlines."""
    port = free_port()
    (tmp_path / "routes.d").mkdir()
    main = write_config(
        tmp_path,
        f"""
        include: ["routes.d/*.yaml"]
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{ws: {{websocket: {{port: {port}, path: /ws}}}}}}
        routes: {{all: {{from: feed, to: ws}}}}
        """,
    )
    async with serving(main) as server:
        reader = InProcess(server)
        reader.where = "http://[::1]:9900 [b]x[/b] [/]"
        app = VeylorApp(reader)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: "feed|all|ws" in cells(app, "graph"), "the edge")
            assert "[::1]:9900 [b]x[/b] [/]" in app.sub_title
            app.tables["graph"].focus()
            await pilot.press("m")
            await until(pilot, lambda: "all" in server.runtime.taps, "the tap on")
            await upstream.wait_connected()
            await upstream.send("[/] [bold red]x[/bold red] [@click=app.quit]q[/]\x1b[2J\nsecond")
            tap = app.query_one("#tap", Static)
            await until(pilot, lambda: "second" in str(tap.render()), "the tapped message")
            line = str(tap.render()).splitlines()[0]
            assert line == r"[/] [bold red]x[/bold red] [@click=app.quit]q[/]\x1b[2J\nsecond"
            assert app.is_running

            (tmp_path / "routes.d" / "[red]bad.yaml").write_text("routes:\n  '[/]x': {from: feed, to: ws}\n")
            await pilot.press("r")
            status = app.query_one("#status", Static)
            await until(pilot, lambda: "refused" in str(status.render()), "the refused reload")
            shown = str(status.render())
            assert "[red]bad.yaml:2" in shown and "[/]x" in shown, shown
            assert app.is_running
            await pilot.press("q")


# ---------------------------------------------------------------------- veylor top against odd admin endpoints


@contextlib.asynccontextmanager
async def odd_admin(handler):
    """An HTTP server on 127.0.0.1 that answers every request with ``handler``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.2)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def top_until_stale(address: str, timeout: float = 8.0) -> tuple[VeylorApp, str]:
    app = VeylorApp(OverHttp(target(None, address)))
    async with app.run_test(size=(160, 48)) as pilot:
        status = app.query_one("#status", Static)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while "STALE" not in str(status.render()) and app.is_running and loop.time() < deadline:
            await pilot.pause(0.1)
        shown = str(status.render())
        assert app.is_running, "veylor top stopped"
        t0 = time.perf_counter()
        await pilot.press("t")  # still answers keys
        assert time.perf_counter() - t0 < 1.0
        await pilot.press("q")
    return app, shown


@pytest.mark.parametrize(
    "status, body",
    [(200, {"status": "ok"}), (502, {"message": "Bad gateway"})],
    ids=["another-service's-json", "a-proxy's-json-error"],
)
async def test_top_says_stale_when_the_admin_endpoint_answers_json_that_is_not_a_state_view(status, body):
    """Was a finding: `veylor top --admin` pointed at another service, a reverse proxy's JSON
    error page (any status: the reader does not look at it) or a Veylor of another
    schema: the body is a JSON object, so OverHttp returns it, and the refresh
    (`view["config"]`, `view["time"]`, ...) raises KeyError/TypeError in the poll
    worker: Textual exits the App with the traceback instead of saying STALE."""

    async def handler(request):
        return web.json_response(body, status=status)

    async with odd_admin(handler) as address:
        _, shown = await top_until_stale(address)
    assert "STALE" in shown


async def test_top_says_stale_on_garbage_and_keeps_answering_keys():
    """Held: Not JSON (with an escape sequence and markup in it), a JSON list: STALE,
    shown as text, and the keys still work."""
    mode = {"now": "garbage"}

    async def handler(request):
        if mode["now"] == "garbage":
            return web.Response(text="<html>\x1b[2J[/]</html>")
        return web.json_response([1, 2, 3])

    async with odd_admin(handler) as address:
        for now in ("garbage", "list"):
            mode["now"] = now
            _, shown = await top_until_stale(address)
            assert "STALE" in shown, (now, shown)
            assert ESC not in shown


async def test_top_says_stale_naming_a_field_it_cannot_read_and_keeps_answering_keys():
    """A schema-1 state view in which a field the TUI reads is not what it reads there
    (a count as text, NaN, an edge without its count): STALE, naming the field, and the
    keys still work. What comes over HTTP is checked as it arrives (veylor/tui/shape.py):
    the drawing itself catches nothing, so that a mistake of the TUI's own shows."""
    good = {
        "schema": 1,
        "pid": 1,
        "time": 1_790_000_000.0,
        "config": {"generation": 1, "digest": "0" * 24},
        "reloads": {"last": None},
        "sources": {"feed": {"state": "connected", "messages_in": 1, "bytes_in": 1, "connects": 1}},
        "routes": {"all": {"filter": "everything", "filtered": 0}},
        "edges": [{"source": "feed", "route": "all", "endpoint": "ws", "messages": 1}],
        "endpoints": {
            "ws": {"address": "ws://127.0.0.1:1/ws", "clients": 0, "messages_out": 1, "received": 0}
        },
    }
    bad = {
        "sources['feed'].messages_in is not a number": ("sources", "feed", "messages_in", "many"),
        "endpoints['ws'].received is not a number": ("endpoints", "ws", "received", float("nan")),
        "edges[0].messages is missing": ("edges", 0, "messages", None),
    }
    mode: dict[str, Any] = {"now": None}

    async def handler(request):
        view = json.loads(json.dumps(good))
        if mode["now"] is not None:
            *path, key, value = bad[mode["now"]]
            entry = view
            for step in path:
                entry = entry[step]
            if value is None:
                del entry[key]
            else:
                entry[key] = value
        return web.json_response(view)

    async with odd_admin(handler) as address:
        reader = OverHttp(target(None, address))
        try:
            assert (await reader.read())["sources"]["feed"]["messages_in"] == 1  # the good one passes
        finally:
            await reader.close()
        for said in bad:
            mode["now"] = said
            _, shown = await top_until_stale(address)
            assert "STALE" in shown and said in shown, (said, shown)


async def test_top_says_stale_when_the_admin_endpoint_does_not_answer():
    """Was a finding: An admin endpoint that accepts the request and never answers (a body
    that drips forever: the same): `poll` is an exclusive worker started every 0.5 s
    (REFRESH), so each new one cancels the one in flight before its 2 s timeout
    (reader.TIMEOUT) fires: Unavailable is never raised, and the screen says
    "connecting…" for good instead of STALE."""

    async def handler(request):
        await asyncio.sleep(30)

    async with odd_admin(handler) as address:
        _, shown = await top_until_stale(address, timeout=6.0)
    assert "STALE" in shown, shown


async def test_top_says_stale_when_veylor_hangs(tmp_path, upstream):
    """Was a finding: The daemon hangs (SIGSTOP here; a stuck loop, a swapping host): its
    admin endpoint accepts connections (the kernel does) and never answers. Every
    read is cancelled by the next poll before it times out, so veylor top keeps the
    last state on screen, without STALE, as if it were live, for as long as the hang
    lasts."""
    port, admin = free_port(), free_port()
    main = write_config(
        tmp_path,
        f"""
        admin: {{listen: "127.0.0.1:{admin}"}}
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{ws: {{websocket: {{port: {port}, path: /ws}}}}}}
        routes: {{all: {{from: feed, to: ws}}}}
        """,
    )
    daemon = await VeylorProcess("-c", str(main), "--no-watch").start()
    try:
        app = VeylorApp(OverHttp(target(str(main), None)))
        async with app.run_test(size=(160, 48)) as pilot:
            status = app.query_one("#status", Static)
            await until(pilot, lambda: "feed|all|ws" in cells(app, "graph"), "the attached graph")
            daemon.proc.send_signal(signal.SIGSTOP)
            try:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 6
                while "STALE" not in str(status.render()) and loop.time() < deadline:
                    await pilot.pause(0.1)
                shown = str(status.render())
            finally:
                daemon.proc.send_signal(signal.SIGCONT)
            assert "STALE" in shown, f"6 s into the hang the screen says: {shown!r}"
            await pilot.press("q")
    finally:
        await daemon.stop()


async def test_stale_says_why_when_the_admin_endpoint_times_out():
    """Was a finding: A read that times out says nothing of why:
    ``f"{self.where}: {exc or type(exc).__name__}"`` — an exception object is always
    true, and str(TimeoutError()) is empty: "STALE cannot read the state:
    http://127.0.0.1:PORT: "."""

    async def handler(request):
        await asyncio.sleep(30)

    async with odd_admin(handler) as address:
        reader = OverHttp(target(None, address))
        try:
            with pytest.raises(Exception) as caught:
                await reader.read()
        finally:
            await reader.close()
    message = str(caught.value)
    assert not message.endswith(": "), repr(message)
    assert "time" in message.lower(), repr(message)


# ---------------------------------------------------------------------- the tap


tap_config = config_of_routes


async def test_a_tap_keeps_no_more_of_a_message_than_it_can_show(tmp_path, upstream):
    """Was a finding: A tap keeps a reference to each of the last KEEP payloads whole, though
    it shows at most LINE characters of one (it reads 4 * LINE bytes). With the default
    max_message_size (16 MiB) that is up to 160 MiB per tap, 1.3 GiB with MAX_TAPS on,
    outside limits.buffered, and held for the lease (5 s) after the last read; anyone
    who can reach /graph can turn taps on. Here: 10 messages of 1 MiB, 10 MiB held to
    show 10 lines."""
    port = free_port()
    async with veylor_inprocess(tmp_path, tap_config(upstream, port, "all: {from: feed, to: ws}")) as rt:
        await upstream.wait_connected()
        tap = rt.tap("all")
        big = "x" * (1 << 20)
        for i in range(KEEP):
            await upstream.send(f"{i:02d}{big}")
        await eventually(lambda: tap.seen == KEEP, 10, what="the tap's messages")
        shown = tap.as_dict()["messages"]
        assert len(shown) == KEEP and all(len(line) == LINE for line in shown)
        held = sum(len(data) for data, _, _ in tap.messages)
        assert held <= KEEP * LINE * 4, f"the tap holds {held:,} bytes to show {KEEP} lines of {LINE}"


async def test_a_steady_feed_is_neither_lost_nor_doubled_while_taps_go_on_and_off(
    tmp_path, upstream, monkeypatch
):
    """Held: A feed of numbered messages through an unfiltered and a filtered route to
    one endpoint; taps turned on and off (lease ended by the tick) 10 times, and a
    reload changing the tapped route's filter in between: the client gets every
    message exactly once, in order, and the route counters match what was sent."""
    monkeypatch.setattr(supervisor, "LEASE", 0.05)
    monkeypatch.setattr(supervisor, "TICK", 0.05)  # the tick that ends leases, sooner
    port = free_port()
    routes = """
        all: {from: feed, to: ws}
        odd: {from: feed, to: ws, filter: {text: {contains: "1"}}}
    """
    async with veylor_inprocess(tmp_path, tap_config(upstream, port, routes)) as rt:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/ws")
        await asyncio.sleep(0.1)
        sent = 0
        got: list[str] = []
        tapped = []

        async def receive() -> None:
            while True:
                got.append(await client.recv())

        receiving = asyncio.create_task(receive())
        try:
            for cycle in range(10):
                for _ in range(50):
                    await upstream.send(f"{sent:06d}")
                    sent += 1
                    if sent % 10 == 0:
                        await asyncio.sleep(0.001)
                tapped.append(rt.tap("all"))
                rt.tap("odd")
                for _ in range(50):
                    await upstream.send(f"{sent:06d}")
                    sent += 1
                    if sent % 10 == 0:
                        await asyncio.sleep(0.001)
                if cycle == 4:  # a reload while tapped: odd's filter changes
                    path = tmp_path / "config.yaml"
                    path.write_text(textwrap.dedent(tap_config(upstream, port, routes.replace('"1"', '"2"'))))
                    from veylor.config import load_config
                    from veylor.graph import build_graph

                    await rt.apply(build_graph(load_config(path, env={})))
                await eventually(lambda: not rt.taps, 5, what="the taps' leases to end")
            await eventually(lambda: len(got) >= sent, 10, what="every message")
        finally:
            receiving.cancel()
        assert got == [f"{i:06d}" for i in range(sent)]  # each once, in order
        assert rt.stats.route("all").messages == sent
        odd = rt.stats.route("odd")
        assert odd.messages + odd.filtered == sent
        assert rt.router.table["feed"].taps == ()
        assert len({id(t) for t in tapped}) == 10 and sum(t.seen for t in tapped) > 0  # on and off, really
        await client.close()


async def test_graph_tap_requests_hammered_with_odd_names_respect_the_cap_and_keep_the_relay_going(
    tmp_path, upstream
):
    """Held: 400 /graph?tap= requests, concurrently, for names that do not exist (markup,
    escapes, 4,000 characters, unicode, empty) and for ten routes that do: never more
    than MAX_TAPS taps, the others answered with an error naming the cap, the unknown
    names with "no such route", no 5xx; a client of the relay gets every message while
    this goes on; a reload that removes a tapped route ends its tap."""
    port, admin = free_port(), free_port()
    routes = "\n".join(f"r{i}: {{from: feed, to: ws}}" for i in range(10))
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(tap_config(upstream, port, routes)) + f'admin: {{listen: "127.0.0.1:{admin}"}}\n'
    )
    veylor = await VeylorProcess("-c", str(main), "--no-watch").start()
    try:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/ws")
        odd = ["[/]", "\x1b[2J", "x" * 4000, "é" * 100, "%00", "r1 ", "R1", "../r1"]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:

            async def graph(name: str) -> dict:
                async with http.get(
                    f"http://127.0.0.1:{admin}/graph", params={"clients": "", "tap": name}
                ) as r:
                    assert r.status == 200, (name, r.status)
                    return json.loads(await r.text())

            stop = asyncio.Event()

            async def feed() -> int:
                n = 0
                while not stop.is_set():
                    await upstream.send(f"m{n}")
                    n += 1
                    await asyncio.sleep(0.002)
                return n

            feeding = asyncio.create_task(feed())
            names = [f"r{i % 10}" for i in range(300)] + odd * 12 + [""] * 4
            answers = await asyncio.gather(*(graph(n) for n in names))
            stop.set()
            n = await feeding
            for _ in range(n):
                assert (await asyncio.wait_for(client.recv(), 5)).startswith("m")
            taps = {a["tap"]["route"] for a in answers if "tap" in a and "error" not in a["tap"]}
            assert len(taps) == MAX_TAPS, taps
            errors = {a["tap"]["error"] for a in answers if "tap" in a and "error" in a["tap"]}
            assert errors == {"no such route", f"{MAX_TAPS} routes are tapped already"}
            assert all("tap" not in a for a, name in zip(answers, names, strict=True) if name == "")
            # A reload removes a tapped route: its tap goes, another can start.
            tapped = sorted(taps)[0]
            main.write_text(main.read_text().replace(f"{tapped}: {{from: feed, to: ws}}", ""))
            async with http.post(f"http://127.0.0.1:{admin}/reload", headers={"X-Veylor-Reload": "1"}) as r:
                assert r.status == 200
            free = next(f"r{i}" for i in range(10) if f"r{i}" not in taps)
            for _ in range(40):
                if "error" not in (await graph(free))["tap"]:
                    break
                for name in taps - {tapped}:
                    await graph(name)  # keep the others on
                await asyncio.sleep(0.1)
            assert "error" not in (await graph(free))["tap"]
        await client.close()
    finally:
        await veylor.stop()


async def test_browsing_the_graph_with_the_tap_open_does_not_use_up_the_taps(tmp_path, upstream, monkeypatch):
    """Was a finding: With the tap pane open (m), each edge the cursor rests on for one
    refresh gets its route tapped; the TUI never releases the previous one, it stays
    on for its lease. Going down nine routes within the lease (5 s: easy with the
    arrow keys), the ninth shows "8 routes are tapped already" though the operator
    watches one route (and any other TUI or veylor top is refused a tap meanwhile).
    The lease is lengthened here only to make the timing deterministic."""
    monkeypatch.setattr(supervisor, "LEASE", 30.0)
    port = free_port()
    routes = "\n".join(f"r{i}: {{from: feed, to: ws}}" for i in range(MAX_TAPS + 2))
    main = write_config(tmp_path, tap_config(upstream, port, routes))
    async with serving(main) as server:
        app = VeylorApp(InProcess(server))
        async with app.run_test(size=(160, 48)) as pilot:
            graph = app.tables["graph"]
            await until(pilot, lambda: graph.row_count == MAX_TAPS + 2, "the edges")
            graph.focus()
            await pilot.press("m")
            tap = app.query_one("#tap", Static)
            for i in range(MAX_TAPS + 1):
                graph.move_cursor(i)
                route = graph.keys[i].split("|")[1]
                await until(
                    pilot, lambda r=route: app.selected_edge and app.selected_edge[1] == r, "selected"
                )
                try:
                    await until(pilot, lambda r=route: r in server.runtime.taps, f"{route} tapped", timeout=3)
                except AssertionError:
                    raise AssertionError(
                        f"after browsing {i + 1} routes the tap shows {str(tap.render())!r}; "
                        f"on: {sorted(server.runtime.taps)}"
                    ) from None
            await pilot.press("q")


# ---------------------------------------------------------------------- the event loop it shares


async def test_a_burst_of_log_lines_is_drawn_in_pieces_and_only_what_the_pane_keeps(tmp_path, upstream):
    """Was a finding: in-process, each refresh wrote every buffered line to the RichLog
    in one go, on the loop the relay shares (a RichLog.write renders the line: ~0.25 ms
    each; 1,000 lines, 500 clients reconnecting, stalled every client ~250 ms), though
    the pane keeps only 500. Now the lines come in pieces of 50, the last 500 only
    (what that costs the loop: benchmarks/tui_lag.py)."""
    port = free_port()
    main = write_config(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{ws: {{websocket: {{port: {port}, path: /ws}}}}}}
        routes: {{all: {{from: feed, to: ws}}}}
        """,
    )
    async with serving(main) as server:
        buffer = LogBuffer()
        logging.getLogger().addHandler(buffer)
        try:
            app = VeylorApp(InProcess(server), logs=buffer)
            async with app.run_test(size=(160, 48)) as pilot:
                await until(pilot, lambda: "feed|all|ws" in cells(app, "graph"), "the edge")
                app.paused = True  # the test drains the buffer itself
                await pilot.pause(0.6)
                pane = app.query_one("#logs", RichLog)
                pane.clear()
                log = logging.getLogger("veylor.endpoints")
                for i in range(1000):
                    log.warning("endpoint ws: client 127.0.0.1:%d connected (%d clients)", 40000 + i, i)
                pieces = sum(1 for _ in app.drain_logs())
                assert pieces >= 500 // 50 - 1 and not buffer.lines
                await pilot.pause(0.1)
                assert len(pane.lines) == 500 and "(999 clients)" in pane.lines[-1].text
                await pilot.press("q")
        finally:
            logging.getLogger().removeHandler(buffer)


async def test_a_key_redraws_through_the_drawing_in_pieces(tmp_path, upstream):
    """Was a finding: a key (each character typed after `/`, `s`, `t`, `p`) redrew
    every table at once (`show`, in one piece): with 1,000 edges, sources and endpoints
    ~30 ms of loop per keystroke. Now a key starts the drawing in pieces (the `draw`
    worker, a new one cancelling the one under way), never the one-piece `show`."""
    port = free_port()
    n = 1000
    endpoints = "\n".join(f"  e{i}: {{websocket: {{port: {port}, path: /e{i}}}}}" for i in range(n // 10))
    routes = "\n".join(f"  r{i}: {{from: feed, to: e{i % (n // 10)}}}" for i in range(n))
    main = tmp_path / "config.yaml"
    main.write_text(
        f'sources: {{feed: {{url: "{upstream.url}"}}}}\nendpoints:\n{endpoints}\nroutes:\n{routes}\n'
    )
    async with serving(main) as server:
        app = VeylorApp(InProcess(server))
        whole: list[int] = []
        app.show = lambda view: whole.append(1)  # type: ignore[attr-defined]
        drawn: list[int] = []
        draw = app.draw
        app.draw = lambda view: (drawn.append(1), draw(view))[1]  # type: ignore[method-assign]
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: app.tables["graph"].row_count == 100, "the graph", timeout=20)
            drawn.clear()
            for key in ("s", "s", "t", "t", "slash", "r", "1", "2", "escape", "p", "p"):
                await pilot.press(key)
            await until(pilot, lambda: app.tables["graph"].keys[0].startswith("feed|r"), "redrawn")
            assert whole == []
            # s, s, t, t, each character of the filter and its clearing, p and p: the
            # drawing in pieces every time (the one-piece drawing is gone altogether).
            assert len(drawn) >= 8
            await pilot.press("q")


# ---------------------------------------------------------------------- the table


async def test_the_table_at_its_edges():
    """Held: Empty: keys and clicks do nothing, no cursor key; 1,500 rows with the
    cursor at the bottom shrinking to three, then to none, then back: the rows are on
    screen from the top, the cursor on a row that exists; very wide cells are cut to
    the screen; the header stays."""
    from textual.app import App, ComposeResult

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield Table(id="t")

    def rows(names):
        return list(names), [(Text(n), Text(str(len(n)))) for n in names]

    app = One()
    async with app.run_test(size=(60, 12)) as pilot:
        t = app.query_one(Table)
        t.set_columns(("name", "len"), (False, True))
        t.focus()
        assert t.show([], [], None) is None
        for key in ("down", "up", "end", "home", "pagedown", "pageup", "right"):
            await pilot.press(key)
        await pilot.click(Table, offset=(3, 3))
        assert t.cursor_row == 0 and t.key_at(t.cursor_row) is None
        names = [f"n{i:04d}" for i in range(1500)]
        assert t.show(*rows(names), None) == "n0000"
        await pilot.press("end")
        await pilot.pause()
        assert t.key_at(t.cursor_row) == "n1499" and t.scroll_offset.y > 0
        assert t.show(*rows(["a", "bb", "ccc"]), "n1499") == "ccc"
        await pilot.pause()
        lines = screen_text(t).splitlines()
        assert [line.split()[0] for line in lines[:4]] == ["name", "a", "bb", "ccc"]
        assert t.show([], [], "ccc") is None
        await pilot.pause()
        assert screen_text(t).split()[:2] == ["name", "len"]
        wide = "w" * 5000
        assert t.show(*rows([wide, "x"]), None) == wide
        await pilot.pause()
        lines = screen_text(t).splitlines()
        assert len(lines[1]) <= 60 and lines[2].strip().startswith("x")


def test_the_help_says_how_many_rows_a_table_shows():
    """Was a finding: Help (and docs/observability.md's "Large graphs") say a table shows its
    first 200 rows; it shows ROWS = 100."""
    from veylor.tui.help import Help
    from veylor.tui.pane import ROWS

    assert f"first {ROWS} rows" in Help.TEXT, "Help says: " + next(
        line for line in Help.TEXT.splitlines() if "rows" in line
    )
