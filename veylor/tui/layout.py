"""How the dashboard fits a terminal of any size: which columns a table shows in the
width it has, and how many lines each table gets in the height there is. Pure functions
of plain numbers (the app and the tables apply them), unit-tested without a screen.

Width: a table leaves out its least important columns first (each pane says which
matter: the name, the state, the rate, the clients, the drops before the rest); a
column of text at the end (a URL, an address, an error) is cut short with an ellipsis
rather than left out while there is room for a few characters of it; the column the
rows are sorted by is never left out.

Height: every table first gets its header and one row; then rows are dealt one at a
time to the tables that have more to show, in turn, most important first (sources,
endpoints, the graph, the clients), so the tables with a few rows show all of them
and the long ones share the rest; what is left once all are shown goes to the graph
and the bottom (the clients and the log).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

GAP = 2  # spaces between two columns (and before the first)
MIN_CUT = 8  # the fewest characters of a text column cut short (fewer: it is left out)
MIN_WIDTH, MIN_HEIGHT = 60, 18  # the smallest terminal the dashboard draws in (documented)
SHORT = 40  # fewer lines: no header bar, no sparkline, tables with a top border only
NARROW = 110  # fewer columns: the log pane (--tui) is not beside the clients


def fit(
    widths: Sequence[int],
    priority: Sequence[int],
    flexible: Sequence[bool],
    room: int,
    keep: int | None = None,
) -> list[tuple[int, int]]:
    """The columns a table shows in ``room`` characters, as ``(column, width)`` in their
    order: ``widths`` are what each column's widest cell needs, ``priority`` how much it
    matters (0 most: left out last), ``flexible`` whether it may be cut short, ``keep``
    a column never left out (the sorted one). The first column is always shown, cut
    to the room if it must be."""
    shown = {i: w for i, w in enumerate(widths)}

    def total() -> int:
        return sum(shown.values()) + GAP * len(shown)

    # the least important first; a tie: the one further right
    candidates = sorted((i for i in shown if i != 0 and i != keep), key=lambda i: (-priority[i], -i))
    for i in candidates:
        over = total() - room
        if over <= 0:
            break
        if flexible[i] and shown[i] - over >= MIN_CUT:
            shown[i] -= over
            break
        del shown[i]
    over = total() - room
    if over > 0:  # still too wide: the first (and the kept) column cut to what is left
        for column in [c for c in (keep, 0) if c is not None]:
            if column in shown and over > 0:
                cut = min(over, shown[column] - 1)
                shown[column] -= cut
                over -= cut
    return sorted(shown.items())


@dataclass(frozen=True, slots=True)
class Want:
    """A table's claim on the height: its rows, and the lines around them (border and
    header)."""

    name: str
    rows: int
    chrome: int


def heights(room: int, wants: Sequence[Want], grow: dict[str, int]) -> dict[str, int] | None:
    """The lines each table gets out of ``room`` (None: not even a header and a row
    each fit). ``wants`` in order of importance; ``grow``: how what is left once every
    row is shown is shared (weights by name)."""
    got = {w.name: w.chrome + min(w.rows, 1) for w in wants}
    left = room - sum(got.values())
    if left < 0:
        return None
    hungry = [w for w in wants if w.rows > 1]
    while left > 0 and hungry:
        for w in list(hungry):
            if left == 0:
                break
            got[w.name] += 1
            left -= 1
            if got[w.name] >= w.chrome + w.rows:
                hungry.remove(w)
    weights = {name: share for name, share in grow.items() if name in got and share > 0}
    if left > 0 and weights:
        whole = sum(weights.values())
        given = 0
        for i, (name, share) in enumerate(weights.items()):
            extra = left - given if i == len(weights) - 1 else left * share // whole
            got[name] += extra
            given += extra
    return got
