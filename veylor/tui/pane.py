"""What the dashboard's four tables (edges, sources, endpoints, clients) share: each is a
:class:`Pane` that draws itself from the state view it is given, with the choices the
keys made for all of them (a :class:`Look`: rates or totals, the filter of ``/``) and
its own (the column it is sorted by, the row the user put its cursor on).

A table shows at most ``ROWS`` rows (the first in its order; ``/`` finds the others):
with thousands of sources and endpoints, each refresh costs the same as with a few
hundred, on the loop the relay shares in-process. A pane reads ``CHUNK`` items between
two turns of that loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text

from .rates import Rates, human_rate
from .table import Table
from .text import title

CHUNK = 200  # items a table reads between two turns of the event loop (the relay's)
ROWS = 100  # rows a table shows at once (the first in its order); the rest are counted


@dataclass(slots=True)
class Row:
    """One item of a table: its key, what it is found by (``/``), its sort value for each
    column (names ascending; numbers negated, the largest first), and what its cells are
    made of (cells are made only for the rows shown)."""

    key: str
    names: str
    order: tuple[Any, ...]
    data: Any


@dataclass(frozen=True)
class Columns:
    """A table's columns: labels with rates shown, and with totals shown (``t``); which
    are right-aligned (numbers)."""

    rates: tuple[str, ...]
    totals: tuple[str, ...]
    right: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class Look:
    """What the keys chose for every table: totals instead of rates (``t``), and the
    filter of ``/`` (lower case). ``rates`` are the app's, from the snapshots so far."""

    rates: Rates
    totals: bool
    find: str

    def number(self, key: tuple[str, ...], total: int, unit: str = "") -> tuple[str, float]:
        """A counter as shown (its rate, or with ``t`` its total) and its sort value."""
        if self.totals:
            return f"{total:,}", -total
        rate = self.rates.get(*key)
        return human_rate(rate, unit), -(rate or 0.0)


class Pane(Table):
    """A table of the dashboard: its columns, what it counts (``NOUN``), the column it is
    sorted by (``s``), and the key of the row the user put its cursor on, which the
    cursor follows when the order changes."""

    COLUMNS: ClassVar[Columns]
    NOUN: ClassVar[str]

    def __init__(self, *, id: str, zebra: bool = False) -> None:
        super().__init__(zebra=zebra, id=id)
        self.sort_column = 0
        self.chosen: str | None = None

    def relabel(self, totals: bool) -> None:
        """The column labels for rates or totals, ▼ on the one the rows are sorted by."""
        columns = self.COLUMNS
        labels = columns.totals if totals else columns.rates
        self.set_columns(
            tuple(label + (" ▼" if i == self.sort_column else "") for i, label in enumerate(labels)),
            columns.right,
        )

    def sort_next(self) -> None:
        """Sort by the next column (the labels say so at the next :meth:`relabel`)."""
        self.sort_column = (self.sort_column + 1) % len(self.COLUMNS.rates)

    def fill(self, rows: list[Row], look: Look, unlisted: int = 0, prefix: str = "") -> list[Row]:
        """The rows this table shows: those found by ``/``, in its order, at most ``ROWS``;
        its title says how many there are and how many are not shown."""
        everyone = len(rows) + unlisted
        if look.find:
            rows = [row for row in rows if look.find in row.names.lower()]
        column = self.sort_column
        rows.sort(key=lambda row: (row.order[column], row.key))
        shown = rows[:ROWS]
        text = f"{prefix}{everyone:,} {self.NOUN}{'s' * (everyone != 1)}"
        if look.find:
            text += f", {len(rows):,} match “{look.find}”"
        if len(shown) < len(rows) or unlisted:
            text += f", {len(rows) - len(shown) + unlisted:,} not shown (/ to filter)"
        self.border_title = title(text)
        return shown

    def sync(self, rows: list[Row], cells: Sequence[tuple[Text, ...]]) -> str | None:
        """Show ``rows``; the key of the row under the cursor now (which follows its row
        when the order changes), or None when the table is empty."""
        return self.show([row.key for row in rows], cells, self.chosen)

    def on_table_highlighted(self, event: Table.Highlighted) -> None:
        # The user moved the cursor: it stays on this item from now on. (The message
        # goes on to the app, which follows the selection.)
        self.chosen = event.key
