"""The sources: is every upstream up, and if not, why? A row a source: its state (backing
off: seconds to the next try), rates, reconnects, the last message's age, uptime, ping
and URL."""

from __future__ import annotations

from collections.abc import Iterator

from rich.text import Text

from ..observe.view import StateView
from .pane import CHUNK, Columns, Look, Pane, Row
from .text import duration, state

QUIET_AFTER = 10.0  # seconds without a message before a source's last-message age turns to a warning


class SourcesTable(Pane):
    """The upstreams, a source a row (its key: its name)."""

    COLUMNS = Columns(
        ("source", "state", "msgs/s", "bytes/s", "reconnects", "last msg", "up", "ping", "url"),
        ("source", "state", "msgs", "bytes", "reconnects", "last msg", "up", "ping", "url"),
        (False, False, True, True, True, False, True, True, False),
    )
    NOUN = "source"

    def draw(self, view: StateView, look: Look) -> Iterator[None]:
        """Draw ``view``'s sources in pieces."""
        now = view["time"]
        rows = []
        for i, (name, s) in enumerate(view["sources"].items(), 1):
            if i % CHUNK == 0:
                yield
            last = s.get("last_message_at")
            since = s.get("connected_since")
            up = now - since if since and s["state"] == "connected" else None
            rtt = s.get("ping_rtt")
            msgs = look.number(("source", name), s["messages_in"])
            size = look.number(("source_bytes", name), s["bytes_in"], unit="B")
            reconnects = max(0, s["connects"] - 1)
            url = s.get("url", "")
            rows.append(
                Row(
                    name,
                    f"{name} {url}",
                    (
                        name,
                        state(s)[1],
                        msgs[1],
                        size[1],
                        -reconnects,
                        -(last or 0),
                        -(up or 0),
                        -(rtt or 0),
                        url,
                    ),
                    (s, msgs[0], size[0], reconnects, last, up, rtt),
                )
            )
        shown = self.fill(rows, look)
        yield
        cells = []
        for row in shown:
            s, msgs, size, reconnects, last, up, rtt = row.data
            age = Text("-" if last is None else duration(now - last) + " ago")
            if last is not None and now - last > QUIET_AFTER:
                age.stylize("yellow")
            mark, word, colour = state(s)
            shown_state = Text.assemble((f"{mark} {word}", colour))
            if s["state"] == "backoff" and s.get("next_attempt_at"):
                shown_state.append(f" ({max(0.0, s['next_attempt_at'] - now):.0f}s)")
            cells.append(
                (
                    Text(row.key),
                    shown_state,
                    Text(msgs),
                    Text(size),
                    Text(f"{reconnects:,}"),
                    age,
                    Text("-" if up is None else duration(up)),
                    Text("-" if rtt is None else f"{rtt * 1000:.1f} ms"),
                    Text(s.get("url", "")),
                )
            )
        self.sync(shown, cells)
