"""The dashboard fitted to its terminal: the app's size classes and each table's height,
from the pure rules of :mod:`veylor.tui.layout`. Below the minimum, one line says how
big the terminal must be; a short terminal has no header bar nor sparkline and tables
with a top border only (the CSS, ``veylor.tcss``, follows the classes); each table
gets lines for its rows, the few rows of sources and endpoints first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Input, Static

from .layout import MIN_HEIGHT, MIN_WIDTH, NARROW, SHORT, Want, heights

if TYPE_CHECKING:
    from .app import VeylorApp

SPARK, TAP = 3, 8  # lines of the sparkline (with its label) and of the tap (tall terminals)
MIN_TAP = 3  # the fewest lines of the tap: its border and a message


def relayout(app: VeylorApp) -> None:
    """Fit ``app`` to its size now (at a resize, and after each drawing: rows come and go)."""
    if not app.tables:
        return  # (not mounted yet: on_mount lays it out)
    width, height = app.size
    tiny = width < MIN_WIDTH or height < MIN_HEIGHT
    short, narrow = height < SHORT, width < NARROW
    app.set_class(tiny, "-tiny")
    app.set_class(short, "-short")
    app.set_class(narrow, "-narrow")
    if tiny:
        app.query_one("#toosmall", Static).update(
            f"Veylor's dashboard needs a terminal of at least {MIN_WIDTH}x{MIN_HEIGHT};"
            f" this one is {width}x{height}. Make it larger, or use veylor status."
        )
        return
    chrome = 2 if short else 3  # a table's border(s) and header
    fixed = 3 + (0 if short else 1 + SPARK)  # summary, status, footer; header bar, sparkline
    find = app.query_one("#find", Input)
    if find.display:
        fixed += find.outer_size.height or 3
    logs = app.logs is not None and not (narrow and short)
    tables = app.tables
    clients = max(1, tables["clients"].row_count)
    wants = [
        Want("sources", tables["sources"].row_count, chrome),
        Want("endpoints", tables["endpoints"].row_count, chrome),
        Want("graph", tables["graph"].row_count, chrome),
        Want("bottom", clients + (chrome + 6 if logs and narrow else 0), chrome),
    ]
    if app.tapping:  # the tap: what is left once each table has its header and a row
        least = sum(w.chrome + min(w.rows, 1) for w in wants)
        tap = max(MIN_TAP, min(TAP if not short else TAP - 2, height - fixed - least))
        fixed += tap
        set_height(app, "tap", tap)
    got = heights(height - fixed, wants, {"graph": 1, "bottom": 1})
    if got is None:  # (not even a row each: the rows scroll in what there is)
        got = {w.name: max(1, (height - fixed) // 4) for w in wants}
    for name, lines in got.items():
        set_height(app, name, lines)


def set_height(app: VeylorApp, name: str, lines: int) -> None:
    """Give widget ``#name`` ``lines`` lines (a layout only when that changes)."""
    widget = app.query_one(f"#{name}")
    if widget.styles.height is None or widget.styles.height.value != lines:
        widget.styles.height = lines
