"""Pictures of the TUI from a fixed state view: the main screen at 80x24 (short: no
header bar nor sparkline, the least important columns left out), 120x40 and 200x60
(rates and totals side by side), and a terminal below the minimum, compared with the
stored SVG (pytest-textual-snapshot; update with --snapshot-update after a change
that is meant to be seen)."""

from __future__ import annotations

import pytest

pytest.importorskip("textual")
pytest.importorskip("pytest_textual_snapshot")

from veylor.tui.app import VeylorApp

from .fixed_view import FixedReader


async def settle(pilot) -> None:
    app = pilot.app
    for _ in range(100):
        if app.rates.get("source", "binance") is not None:
            break
        await pilot.pause(0.05)
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 60), (50, 12)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen(snap_compare, size):
    assert snap_compare(VeylorApp(FixedReader()), terminal_size=size, run_before=settle)


def test_help_screen(snap_compare):
    async def help_open(pilot) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(VeylorApp(FixedReader()), terminal_size=(120, 40), run_before=help_open)


def test_tap_and_totals(snap_compare):
    async def tapped(pilot) -> None:
        await settle(pilot)
        await pilot.press("m", "t")
        await pilot.pause(0.8)  # the next read brings the tap

    assert snap_compare(VeylorApp(FixedReader()), terminal_size=(120, 40), run_before=tapped)
