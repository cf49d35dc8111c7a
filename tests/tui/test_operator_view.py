"""The operator's first ten seconds, at any terminal size (issue 25): with the fixed
view of three sources (one backing off) and four endpoints (one with a slow client),
every table shows its rows and its most important columns at 80x24, a terminal below
the minimum says how big it must be, the summary line answers "is every upstream up,
is anything dropped, is any client slow", the clients are listed worst first in
colour, digits sort, the focused table is marked, and wide terminals show rates and
totals side by side."""

from __future__ import annotations

import pytest

pytest.importorskip("textual")

from textual.widgets import Static

from veylor.tui.app import VeylorApp
from veylor.tui.layout import MIN_HEIGHT, MIN_WIDTH

from .fixed_view import FixedReader

SOURCES = ("binance", "coinbase", "kraken")
ENDPOINTS = ("dashboard", "ipc", "mobile", "public")


def shown(widget) -> str:
    """What a line-drawn widget puts on the screen, line by line."""
    return "\n".join("".join(s.text for s in widget.render_line(y)) for y in range(widget.size.height))


async def settled(pilot) -> VeylorApp:
    app = pilot.app
    for _ in range(100):
        if app.rates.get("source", "binance") is not None and app.tables["sources"].row_count:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.2)
    return app


async def test_80x24_shows_every_source_and_endpoint_with_the_columns_that_matter():
    async with VeylorApp(FixedReader()).run_test(size=(80, 24)) as pilot:
        app = await settled(pilot)
        sources, endpoints = shown(app.tables["sources"]), shown(app.tables["endpoints"])
        for name in SOURCES:
            assert name in sources
        for name in ENDPOINTS:
            assert name in endpoints
        header = sources.splitlines()[0]
        for column in ("source", "state", "msgs/s", "last error"):
            assert column in header
        assert "connection refused" in sources and "backing off" in sources  # why kraken is down
        assert "url" not in header  # (the least important, left out first)
        header = endpoints.splitlines()[0]
        for column in ("endpoint", "clients", "drops/s", "slow"):
            assert column in header
        for table in app.tables.values():  # nothing wider than its table: no sideways scroll
            assert table.virtual_size.width <= table.scrollable_content_region.width
            assert table.row_count == 0 or table.scrollable_content_region.height >= 2  # header and a row
        assert app.has_class("-short") and not app.query_one("Header").display


@pytest.mark.parametrize("size", [(MIN_WIDTH - 1, 30), (100, MIN_HEIGHT - 1), (40, 10)])
async def test_below_the_minimum_one_line_says_how_big_the_terminal_must_be(size):
    async with VeylorApp(FixedReader()).run_test(size=size) as pilot:
        app = await settled(pilot)
        note = app.query_one("#toosmall", Static)
        assert note.display and not app.tables["graph"].display
        text = str(note.render())
        assert f"at least {MIN_WIDTH}x{MIN_HEIGHT}" in text and f"{size[0]}x{size[1]}" in text
        await pilot.resize_terminal(120, 40)  # made larger: the dashboard again
        await pilot.pause(0.3)
        assert not note.display and "kraken" in shown(app.tables["sources"])


async def test_the_summary_line_answers_up_dropped_and_slow_with_colour():
    async with VeylorApp(FixedReader()).run_test(size=(120, 40)) as pilot:
        app = await settled(pilot)
        line = app.query_one("#summary", Static).render()
        text = str(line)
        assert "2/3 sources up" in text and "285 clients" in text and "1 slow client" in text
        assert "1.2k/s dropped" in text
        styles = {text[span.start : span.end]: str(span.style) for span in line.spans}
        assert "red" in styles["2/3 sources up"]
        assert "yellow" in styles["1 slow client"]
        assert "red" in styles["1.2k/s dropped"]


async def test_the_clients_of_an_endpoint_are_listed_worst_first_in_colour():
    async with VeylorApp(FixedReader()).run_test(size=(120, 40)) as pilot:
        app = await settled(pilot)
        endpoints = app.tables["endpoints"]
        endpoints.focus()
        endpoints.move_cursor(endpoints.keys.index("mobile"))
        clients = app.tables["clients"]
        for _ in range(40):
            if clients.keys and clients.keys[0].startswith("10.1"):
                break
            await pilot.pause(0.05)
        assert clients.keys == ["10.1.4.20:33010", "10.1.4.31:48822", "10.1.5.2:51002"]
        assert clients.labels[1] == "buffered ▼"
        over, half, fine = (clients.get_row_at(i) for i in range(3))
        assert "red" in str(over[1].style) and str(over[1]) == "4,300,000"
        assert "red" in str(over[2].style) and str(over[2]) == "13,200"  # dropped for it
        assert "yellow" in str(half[1].style)
        assert str(fine[1].style) == "" and str(fine[2]) == "0"
        clients.focus()
        await pilot.press("3")  # by dropped; again: the other way
        assert clients.labels[2] == "dropped ▼"
        await pilot.press("3")
        assert clients.labels[2] == "dropped ▲"


async def test_the_sorted_column_is_kept_when_the_width_is_short():
    async with VeylorApp(FixedReader()).run_test(size=(80, 24)) as pilot:
        app = await settled(pilot)
        sources = app.tables["sources"]
        sources.focus()
        assert 10 not in dict(sources.shown)  # the url: left out at 80 columns
        for _ in range(10):  # to the url, the last and least important column
            await pilot.press("s")
        await pilot.pause(0.2)
        assert sources.labels[10].startswith("url ▼") and 10 in dict(sources.shown)
        assert "url ▼" in shown(sources).splitlines()[0]


async def test_the_focused_table_is_marked_and_the_sparkline_has_a_label_and_a_scale():
    async with VeylorApp(FixedReader()).run_test(size=(120, 40)) as pilot:
        app = await settled(pilot)
        graph, sources = app.tables["graph"], app.tables["sources"]
        assert app.focused is graph
        assert graph.styles.border_top[0] == "heavy" and sources.styles.border_top[0] == "round"
        await pilot.press("tab")
        assert app.focused is not graph and graph.styles.border_top[0] == "round"
        assert app.focused.styles.border_top[0] == "heavy"
        spark = str(app.query_one("#sparkline", Static).render())
        label = spark.splitlines()[0]
        assert "binance → all-trades → ipc" in label and "msgs/s" in label and "top 120.0k/s" in label


async def test_rates_and_totals_are_side_by_side_where_the_width_allows():
    async with VeylorApp(FixedReader()).run_test(size=(200, 60)) as pilot:
        app = await settled(pilot)
        graph = app.tables["graph"]
        assert "msgs/s (total)" in graph.labels
        row = [str(c) for c in graph.get_row_at(graph.keys.index("binance|all-trades|ipc"))]
        assert row[4] == "120.0k/s (1,320,000)"
        await pilot.press("t")
        await pilot.pause(0.2)
        assert "msgs (/s)" in graph.labels[4]
        row = [str(c) for c in graph.get_row_at(graph.keys.index("binance|all-trades|ipc"))]
        assert row[4] == "1,320,000 (120.0k/s)"
    async with VeylorApp(FixedReader()).run_test(size=(120, 40)) as pilot:
        app = await settled(pilot)
        assert "msgs/s" in app.tables["graph"].labels[4] and "(total)" not in app.tables["graph"].labels[4]


async def test_c_lists_the_clients_of_every_endpoint_worst_first():
    async with VeylorApp(FixedReader()).run_test(size=(120, 40)) as pilot:
        app = await settled(pilot)
        clients = app.tables["clients"]
        await pilot.press("c")
        for _ in range(40):
            if clients.row_count == 7:
                break
            await pilot.pause(0.05)
        assert clients.keys[:2] == ["mobile|10.1.4.20:33010", "mobile|10.1.4.31:48822"]
        assert clients.labels[:3] == ("client", "endpoint", "buffered ▼")
        assert str(clients.border_title).startswith("every endpoint: ")
        assert app.reader.clients_of is True
        clients.focus()
        await pilot.press("enter")  # the worst client's detail, of its own endpoint
        from veylor.tui.detail import Detail

        assert isinstance(app.screen, Detail) and app.screen.key == "mobile|10.1.4.20:33010"
        await pilot.press("escape")
        await pilot.press("c")
        for _ in range(40):
            if clients.row_count == 1:
                break
            await pilot.pause(0.05)
        assert clients.keys == ["127.0.0.1:60111"] and app.reader.clients_of == "dashboard"


async def test_the_tap_leaves_each_table_a_row_at_the_minimum_size():
    """At 60x18 the tap (m) took its 6 lines and left the tables their headers only: it
    now takes what is left once each table has its header and a row (3 lines at least)."""
    async with VeylorApp(FixedReader()).run_test(size=(MIN_WIDTH, MIN_HEIGHT)) as pilot:
        app = await settled(pilot)
        await pilot.press("m")
        await pilot.pause(0.3)
        tap = app.query_one("#tap")
        assert tap.display and tap.outer_size.height >= 3
        for name, table in app.tables.items():
            assert table.scrollable_content_region.height >= 2, name  # its header and a row
        await pilot.press("m")
        await pilot.pause(0.3)
        assert shown(app.tables["sources"]).count("\n") >= 2  # the rows back


async def test_an_open_detail_stops_the_dashboard_under_it_being_drawn():
    """A detail (enter) or the last reload (l) covers the dashboard: redrawing the tables
    under it cost the relay's loop 50-140 ms a refresh for nothing. They are drawn again
    once it closes."""
    async with VeylorApp(FixedReader()).run_test(size=(120, 40)) as pilot:
        app = await settled(pilot)
        drawn = []
        original = app.show_sources

        def counting(view):
            drawn.append(1)
            return original(view)

        app.show_sources = counting
        await pilot.pause(1.2)  # (two refreshes)
        assert drawn
        await pilot.press("l")
        await pilot.pause(0.3)
        before = len(drawn)
        await pilot.pause(1.2)
        assert len(drawn) == before  # not drawn while covered
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert len(drawn) > before  # drawn again at once when it closes
