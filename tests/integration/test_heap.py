"""The collector is tuned when Veylor starts: readers of the state view (the TUI, /graph,
/metrics) make short-lived containers by the thousand, and collected every 700 they were
promoted and then walked in full-heap collections that paused the relay (150 ms every
2 s with 1,000 sources under the TUI; see benchmarks/tui_lag.py --why)."""

from __future__ import annotations

import gc
import textwrap

from helpers import free_port

from veylor.heap import YOUNG
from veylor.server import Server


async def test_startup_collects_the_youngest_generation_rarely(tmp_path, upstream):
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(
            f"""
            sources: {{feed: {{url: "{upstream.url}"}}}}
            endpoints: {{ws: {{websocket: {{port: {free_port()}}}}}}}
            routes: {{all: {{from: feed, to: ws}}}}
            """
        )
    )
    server = Server.load(str(main), watch="off")
    try:
        assert await server.startup()
        assert gc.get_threshold() == (YOUNG, 10, 10)
    finally:
        await server.shutdown()
        gc.set_threshold(*saved)
