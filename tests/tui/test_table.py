"""The dashboard's table (veylor/tui/table.py): rows by position, a cursor that follows
its item when the order changes, keys and clicks that move it, columns that grow to
their text."""

from __future__ import annotations

import pytest

pytest.importorskip("textual")

from rich.text import Text
from textual.app import App, ComposeResult

from veylor.tui.table import Table


class One(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def compose(self) -> ComposeResult:
        yield Table(id="t")

    def on_table_highlighted(self, event: Table.Highlighted) -> None:
        self.seen.append(event.key)


def rows(*names: str) -> tuple[list[str], list[tuple[Text, ...]]]:
    return list(names), [(Text(n), Text(str(len(n)))) for n in names]


async def test_the_cursor_follows_its_item_and_keys_move_it():
    app = One()
    async with app.run_test(size=(60, 12)) as pilot:
        t = app.query_one(Table)
        t.set_columns(("name", "len"), (False, True))
        t.focus()
        assert t.show(*rows("a", "bb", "ccc"), None) == "a"
        await pilot.press("down")
        await pilot.pause()
        assert app.seen[-1] == "bb" and t.cursor_row == 1
        # A new order: the cursor moves with "bb", and says nothing (nothing changed).
        assert t.show(*rows("ccc", "a", "bb"), "bb") == "bb"
        assert t.cursor_row == 2
        await pilot.press("home")
        await pilot.pause()
        assert app.seen[-1] == "ccc"
        await pilot.press("end")
        await pilot.pause()
        assert app.seen[-1] == "bb"
        # Its item gone: the cursor stays in the table, on what is there now.
        assert t.show(*rows("ccc", "a"), "bb") == "a"
        assert t.show(*rows(), "a") is None
        assert t.show(*rows("x", "yy", "zzz"), None) == "x"
        await pilot.click(Table, offset=(3, 3))  # the header is line 0: line 3 is row 2
        await pilot.pause()
        assert app.seen[-1] == "zzz" and t.cursor_row == 2


async def test_columns_grow_to_their_text_and_numbers_align_right():
    app = One()
    async with app.run_test(size=(60, 12)) as pilot:
        t = app.query_one(Table)
        t.set_columns(("name", "len"), (False, True))
        t.show(*rows("a"), None)
        assert t.widths == [4, 3]  # the labels'
        t.show(*rows("a-long-name"), None)
        assert t.widths == [11, 3]
        await pilot.pause()
        line = "".join(s.text for s in t.render_line(1))
        assert line.startswith(" a-long-name   11 ")  # two spaces between columns; " 11" right-aligned
        t.show(*rows("a"), None)
        assert t.widths == [11, 3]  # grown only: columns do not jump as values change
