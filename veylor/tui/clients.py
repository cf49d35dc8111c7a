"""The clients of the endpoint selected in the endpoints table, or (``c``) of every
endpoint: which clients are slow? A row a client, the worst first: the bytes it has yet to read (yellow from half its
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


ONE = Columns(
    ("client", "buffered", "dropped", "connected", "messages"),
    ("client", "buffered", "dropped", "connected", "messages"),
    (False, True, True, True, True),
    priority=(0, 1, 2, 3, 4),
)
EVERY = Columns(  # the clients of every endpoint: which endpoint each is a client of
    ("client", "endpoint", "buffered", "dropped", "connected", "messages"),
    ("client", "endpoint", "buffered", "dropped", "connected", "messages"),
    (False, False, True, True, True, True),
    priority=(0, 2, 1, 3, 4, 5),
)


class ClientsTable(Pane):
    """The clients of one endpoint (a row's key: the client's address) or of every
    endpoint (``c``; a row's key: ``endpoint|client``)."""

    COLUMNS = ONE
    NOUN = "client"
    SORT = 1  # the worst first: the most bytes behind

    def __init__(self, *, id: str, zebra: bool = False) -> None:
        super().__init__(id=id, zebra=zebra)
        self.every = False

    def show_every(self, every: bool) -> None:
        """List the clients of every endpoint, or of the selected one: the columns change,
        sorted by bytes behind again (the labels say so at the next relabel)."""
        self.every = every
        self.columns = EVERY if every else ONE
        self.sort_column, self.reverse, self.chosen = (2 if every else 1), False, None

    def draw(self, view: StateView, look: Look, endpoint: str | None) -> None:
        """Draw the clients of ``endpoint`` (None: no endpoint selected), or of every
        endpoint, in ``view``."""
        now = view["time"]
        names = list(view["endpoints"]) if self.every else [endpoint] if endpoint else []
        rows, unlisted = [], 0
        for name in names:
            ep: Mapping[str, Any] = view["endpoints"].get(name) or {}
            bound = ep.get("client_buffer")
            unlisted += ep.get("clients_not_listed", 0)
            for c in ep.get("client_list", []):
                order = (
                    (-c["buffered"], -c.get("dropped", 0)),
                    (-c.get("dropped", 0), -c["buffered"]),
                    c["connected_since"],
                    -c["messages"],
                )
                rows.append(
                    Row(
                        f"{name}|{c['client']}" if self.every else c["client"],
                        f"{c['client']} {name}",
                        (c["client"], name, *order) if self.every else (c["client"], *order),
                        (c, name, bound),
                    )
                )
        of = "every endpoint: " if self.every else f"{endpoint}: " if endpoint else ""
        shown = self.fill(rows, look, unlisted=unlisted, prefix=of)
        self.border_subtitle = None if rows else "no clients connected"
        cells = []
        for row in shown:
            c, name, bound = row.data
            cell = [
                Text(c["client"]),
                Text(f"{c['buffered']:,}", style=buffered_style(c["buffered"], bound)),
                Text(f"{c.get('dropped', 0):,}", style="red" if c.get("dropped") else ""),
                Text(duration(now - c["connected_since"])),
                Text(f"{c['messages']:,}"),
            ]
            if self.every:
                cell.insert(1, Text(name))
            cells.append(tuple(cell))
        self.sync(shown, cells)
