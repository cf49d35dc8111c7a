"""The clients of the endpoint selected in the endpoints table: which clients are slow?
A row a client, the worst first: the bytes it has yet to read (yellow from half its
``client_buffer``, red over it: it is losing messages or about to be cut off), the
messages it did not get (red), since when it is connected, the messages it was sent.
The state view lists a bounded number of them, those behind first; the rest are
counted. The sorted column is never left out for want of width."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text

from ..observe.view import StateView
from .pane import Columns, Look, Pane, Row
from .text import duration

WARN_AT = 0.5  # of client_buffer: a client this far behind is yellow (over all of it: red)


def buffered_style(buffered: int, bound: int | None) -> str:
    """The colour of a client's buffered bytes against its endpoint's ``client_buffer``."""
    if not bound or buffered <= 0:
        return ""
    if buffered >= bound:
        return "bold red"
    return "yellow" if buffered >= bound * WARN_AT else ""


class ClientsTable(Pane):
    """One endpoint's clients, a client a row (its key: its address)."""

    COLUMNS = Columns(
        ("client", "buffered", "dropped", "connected", "messages"),
        ("client", "buffered", "dropped", "connected", "messages"),
        (False, True, True, True, True),
        priority=(0, 1, 2, 3, 4),
    )
    NOUN = "client"
    SORT = 1  # the worst first: the most bytes behind

    def draw(self, view: StateView, look: Look, endpoint: str | None) -> None:
        """Draw the clients of ``endpoint`` (None: no endpoint selected) in ``view``."""
        ep: Mapping[str, Any] = view["endpoints"].get(endpoint or "") or {}
        now = view["time"]
        bound = ep.get("client_buffer")
        rows = [
            Row(
                c["client"],
                c["client"],
                (
                    c["client"],
                    (-c["buffered"], -c.get("dropped", 0)),
                    (-c.get("dropped", 0), -c["buffered"]),
                    c["connected_since"],
                    -c["messages"],
                ),
                c,
            )
            for c in ep.get("client_list", [])
        ]
        of = f"{endpoint}: " if endpoint else ""
        shown = self.fill(rows, look, unlisted=ep.get("clients_not_listed", 0), prefix=of)
        self.border_subtitle = None if rows else "no clients connected"
        cells = [
            (
                Text(c["client"]),
                Text(f"{c['buffered']:,}", style=buffered_style(c["buffered"], bound)),
                Text(f"{c.get('dropped', 0):,}", style="red" if c.get("dropped") else ""),
                Text(duration(now - c["connected_since"])),
                Text(f"{c['messages']:,}"),
            )
            for c in (row.data for row in shown)
        ]
        self.sync(shown, cells)
