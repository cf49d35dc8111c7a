"""A graph of 1,000 sources, 1,000 endpoints and 1,000 routes: each table shows its
first 100 rows and says how many it does not show, / finds the others, s sorts them
all, and a refresh hands the loop back between pieces (what it costs the relay is
measured by benchmarks/tui_lag.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

pytest.importorskip("textual")

from veylor.tui.app import VeylorApp
from veylor.tui.pane import CHUNK, ROWS
from veylor.tui.rates import Rates

from .fixed_view import T0

N = 1000


def large(at: float, scale: int) -> dict[str, Any]:
    sources, endpoints, routes, edges = {}, {}, {}, []
    for i in range(N):
        sources[f"s{i:04d}"] = {
            "kind": "websocket",
            "state": "connected",
            "url": f"wss://feed.example/{i}",
            "connected_since": T0 - 100,
            "next_attempt_at": None,
            "ping_rtt": 0.001,
            "failures": 0,
            "last_error": None,
            "bytes_in": 100 * i * scale,
            "connects": 1,
            "messages_in": i * scale,
            "last_message_at": T0 + at,
        }
        endpoints[f"e{i:04d}"] = {
            "kind": "websocket",
            "address": f"ws://127.0.0.1:9000/e{i}",
            "clients": i % 7,
            "refused": 0,
            "messages_out": i * scale,
            "received": 0,
        }
        routes[f"r{i:04d}"] = {
            "from": f"s{i:04d}",
            "to": [f"e{i:04d}"],
            "filter": "everything",
            "filtered": 0,
        }
        edges.append(
            {"source": f"s{i:04d}", "route": f"r{i:04d}", "endpoint": f"e{i:04d}", "messages": i * scale}
        )
    return {
        "schema": 1,
        "pid": 1,
        "time": T0 + at,
        "config": {"generation": 1, "digest": "0" * 24},
        "reloads": {"last": None},
        "sources": sources,
        "routes": routes,
        "edges": edges,
        "endpoints": endpoints,
    }


class LargeReader:
    where = "1,000 of everything"
    clients_of: str | bool | None = None
    tap: str | None = None

    def __init__(self) -> None:
        self.reads = 0

    async def read(self) -> dict[str, Any]:
        self.reads += 1
        return copy.deepcopy(large(float(self.reads), self.reads))

    async def reload(self) -> dict[str, Any]:
        return {"changes": [], "problems": [], "error": None}

    async def close(self) -> None:
        pass


@pytest.mark.slow  # a load test: floods, or hundreds of clients (the quick loop leaves it to the full suite)
async def test_a_thousand_of_everything_shows_100_rows_and_finds_the_rest():
    reader = LargeReader()
    app = VeylorApp(reader)
    async with app.run_test(size=(160, 48)) as pilot:
        graph = app.tables["graph"]
        for _ in range(100):
            if reader.reads >= 2 and graph.row_count and app.tables["sources"].row_count:
                break  # (the tables are filled in pieces, one after the other)
            await pilot.pause(0.05)
        assert graph.row_count == ROWS and app.tables["sources"].row_count == ROWS
        assert graph.border_title == f"1,000 edges, {N - ROWS} not shown (/ to filter)"
        assert graph.keys[0] == "s0000|r0000|e0000"
        graph.focus()
        for _ in range(4):  # to msgs/s: the busiest first
            await pilot.press("s")
        await pilot.pause(0.6)
        assert graph.keys[0] == "s0999|r0999|e0999"
        await pilot.press("slash", *"s0500")
        await pilot.pause(0.1)
        assert graph.keys == ["s0500|r0500|e0500"] and app.tables["sources"].keys == ["s0500"]
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert graph.row_count == ROWS


async def test_a_refresh_of_a_thousand_of_everything_comes_in_pieces():
    """Rates and each table are computed in pieces (at most CHUNK components each),
    between which the refresh hands the event loop back to the relay it shares."""
    app = VeylorApp(LargeReader())
    async with app.run_test(size=(160, 48)):
        rates = Rates()
        pieces = sum(1 for _ in rates.updating(large(0.0, 1)))
        pieces += sum(1 for _ in rates.updating(large(1.0, 2)))
        assert pieces >= 6000 // 500 - 1  # six counters of 1,000 components, by 500
        view = large(1.0, 2)
        for table in (app.show_graph, app.show_sources, app.show_endpoints):
            assert sum(1 for _ in table(view)) >= N // CHUNK
