"""A table for the dashboard, drawn line by line and cheap to refresh.

Textual's DataTable renders every visible cell again after any change (its caches are
keyed by an update counter), cell by cell through Rich: about 2 ms per table per frame,
on the event loop the in-process TUI shares with the relay, twice a second. This table
keeps rows by position (row ``i`` is the ``i``-th item in the table's order), draws a
row as one line of text, and keeps each row's drawn line until that row's text
changes: a frame costs the rows that changed. The header stays on top; the cursor
follows its item when the order changes; up, down, page up/down, home, end and a
click move it, and :class:`Table.Highlighted` says which item it is on. A table
never scrolls sideways: in the width it has it shows its most important columns
(:func:`veylor.tui.layout.fit`), and fits them again when its size changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..printable import CONTROL, printable
from .layout import GAP, fit


class Table(ScrollView, can_focus=True):
    """Rows of cells (Rich Text) under a header of labels; see the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", show=False),
        Binding("down", "cursor(1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "cursor(-1000000000)", show=False),
        Binding("end", "cursor(1000000000)", show=False),
        Binding("left", "scroll_left", show=False),
        Binding("right", "scroll_right", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"table--header", "table--cursor", "table--odd"}
    DEFAULT_CSS = """
    Table {
        background: $surface;
        color: $foreground;
        & > .table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .table--odd { background: $surface-lighten-1 50%; }
        & > .table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """

    class Highlighted(Message):
        """The cursor is on another item (or on the same row, now another item)."""

        def __init__(self, table: Table, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> Table:
            return self.table

    def __init__(self, *, zebra: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.zebra = zebra
        self.labels: tuple[str, ...] = ()
        self.right: tuple[bool, ...] = ()  # right-aligned columns
        self.priority: tuple[int, ...] = ()  # how much each column matters (0: left out last)
        self.flexible: tuple[bool, ...] = ()  # which may be cut short rather than left out
        self.keep: int | None = None  # a column never left out (the one sorted by)
        self.widths: list[int] = []  # what each column's widest cell needs
        self.shown: list[tuple[int, int]] = []  # (column, width) as drawn in the width there is
        self.keys: list[str] = []
        self.cells: Sequence[tuple[Text, ...]] = []
        self.cursor_row = 0
        self._lines: dict[int, tuple[Any, Strip]] = {}  # row -> (what it was drawn from, line)
        self._header: Strip | None = None

    # ------------------------------------------------------------------ data

    @property
    def row_count(self) -> int:
        return len(self.keys)

    def get_row_at(self, row: int) -> tuple[Text, ...]:
        return self.cells[row]

    def set_columns(
        self,
        labels: tuple[str, ...],
        right: tuple[bool, ...],
        priority: tuple[int, ...] | None = None,
        flexible: tuple[bool, ...] | None = None,
        keep: int | None = None,
    ) -> None:
        """New column labels, which are right-aligned, how much each matters and which
        may be cut short (default: in order, none), the one never left out: widths
        start again."""
        self.labels, self.right = labels, right
        self.priority = priority or tuple(range(len(labels)))
        self.flexible = flexible or (False,) * len(labels)
        self.keep = keep
        self.widths = [len(label) for label in labels]
        self._refit()

    def _refit(self) -> None:
        """Choose the columns for the width there is (none known yet: all of them)."""
        room = self.scrollable_content_region.width
        widths = self.widths
        self.shown = (
            fit(widths, self.priority, self.flexible, room, self.keep)
            if room > 0
            else list(enumerate(widths))
        )
        self._lines.clear()
        self._header = None
        self._resize()
        self.refresh()

    def on_resize(self) -> None:
        self._refit()

    def show(self, keys: list[str], cells: Sequence[tuple[Text, ...]], selected: str | None) -> str | None:
        """Show these rows, in order; the cursor stays on ``selected`` if it is among
        them. Returns the key of the item under the cursor now (None: no rows)."""
        widths = self.widths
        grown = False
        for row in cells:
            for i, cell in enumerate(row):
                if cell.cell_len > widths[i]:
                    widths[i] = cell.cell_len
                    grown = True
        count = len(keys) != len(self.keys)
        before = self.cells
        self.keys, self.cells = keys, cells
        if grown:
            self._refit()
        elif count:
            self._resize()
            self.refresh()
        else:  # only the rows on screen whose text changed are drawn again
            top = self.scroll_offset.y
            for i in range(top, min(len(cells), top + self.scrollable_content_region.height)):
                if before[i] != cells[i]:
                    self.refresh_line(i + 1)
        if selected in keys:
            self._move(keys.index(selected), announce=False)
        elif self.cursor_row >= len(keys):
            self._move(max(0, len(keys) - 1), announce=False)
        return self.key_at(self.cursor_row)

    def key_at(self, row: int) -> str | None:
        return self.keys[row] if 0 <= row < len(self.keys) else None

    def move_cursor(self, row: int) -> None:
        self._move(max(0, min(row, len(self.keys) - 1)), announce=True)

    # ------------------------------------------------------------------ drawing

    def _resize(self) -> None:
        width = sum(w for _, w in self.shown) + GAP * len(self.shown)
        self.virtual_size = Size(width, len(self.keys) + 1)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            if self._header is None:
                self._header = self._draw(
                    self.labels, self.get_component_rich_style("table--header"), header=True
                )
            return self._header.crop_extend(scroll_x, scroll_x + width, base)
        row = scroll_y + y - 1
        if row >= len(self.cells):
            return Strip.blank(width, base)
        cursor = row == self.cursor_row
        source = (self.cells[row], cursor, self.has_focus, self.app.theme)
        cached = self._lines.get(row)
        if cached is None or cached[0] != source:
            if cursor:
                style = self.get_component_rich_style("table--cursor")
            elif self.zebra and row % 2:
                style = self.get_component_rich_style("table--odd")
            else:
                style = Style.null()
            cached = self._lines[row] = (source, self._draw(self.cells[row], style))
        return cached[1].crop_extend(scroll_x, scroll_x + width, base)

    def _draw(self, cells: tuple[Any, ...], style: Style, header: bool = False) -> Strip:
        line = Text(" ", no_wrap=True)
        for i, width in self.shown:
            if i >= len(cells):
                continue
            cell = cells[i]
            text = cell.copy() if isinstance(cell, Text) else Text(str(cell))
            if CONTROL.search(text.plain):  # from outside (a name, a URL): no escape sequence
                text = Text(printable(text.plain), style=text.style)
            if text.cell_len > width:
                text.truncate(width, overflow="ellipsis")
            pad = " " * (width - text.cell_len)
            if self.right[i] and not header:
                line.append(pad)
                line.append_text(text)
            else:
                line.append_text(text)
                line.append(pad)
            line.append(" " * GAP)
        segments = [
            Segment(text, style + s if s else style) for text, s, _ in line.render(self.app.console, end="")
        ]
        return Strip(segments, line.cell_len)

    # ------------------------------------------------------------------ moving

    def _move(self, row: int, announce: bool) -> None:
        if row != self.cursor_row:
            self.refresh_line(self.cursor_row + 1)
            self.refresh_line(row + 1)
        self.cursor_row = row
        height = max(1, self.scrollable_content_region.height - 1)
        top = self.scroll_offset.y
        if row < top:
            self.scroll_to(y=row, animate=False)
        elif row >= top + height:
            self.scroll_to(y=row - height + 1, animate=False)
        if announce and self.keys:
            self.post_message(self.Highlighted(self, self.keys[row]))

    def action_cursor(self, by: int) -> None:
        if self.keys:
            self.move_cursor(self.cursor_row + by)

    def action_page(self, by: int) -> None:
        if self.keys:
            self.move_cursor(self.cursor_row + by * max(1, self.scrollable_content_region.height - 1))

    def on_click(self, event: events.Click) -> None:
        row = self.scroll_offset.y + event.y - 1
        if event.y >= 1 and 0 <= row < len(self.keys):
            self.move_cursor(row)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
