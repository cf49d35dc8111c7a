"""Make docs/tui.svg, the README's picture of the TUI, from the fixed state view the
snapshot tests use (so it is the same every time), at 120x40, with the clients of the
endpoint that has a slow client listed:

    .venv/bin/python docs/screenshot.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tui.fixed_view import FixedReader  # noqa: E402

from veylor.tui.app import VeylorApp  # noqa: E402


async def main() -> None:
    app = VeylorApp(FixedReader())
    async with app.run_test(size=(120, 40)) as pilot:
        while app.rates.get("source", "binance") is None or not app.tables["endpoints"].row_count:
            await pilot.pause(0.05)
        endpoints = app.tables["endpoints"]  # the endpoint with a slow client: its clients listed
        endpoints.move_cursor(endpoints.keys.index("mobile"))
        while not app.tables["clients"].keys or not app.tables["clients"].keys[0].startswith("10.1"):
            await pilot.pause(0.05)
        await pilot.pause(0.2)
        app.save_screenshot("tui.svg", str(ROOT / "docs"))


if __name__ == "__main__":
    asyncio.run(main())
