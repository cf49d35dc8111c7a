"""The detail of a row (enter) and the last reload, whole (l): what each says of the
fixed state view, that they follow the next view the app reads, that an item a reload
removed says gone, that escape, enter and q close them, and that enter in the filter
still keeps the filter. The lines are a pure function of the view, tested first on
their own."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

pytest.importorskip("textual")

from textual.containers import VerticalScroll
from textual.widgets import Input, Static

from veylor.tui.app import VeylorApp
from veylor.tui.detail import Detail, describe
from veylor.tui.live import UNREAD
from veylor.tui.reloads import Reloads, reload_lines
from veylor.tui.table import Table
from veylor.tui.text import when

from .fixed_view import T0, FixedReader, view

SIZE = (100, 40)


def fixed(at: float = 0.0) -> dict[str, Any]:
    """The fixed view, with what the tests look for that it does not have: an endpoint
    that did not deliver for two reasons and refused for one, a client that is behind."""
    v = view(at, 10)
    public = v["endpoints"]["public"]
    public.update(lost_slow=3, unframeable=0, refused_origin=2, slow_clients=1, rate_closed=4)
    dashboard = v["endpoints"]["dashboard"]["client_list"][0]
    dashboard.update(dropped=17, buffered=4096)
    return v


def text(lines) -> str:
    return "\n".join(line.plain for line in lines)


PROBLEMS = [
    {
        "file": "routes.d/50-dashboard.yaml",
        "line": 12,
        "column": 5,
        "path": "routes.r07.filter",
        "message": "unknown filter type 'jsn'",
        "severity": "error",
    },
    {
        "file": "routes.d/51-more.yaml",
        "line": None,
        "column": None,
        "path": "",
        "message": "YAML syntax error",
        "severity": "error",
    },
    {
        "file": "config.yaml",
        "line": 3,
        "column": 1,
        "path": "endpoints.old",
        "message": "no route goes to it",
        "severity": "warning",
    },
]


def big_reload(v: dict[str, Any]) -> dict[str, Any]:
    """``v`` whose last reload (by SIGHUP) has 60 changes, 2 steps and 3 problems."""
    v["reloads"]["last"] = {
        "reason": "SIGHUP",
        "ok": False,
        "applied": False,
        "generation": 3,
        "digest": "4e1c0a9b27d3f00dfeedbeef",
        "changes": [f"+ route r{i:02d}" for i in range(60)],
        "steps": [
            {"op": "add", "name": f"route r{i:02d}", "detail": ["bound 0.0.0.0:9000"]} for i in range(2)
        ],
        "problems": copy.deepcopy(PROBLEMS),
        "error": None,
        "at": v["time"] - 30,
        "duration_ms": 12.5,
    }
    return v


def checked_after_change(v: dict[str, Any]) -> dict[str, Any]:
    """``v`` whose last reload (admin, 10 s ago) changed nothing, after the one that did."""
    change = v["reloads"]["last"]
    v["reloads"]["last_change"] = change
    v["reloads"]["last"] = dict(change, reason="admin", changes=[], at=v["time"] - 10, applied=False)
    return v


# ---------------------------------------------------------------------- the lines


def test_backing_off_source_says_why_and_when_it_tries_again():
    shown = text(describe(fixed(), "source", "kraken"))
    assert "backing off, next try in 12s" in shown
    assert "connection refused" in shown
    assert "4 in a row" in shown
    assert "attempts            9" in shown
    assert "(in 12s)" in shown  # the next try as clock time
    assert "1m35s ago" in shown  # the last message
    assert "wss://ws.kraken.com/" in shown
    assert "kraken: filter everything; passed 4,100" in shown  # its route, and the edge
    assert "→ public" in shown


def test_connected_source_shows_its_uptime_ping_and_large_numbers_separated():
    shown = text(describe(fixed(), "source", "binance"))
    assert "connected for       50m00s" in shown
    assert "12.0 ms" in shown
    assert "1,200,000" in shown  # messages in
    assert "last error          none" in shown
    assert "dashboard-majors: filter json" in shown


def test_endpoint_groups_undelivered_refused_and_closed_by_reason():
    lines = text(describe(fixed(), "endpoint", "public")).splitlines()
    assert "undelivered         73" in lines  # dropped 70 + lost_slow 3
    assert any(line.startswith("  dropped           70") for line in lines)
    assert any(line.startswith("  lost_slow         3") for line in lines)
    assert not any("unframeable" in line for line in lines)  # zero: not listed
    assert "refused             3" in lines
    assert any(line.startswith("  refused_origin    2") for line in lines)
    assert any(line.startswith("  rate_closed       4") for line in lines)
    assert "slow clients now    1" in lines
    assert not any("10.0.0.7" in line for line in lines)  # its clients are not listed here
    assert any(line.startswith("from binance by all-trades") for line in lines)
    assert any(line.startswith("from kraken by kraken") for line in lines)


def test_client_shows_its_drops_and_what_it_has_yet_to_read():
    shown = text(describe(fixed(), "client", "dashboard|127.0.0.1:60111"))
    assert "endpoint            dashboard" in shown
    assert "dropped             17" in shown
    assert "buffered            4,096 bytes" in shown
    assert "messages            499,999" not in shown and "messages            500,000" in shown


def test_edge_shows_its_route_filter_and_source_state():
    shown = text(describe(fixed(), "edge", "binance|dashboard-majors|dashboard"))
    assert 'filter              json s in ["BTCUSDT", "ETHUSDT"]' in shown
    assert "passed              400,000" in shown
    assert "filtered out        800,000" in shown
    assert "● connected" in shown
    down = text(describe(fixed(), "edge", "kraken|kraken|public"))
    assert "backing off" in down and "connection refused" in down


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("source", "gone"),
        ("endpoint", "gone"),
        ("client", "public|10.9.9.9:1"),
        ("client", "gone|10.0.0.7:51234"),
        ("edge", "binance|gone|public"),
        ("edge", "binance"),
    ],
)
def test_an_item_not_in_the_view_says_gone(kind, key):
    assert text(describe(fixed(), kind, key)).startswith("gone: ")


def test_text_from_outside_is_escaped_and_never_markup():
    v = fixed()
    v["sources"]["kraken"]["last_error"] = "[bold]boom[/bold] \x1b]0;owned\x07"
    shown = describe(v, "source", "kraken")
    assert "[bold]boom[/bold] \\x1b]0;owned\\x07" in text(shown)
    assert not any("\x1b" in line.plain for line in shown)


def test_when_is_clock_time_and_how_long_ago_or_until():
    assert when(T0 - 192, T0).endswith(" (3m12s ago)")
    assert when(T0 + 12, T0).endswith(" (in 12s)")


def test_reload_lists_every_change_step_and_problem_with_counts():
    lines = text(reload_lines(big_reload(fixed()))).splitlines()
    assert "reloads             2 ok, 0 failed" in lines
    assert "trigger             SIGHUP" in lines
    assert "in all              60 changes, 2 steps, 3 problems" in lines
    assert "outcome             refused: the running configuration stays" in lines
    assert "changes (60)" in lines and "steps (2)" in lines and "problems (3)" in lines
    assert [line for line in lines if line.startswith("  + route")] == [
        f"  + route r{i:02d}" for i in range(60)
    ]
    assert "  routes.d/50-dashboard.yaml:12 routes.r07.filter: unknown filter type 'jsn'" in lines
    assert "  routes.d/51-more.yaml: YAML syntax error" in lines
    assert "  warning: config.yaml:3 endpoints.old: no route goes to it" in lines
    assert "      bound 0.0.0.0:9000" in lines  # a step's detail


def test_a_check_that_changed_nothing_shows_the_last_change_after_it():
    lines = text(reload_lines(checked_after_change(fixed()))).splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("checked, no change ("))
    assert "(10s ago)" in lines[first]
    assert lines[first + 1] == "trigger             admin"
    assert lines.index("the last change") > first
    assert "trigger             file change: 50-dashboard.yaml" in lines
    assert "  + route dashboard-majors" in lines and "  + endpoint dashboard" in lines
    assert any(line.startswith("outcome             applied: generation 3") for line in lines)


def test_no_reload_yet():
    v = fixed()
    v["reloads"]["last"] = None
    assert "no reload yet" in text(reload_lines(v))


# ---------------------------------------------------------------------- the screens


class Reader(FixedReader):
    """The fixed reader, reading the views a test sets (the last one again and again)."""

    def __init__(self, *views: dict[str, Any]) -> None:
        super().__init__()
        self.views = list(views) or [fixed()]


async def until(pilot, predicate, what: str, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def ready(pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: app.view is not None and app.tables["sources"].row_count > 0, "the tables")


def body(app) -> str:
    """The text of the detail or last-reload screen on top ("" before it is drawn)."""
    found = app.screen.query("#live-body")
    shown = str(found.first(Static).content) if found else ""
    return "" if shown == UNREAD else shown


async def open_detail(pilot, table_id: str, key: str) -> None:
    """Put the cursor of a table on ``key`` with the arrow keys, and press enter."""
    app = pilot.app
    table = app.query_one(f"#{table_id}", Table)
    table.focus()
    await until(pilot, lambda: key in table.keys, f"{key} in {table_id}")
    for _ in range(len(table.keys)):
        if table.key_at(table.cursor_row) == key:
            break
        await pilot.press("down")
    assert table.key_at(table.cursor_row) == key
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, Detail) and body(app), "the detail")


async def test_enter_on_a_backing_off_source_shows_its_error_failures_and_next_try():
    app = VeylorApp(Reader())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await open_detail(pilot, "sources", "kraken")
        shown = body(app)
        assert "connection refused" in shown
        assert "4 in a row" in shown
        assert "next try in 12s" in shown
        assert "source kraken" in str(app.screen.query_one(VerticalScroll).border_title)


async def test_enter_on_an_endpoint_shows_each_undelivered_reason():
    app = VeylorApp(Reader())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await open_detail(pilot, "endpoints", "public")
        shown = body(app)
        assert "undelivered         73" in shown
        assert "  dropped           70" in shown and "  lost_slow         3" in shown


async def test_enter_on_a_client_shows_its_dropped_and_buffered():
    app = VeylorApp(Reader())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        endpoints = app.tables["endpoints"]
        endpoints.focus()
        while endpoints.key_at(endpoints.cursor_row) != "dashboard":
            await pilot.press("down")  # the clients table follows the endpoint
        clients = app.tables["clients"]
        await until(pilot, lambda: clients.keys == ["127.0.0.1:60111"], "dashboard's clients")
        await open_detail(pilot, "clients", "127.0.0.1:60111")
        shown = body(app)
        assert "endpoint            dashboard" in shown
        assert "dropped             17" in shown
        assert "buffered            4,096 bytes" in shown


async def test_enter_on_an_edge_shows_its_route_filter_and_no_table_focused_opens_the_graphs():
    app = VeylorApp(Reader())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await open_detail(pilot, "graph", "binance|dashboard-majors|dashboard")
        assert 'json s in ["BTCUSDT", "ETHUSDT"]' in body(app)
        await pilot.press("escape")
        app.set_focus(None)
        await pilot.press("enter")  # the graph's row under its cursor
        await until(pilot, lambda: isinstance(app.screen, Detail) and body(app), "the detail")
        assert body(app).startswith("edge ")


async def test_the_detail_follows_the_next_view_and_says_gone_when_removed():
    reader = Reader()
    app = VeylorApp(reader)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await open_detail(pilot, "sources", "kraken")
        later = fixed(5.0)
        later["sources"]["kraken"].update(failures=5, last_error="TLS handshake failed")
        reader.views = [later]
        await until(pilot, lambda: "5 in a row" in body(app), "the next view")
        assert "TLS handshake failed" in body(app)
        removed = fixed(6.0)
        del removed["sources"]["kraken"]
        removed["edges"] = [e for e in removed["edges"] if e["source"] != "kraken"]
        reader.views = [removed]
        await until(pilot, lambda: "gone: removed at the last reload?" in body(app), "gone")
        assert isinstance(app.screen, Detail)  # still open, saying so


async def test_escape_enter_and_q_close_the_detail_and_q_does_not_quit():
    app = VeylorApp(Reader())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        for key in ("escape", "enter", "q"):
            await open_detail(pilot, "sources", "binance")
            await pilot.press(key)
            await until(pilot, lambda: app.screen is app.default_screen, f"{key} closing it")
        assert app.is_running
        assert app.tables["sources"].has_focus  # back where it was


async def test_enter_in_the_filter_keeps_the_filter_and_opens_no_detail():
    app = VeylorApp(Reader())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("slash", "k", "r", "a", "enter")
        find = app.query_one("#find", Input)
        graph = app.tables["graph"]
        await until(pilot, lambda: graph.keys == ["kraken|kraken|public"], "the filter")
        assert app.screen is app.default_screen
        assert find.display and find.value == "kra" and app.find == "kra"
        assert graph.has_focus
        await pilot.press("enter")  # now the graph's: the filtered row's detail
        await until(pilot, lambda: isinstance(app.screen, Detail) and body(app), "the detail")
        assert "kraken → kraken → public" in body(app)


async def test_l_lists_every_change_and_problem_and_scrolls_to_the_last():
    app = VeylorApp(Reader(big_reload(fixed())))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, Reloads) and body(app), "the last reload")
        lines = body(app).splitlines()
        assert "changes (60)" in lines and "problems (3)" in lines
        assert all(f"  + route r{i:02d}" in lines for i in range(60))
        last = lines.index("  warning: config.yaml:3 endpoints.old: no route goes to it")
        scroll = app.screen.query_one(VerticalScroll)
        height = scroll.scrollable_content_region.height
        assert scroll.region.bottom <= SIZE[1]  # it fits the screen: it scrolls
        assert scroll.scroll_y == 0 and last >= height  # the last problem is below
        await pilot.press("end")
        await until(pilot, lambda: scroll.scroll_y == scroll.max_scroll_y > 0, "scrolled")
        assert scroll.scroll_y <= last < scroll.scroll_y + height
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.default_screen, "closed")


async def test_l_says_checked_no_change_then_the_last_change_and_follows_the_view():
    reader = Reader(checked_after_change(fixed()))
    app = VeylorApp(reader)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, Reloads) and body(app), "the last reload")
        shown = body(app)
        assert shown.index("checked, no change") < shown.index("+ route dashboard-majors")
        assert "the last change" in shown
        reader.views = [big_reload(fixed(3.0))]
        await until(pilot, lambda: "changes (60)" in body(app), "the next view")
        assert "checked, no change" not in body(app)


async def test_a_detail_opened_while_paused_shows_the_view_on_the_screen():
    app = VeylorApp(Reader())
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("p")  # no new view is drawn from now on
        await pilot.pause(0.3)
        await open_detail(pilot, "sources", "kraken")
        assert "4 in a row" in body(app)


async def test_before_the_first_view_the_screens_say_so():
    class Silent(Reader):
        async def read(self) -> dict[str, Any]:
            await asyncio.sleep(60)
            raise AssertionError("never read")

    app = VeylorApp(Silent())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, Reloads), "the last reload")
        await pilot.pause(0.1)
        assert str(app.screen.query_one("#live-body", Static).content) == UNREAD
        await pilot.press("escape", "enter")  # the graph is empty: nothing to detail
        await pilot.pause(0.1)
        assert app.screen is app.default_screen


def test_an_edges_detail_says_what_its_route_keeps_for_joiners():
    """A route with snapshot: its edge's detail says what it keeps, and the endpoint's
    snapshots sent (issue 26)."""
    from veylor.tui.detail import describe

    from .fixed_view import view

    v = view(0.0, 1)
    v["routes"]["all-trades"]["kept"] = {
        "setting": "the last message per s (at most 10,000 keys, 64MiB)",
        "messages": 1234,
        "bytes": 56789,
        "evicted": 2,
        "unkept": 3,
    }
    v["routes"]["all-trades"].update(conflate="the latest per s every 250ms", conflated=4321, unkeyed=5)
    v["routes"]["all-trades"].update(
        history={"setting": "the last 5 messages by seq", "messages": 5, "bytes": 55, "evicted": 1,
                 "unkept": 0, "unordered": 2, "first": 6, "last": 10},
        resumes_ok=3, resumes_lost=1,
    )  # fmt: skip
    v["endpoints"]["public"]["snapshots"] = 7
    v["endpoints"]["public"]["snapshot_messages"] = 8638
    text = "\n".join(str(line) for line in describe(v, "edge", "binance|all-trades|public"))
    assert "the last message per s" in text and "1,234 messages, 56,789 bytes" in text
    assert "7 (8,638 messages)" in text
    assert "the latest per s every 250ms" in text and "4,321" in text
    assert "5 messages (6 .. 10)" in text and "3 whole, 1 past it" in text
    other = "\n".join(str(line) for line in describe(v, "edge", "binance|dashboard-majors|dashboard"))
    assert "snapshot" not in other  # (a route that keeps nothing says nothing of it)
