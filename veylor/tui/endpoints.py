"""The endpoints: which clients are there, and are messages dropped? A row an endpoint:
its clients, deliveries, slow-client drops, refused clients, messages from clients, and
its address. The one selected lists its clients below (:mod:`veylor.tui.clients`)."""

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
        ("endpoint", "clients", "deliveries/s", "drops/s", "refused", "from clients", "address"),
        ("endpoint", "clients", "deliveries", "drops", "refused", "from clients", "address"),
        (False, True, True, True, True, True, False),
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
                    (name, -e["clients"], out[1], dropped[1], -refused(e), -e["received"], e["address"]),
                    (e, out[0], dropped[0]),
                )
            )
        shown = self.fill(rows, look)
        yield
        cells = [
            (
                Text(row.key),
                Text(f"{e['clients']:,}"),
                Text(out),
                Text(dropped),
                Text(f"{refused(e):,}"),
                Text(f"{e['received']:,}"),
                Text(e["address"]),
            )
            for row in shown
            for e, out, dropped in (row.data,)
        ]
        return self.sync(shown, cells)
