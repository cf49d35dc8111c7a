"""The help screen (``?``): the keys, and what the screen shows."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from .layout import MIN_HEIGHT, MIN_WIDTH
from .pane import ROWS


class Help(ModalScreen[None]):
    """The keys, and what the screen shows."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape,question_mark,q", "dismiss", "Close")
    ]
    TEXT = """[b]Veylor: the routing graph, live[/b]

[b]graph[/b]      one row per edge source → route → endpoint: the source's state, the
           route's filter, ⇅ where clients may send upstream, the endpoint's
           clients; messages and those filtered out (the route) per second,
           smoothed over a few seconds. Under it, the selected edge's last minute
[b]sources[/b]    state (backing off: seconds to the next try), rates, failed attempts
           in a row and the last error, the last message's age (yellow after
           10 s of silence), reconnects, uptime, ping
[b]endpoints[/b]  clients, drops (every reason, counted once: an edge has none of its
           own), slow clients now, deliveries, refused, messages from clients;
           select one to list its clients below, the worst first (buffered bytes
           yellow from half the client_buffer, red over it; drops red)
The top line: sources up, clients, deliveries and drops per second, slow clients.
A table shows its first {ROWS} rows: [b]/[/b] finds the others. A narrow terminal
leaves out the least important columns; under {MIN} the screen says so.

[b]r[/b]  reload the configuration (the steps, or the problem with its file and line)
[b]/[/b]  filter the tables by name (enter keeps it, escape clears it)
[b]1[/b]-[b]9[/b]  sort the focused table by that column (from the left); again: the other way (▲)
[b]s[/b]  sort the focused table by its next column (▼ marks it)
[b]t[/b]  totals instead of rates, and back (160 columns and more: both, t says which is first)
[b]c[/b]  the clients of every endpoint, the worst first (again: the selected one's)
[b]m[/b]  tap: the last messages that passed the selected edge's route (off: free)
[b]enter[/b]  details of the selected row (escape closes)
[b]l[/b]  the last reload: every change and problem
[b]p[/b]  pause the display      [b]d[/b]  dark or light
[b]tab[/b] [b]shift+tab[/b]  move between tables    [b]↑ ↓[/b] [b]page up/down[/b] [b]home end[/b]  select a row
[b]enter[/b]  keep the filter (in /)   [b]escape[/b]  clear it, close this help
[b]?[/b]  this help   [b]q[/b]  quit (veylor --tui: Veylor stops; q twice. veylor top: only the view)
[b]veylor top --read-only[/b]: no r, no m
""".replace("{ROWS}", str(ROWS)).replace("{MIN}", f"{MIN_WIDTH}x{MIN_HEIGHT}")

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(self.TEXT)
