"""The endpoints: which clients are there, and are messages dropped? A row an endpoint:
its clients, its drops (every reason: counted once, here, not per edge), its slow
clients now (over their buffer), deliveries, refused clients, messages from clients,
and its address (the first left out, or cut short, in a narrow terminal). The one selected lists its clients below (:mod:`veylor.tui.clients`)."""

from __future__ import annotations

from collections.abc import Generator

from rich.text import Text

from ..observe.view import EndpointView, StateView
from .pane import CHUNK, Columns, Look, Pane, Row
from .rates import drops


def refused(endpoint: EndpointView) -> int:
    """Clients an endpoint refused, for every reason (max_clients, origin, token, peer,
    pending handshakes)."""
    return sum(v for k, v in endpoint.items() if k.startswith("refused") and isinstance(v, int))


class EndpointsTable(Pane):
    """The local endpoints, an endpoint a row (its key: its name)."""

    COLUMNS = Columns(
        ("endpoint", "clients", "drops/s", "slow", "deliveries/s", "refused", "from clients", "address"),
        ("endpoint", "clients", "drops", "slow", "deliveries", "refused", "from clients", "address"),
        (False, True, True, True, True, True, True, False),
        priority=(0, 1, 2, 4, 3, 5, 6, 7),
        flexible=(False, False, False, False, False, False, False, True),
    )
    NOUN = "endpoint"

    def draw(self, view: StateView, look: Look) -> Generator[None, None, str | None]:
        """Draw ``view``'s endpoints in pieces; the key of the endpoint under the cursor
        after (None: no endpoint shown)."""
        rows = []
        for i, (name, e) in enumerate(view["endpoints"].items(), 1):
            if i % CHUNK == 0:
                yield
            out = look.number(("endpoint", name), e["messages_out"])
            dropped = look.number(("drops", name), drops(e))
            rows.append(
                Row(
                    name,
                    f"{name} {e['address']}",
                    (
                        name,
                        -e["clients"],
                        dropped[1],
                        -e.get("slow_clients", 0),
                        out[1],
                        -refused(e),
                        -e["received"],
                        e["address"],
                    ),
                    (e, out[0], dropped[0]),
                )
            )
        shown = self.fill(rows, look)
        yield
        cells = [
            (
                Text(row.key),
                Text(f"{e['clients']:,}"),
                Text(dropped, style="red" if look.hot(("drops", row.key), drops(e)) else ""),
                Text(f"{slow:,}", style="yellow" if slow else ""),
                Text(out),
                Text(f"{refused(e):,}"),
                Text(f"{e['received']:,}"),
                Text(e["address"]),
            )
            for row in shown
            for e, out, dropped in (row.data,)
            for slow in (e.get("slow_clients", 0),)
        ]
        return self.sync(shown, cells)
