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
    are right-aligned (numbers); how much each matters when the width is short (0: left
    out last; see :func:`veylor.tui.layout.fit`) and which text may be cut short."""

    rates: tuple[str, ...]
    totals: tuple[str, ...]
    right: tuple[bool, ...]
    priority: tuple[int, ...] | None = None
    flexible: tuple[bool, ...] | None = None

    def labels(self, totals: bool, both: bool) -> tuple[str, ...]:
        """The labels: of rates, of totals, or of both side by side (the first named:
        ``msgs/s (total)``, with ``t`` ``msgs (/s)``)."""
        if not both:
            return self.totals if totals else self.rates
        return tuple(
            r if r == t else (f"{t} (/s)" if totals else f"{r} (total)")
            for r, t in zip(self.rates, self.totals, strict=True)
        )


@dataclass(frozen=True, slots=True)
class Look:
    """What the keys chose for every table: totals instead of rates (``t``), and the
    filter of ``/`` (lower case); ``both``: the screen is wide enough for rates and
    totals side by side (``t`` then says which is first, and sorted by). ``rates`` are
    the app's, from the snapshots so far."""

    rates: Rates
    totals: bool
    find: str
    both: bool = False

    def number(self, key: tuple[str, ...], total: int, unit: str = "") -> tuple[str, float]:
        """A counter as shown (its rate, or with ``t`` its total; or both, as
        ``12/s (1,234)``) and its sort value (of the first)."""
        rate = self.rates.get(*key)
        if self.totals:
            text = f"{total:,}" + (f" ({human_rate(rate, unit)})" if self.both else "")
            return text, -total
        text = human_rate(rate, unit) + (f" ({total:,})" if self.both else "")
        return text, -(rate or 0.0)

    def hot(self, key: tuple[str, ...], total: int) -> bool:
        """A counter of trouble (drops) worth a colour: moving now (rates), or ever
        (totals first)."""
        return total > 0 if self.totals else (self.rates.get(*key) or 0.0) > 0


class Pane(Table):
    """A table of the dashboard: its columns, what it counts (``NOUN``), the column it is
    sorted by (``s``), and the key of the row the user put its cursor on, which the
    cursor follows when the order changes."""

    COLUMNS: ClassVar[Columns]
    NOUN: ClassVar[str]

    def __init__(self, *, id: str, zebra: bool = False) -> None:
        super().__init__(zebra=zebra, id=id)
        self.columns = self.COLUMNS  # (a pane may change them: the clients of every endpoint)
        self.sort_column = self.SORT
        self.reverse = False  # sorted the other way (a second press of the column's digit)
        self.chosen: str | None = None

    SORT: ClassVar[int] = 0  # the column sorted by at first

    def relabel(self, totals: bool, both: bool = False) -> None:
        """The column labels for rates, totals or both; ▼ on the one the rows are
        sorted by (▲: the other way), which is never left out for want of width."""
        columns = self.columns
        mark = " ▲" if self.reverse else " ▼"
        self.set_columns(
            tuple(
                label + (mark if i == self.sort_column else "")
                for i, label in enumerate(columns.labels(totals, both))
            ),
            columns.right,
            columns.priority,
            columns.flexible,
            keep=self.sort_column,
        )

    def sort_next(self) -> None:
        """Sort by the next column (the labels say so at the next :meth:`relabel`)."""
        self.sort_column = (self.sort_column + 1) % len(self.columns.rates)
        self.reverse = False

    def sort_by(self, place: int) -> None:
        """Sort by the ``place``-th column shown (1: the first, as the user counts them
        on the screen); the column it is sorted by already: the other way."""
        shown = [i for i, _ in self.shown] or list(range(len(self.columns.rates)))
        if not 1 <= place <= len(shown):
            return
        column = shown[place - 1]
        if column == self.sort_column:
            self.reverse = not self.reverse
        else:
            self.sort_column, self.reverse = column, False

    def fill(self, rows: list[Row], look: Look, unlisted: int = 0, prefix: str = "") -> list[Row]:
        """The rows this table shows: those found by ``/``, in its order, at most ``ROWS``;
        its title says how many there are and how many are not shown."""
        everyone = len(rows) + unlisted
        if look.find:
            rows = [row for row in rows if look.find in row.names.lower()]
        column = self.sort_column
        rows.sort(key=lambda row: (row.order[column], row.key), reverse=self.reverse)
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
