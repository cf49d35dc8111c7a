"""Make docs/tui.svg, the README's picture of the TUI, from the fixed state view the
snapshot tests use (so it is the same every time):

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
        while app.rates.get("source", "binance") is None:
            await pilot.pause(0.05)
        await pilot.pause()
        app.save_screenshot("tui.svg", str(ROOT / "docs"))


if __name__ == "__main__":
    asyncio.run(main())
