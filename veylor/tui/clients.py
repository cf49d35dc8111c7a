"""The clients of the endpoint selected in the endpoints table: which clients are slow?
A row a client: since when it is connected, the messages it was sent, and the bytes it
has yet to read. The state view lists a bounded number of them; the rest are counted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text

from ..observe.view import StateView
from .pane import Columns, Look, Pane, Row
from .text import duration


class ClientsTable(Pane):
    """One endpoint's clients, a client a row (its key: its address)."""

    COLUMNS = Columns(
        ("client", "connected", "messages", "buffered"),
        ("client", "connected", "messages", "buffered"),
        (False, True, True, True),
    )
    NOUN = "client"

    def draw(self, view: StateView, look: Look, endpoint: str | None) -> None:
        """Draw the clients of ``endpoint`` (None: no endpoint selected) in ``view``."""
        ep: Mapping[str, Any] = view["endpoints"].get(endpoint or "") or {}
        now = view["time"]
        rows = [
            Row(
                c["client"],
                c["client"],
                (c["client"], c["connected_since"], -c["messages"], -c["buffered"]),
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
                Text(duration(now - c["connected_since"])),
                Text(f"{c['messages']:,}"),
                Text(f"{c['buffered']:,}"),
            )
            for c in (row.data for row in shown)
        ]
        self.sync(shown, cells)
