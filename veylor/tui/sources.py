"""The sources: is every upstream up, and if not, why? A row a source: its state (backing
off: seconds to the next try), rates, its failed attempts in a row and the last error
(while it is not connected), the last message's age, reconnects, uptime, ping and URL.
In a narrow terminal the columns after the state, the rate and the error are the first
left out; ``Enter`` shows all a source's detail."""

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
        (
            "source",
            "state",
            "msgs/s",
            "fails",
            "last error",
            "last msg",
            "reconnects",
            "bytes/s",
            "up",
            "ping",
            "url",
        ),
        (
            "source",
            "state",
            "msgs",
            "fails",
            "last error",
            "last msg",
            "reconnects",
            "bytes",
            "up",
            "ping",
            "url",
        ),
        (False, False, True, True, False, True, True, True, True, True, False),
        priority=(0, 1, 2, 4, 3, 5, 6, 7, 8, 9, 10),
        flexible=(False, False, False, False, True, False, False, False, False, False, True),
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
            fails = s.get("failures") or 0
            error = (s.get("last_error") or "") if s["state"] != "connected" else ""
            rows.append(
                Row(
                    name,
                    f"{name} {url}",
                    (
                        name,
                        state(s)[1],
                        msgs[1],
                        -fails,
                        error or "\uffff",  # (the errors first, then the sources without one)
                        -(last or 0),
                        -reconnects,
                        size[1],
                        -(up or 0),
                        -(rtt or 0),
                        url,
                    ),
                    (s, msgs[0], size[0], reconnects, last, up, rtt, fails, error),
                )
            )
        shown = self.fill(rows, look)
        yield
        cells = []
        for row in shown:
            s, msgs, size, reconnects, last, up, rtt, fails, error = row.data
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
                    Text(f"{fails:,}", style="red" if fails else ""),
                    Text(error or "-", style="red" if error else ""),
                    age,
                    Text(f"{reconnects:,}"),
                    Text(size),
                    Text("-" if up is None else duration(up)),
                    Text("-" if rtt is None else f"{rtt * 1000:.1f} ms"),
                    Text(s.get("url", "")),
                )
            )
        self.sync(shown, cells)
