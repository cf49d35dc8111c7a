"""The graph: one row per edge source → route → endpoint, with the source's state, the
route's filter and the endpoint's clients, and per edge its messages and what its route
filtered out. What an endpoint drops for a slow client is the endpoint's, not one
edge's (the same messages come by every route into it): it is on the endpoint's row
(:mod:`.endpoints`), counted once, where the numbers add up to ``/metrics``."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from rich.text import Text

from ..observe.view import StateView
from .pane import CHUNK, Columns, Look, Pane, Row
from .text import state


class EdgesTable(Pane):
    """The routing graph, an edge a row (its key: ``source|route|endpoint``); sorted by
    source, a source's name is on its first row only."""

    COLUMNS = Columns(
        ("source", "route", "filter", "endpoint", "msgs/s", "filtered/s"),
        ("source", "route", "filter", "endpoint", "msgs", "filtered"),
        (False, False, False, False, True, True),
        priority=(0, 1, 5, 2, 3, 4),
        flexible=(False, False, True, False, False, False),
    )
    NOUN = "edge"

    def draw(self, view: StateView, look: Look) -> Generator[None, None, str | None]:
        """Draw ``view``'s edges in pieces; the key of the edge under the cursor after."""
        routes, endpoints, sources = view["routes"], view["endpoints"], view["sources"]
        rows = []
        for i, edge in enumerate(view["edges"], 1):
            if i % CHUNK == 0:
                yield
            source, route, endpoint = edge["source"], edge["route"], edge["endpoint"]
            # (a route or endpoint not in the view, as of a view cut between reloads: empty)
            r: Mapping[str, Any] = routes.get(route) or {}
            ep: Mapping[str, Any] = endpoints.get(endpoint) or {}
            msgs = look.number(("edge", source, route, endpoint), edge["messages"])
            filtered = look.number(("filtered", route), r.get("filtered", 0))
            rows.append(
                Row(
                    f"{source}|{route}|{endpoint}",
                    f"{source} {route} {endpoint}",
                    (source, route, r.get("filter", ""), endpoint, msgs[1], filtered[1]),
                    (edge, r, ep, sources.get(source, {}), msgs[0], filtered[0]),
                )
            )
        shown = self.fill(rows, look)
        yield
        by_source = self.sort_column == 0  # a source's name on its first row only
        cells = []
        previous = None
        for row in shown:
            edge, r, ep, source, msgs, filtered = row.data
            mark, _, colour = state(source)
            name = edge["source"]
            cells.append(
                (
                    Text("") if by_source and name == previous else Text.assemble((mark, colour), " ", name),
                    Text("→ " + edge["route"] + (" ⇅" if r.get("upstream") else "")),
                    Text(r.get("filter", "")),
                    Text(f"→ {edge['endpoint']} ({ep.get('clients', 0):,})"),
                    Text(msgs),
                    Text(filtered),
                )
            )
            previous = name
        return self.sync(shown, cells)
