"""The dashboard: one Textual App for both modes (in-process, attached over HTTP).

It reads the state view through a :class:`~veylor.tui.reader.StateReader` twice a second
in an exclusive worker (a slow admin endpoint never freezes the screen), computes rates
from consecutive snapshots (:mod:`veylor.tui.rates`), and hands the view to its panes,
each of which draws itself from it: the tables (:mod:`~veylor.tui.edges`,
:mod:`~veylor.tui.sources`, :mod:`~veylor.tui.endpoints`, :mod:`~veylor.tui.clients`)
update by row key so the cursor stays on its row. The app composes the panes, polls,
follows the selection from one pane to the next, and routes the keys. Nothing comes to
it per message from the hot path; the tap (``m``) reads a route's last messages with
the state view, and costs the relay nothing while off (:mod:`veylor.runtime.tap`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.widgets import Footer, Header, Input, Static

from ..observe.view import StateView
from ..printable import printable
from . import fitting
from .clients import ClientsTable
from .edges import EdgesTable
from .endpoints import EndpointsTable
from .keys import Keys
from .live import Live
from .logpane import LogBuffer, LogPane
from .overlays import KEYS, Overlays
from .pane import Look, Pane
from .rates import Rates
from .reader import TIMEOUT, StateReader, Unavailable
from .sources import SourcesTable
from .spark import Spark
from .status import StatusLine, Summary, reload_note
from .table import Table
from .tap import TapPane
from .terminal import Driver

REFRESH = 0.5  # seconds between two reads of the state view
STALE_AFTER = TIMEOUT + REFRESH  # seconds a read may take before the screen says STALE
TABLES = ("graph", "sources", "endpoints", "clients")  # the panes that are tables, by id


QUIT_WINDOW = 3.0  # seconds in which a second q quits an in-process TUI (it stops Veylor)
WIDE = 160  # columns from which rates and totals are side by side


class VeylorApp(Keys, Overlays):
    """The live routing graph with per-edge rates."""

    CSS_PATH = "veylor.tcss"
    TITLE = "Veylor"
    # What the keys change; each one's watcher redraws what it affects.
    find: reactive[str] = reactive("", init=False)  # the filter of / (lower case)
    totals: reactive[bool] = reactive(False, init=False)  # t: totals instead of rates
    paused: reactive[bool] = reactive(False, init=False)  # p
    tapping: reactive[bool] = reactive(False, init=False)  # m
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("q", "quit", "Quit"),
        Binding("r", "reload", "Reload"),
        Binding("slash", "find", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("t", "totals", "Rates/totals"),
        Binding("m", "tap", "Tap"),
        Binding("c", "every_client", "All clients"),
        Binding("p", "pause", "Pause"),
        Binding("d", "dark", "Dark/light"),
        Binding("question_mark", "help", "Help"),
        *KEYS,  # enter: the selected row's detail; l: the last reload (last: ? stays in the footer)
        *(Binding(str(n), f"sort_column({n})", show=False) for n in range(1, 10)),
    ]

    def __init__(
        self,
        reader: StateReader,
        logs: LogBuffer | None = None,
        read_only: bool = False,
        confirm_quit: bool = False,
    ) -> None:
        """``read_only`` (``veylor top --read-only``): no reload (``r``), no tap (``m``).
        ``confirm_quit`` (``veylor --tui``, where quitting stops the relay and closes every
        client): ``q`` asks, a second ``q`` within ``QUIT_WINDOW`` seconds quits."""
        super().__init__(driver_class=Driver)
        self.reader = reader
        self.logs = logs
        self.read_only = read_only
        self.confirm_quit = confirm_quit
        self.quit_asked_at: float | None = None
        self.rates = Rates()
        self.view: StateView | None = None
        self.stale_since: float | None = None
        self.reading = False  # a read of the state view is out
        self.terminal_ok = True  # False: at exit, the terminal had gone or was not reading
        self.last_read = time.monotonic()  # when the last one came back
        self.selected_endpoint: str | None = None  # whose clients are listed
        self.every_client = False  # c: the clients of every endpoint are listed
        self.selected_edge: tuple[str, ...] | None = None  # the sparkline's, and the tap's route
        self.tables: dict[str, Pane] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Summary("", id="summary")
        yield StatusLine("connecting…", id="status")
        yield EdgesTable(id="graph", zebra=True)
        yield Spark(id="sparkline")
        yield TapPane(id="tap")
        yield SourcesTable(id="sources")
        yield EndpointsTable(id="endpoints")
        with Horizontal(id="bottom"):
            yield ClientsTable(id="clients")
            if self.logs is not None:
                yield LogPane(self.logs, id="logs")
        yield Input(placeholder="filter by name (enter: keep, escape: clear)", id="find")
        yield Footer()
        yield Static("", id="toosmall")

    def on_mount(self) -> None:
        self.sub_title = self.reader.where
        self.tables = {name: self.query_one(f"#{name}", Pane) for name in TABLES}
        self._relabel()
        self.relayout()
        self.set_interval(REFRESH, self.tick)
        self.poll()

    # ------------------------------------------------------------------ reading

    def tick(self) -> None:
        """Twice a second: read the state view; while a read is still out, only see
        whether it has taken too long (a Veylor that hangs is STALE, not live)."""
        if self.paused:
            return
        if self.reading:
            if time.monotonic() - self.last_read > STALE_AFTER:
                self.stale(f"no answer from {self.reader.where} for {time.monotonic() - self.last_read:.0f}s")
            return
        self.poll()

    @work(exclusive=True, group="read")
    async def poll(self) -> None:
        if self.paused:
            return
        self.reader.tap = self.selected_edge[1] if self.tapping and self.selected_edge else None
        self.reading = True
        try:
            view = await self.reader.read()
        except Unavailable as exc:
            self.stale(f"cannot read the state: {exc}")
            return
        finally:
            self.reading = False
        if self.paused:
            return
        for _ in self.rates.updating(view):
            await asyncio.sleep(0)
        self.last_read = time.monotonic()
        self.stale_since = None
        self.view = view
        self.draw(view)

    def stale(self, why: str) -> None:
        """The state cannot be read: say so, and keep the last state on the screen."""
        if self.stale_since is None:
            self.stale_since = time.monotonic()
        self.query_one("#status", StatusLine).stale(why)

    # ------------------------------------------------------------------ drawing

    @work(exclusive=True, group="draw")
    async def draw(self, view: StateView) -> None:
        """Draw ``view`` in pieces, the relay's clients served between two (a key that
        redraws, or a new view, cancels a drawing under way: typing is not queued)."""
        try:
            for part in self._parts():
                for _ in part(view) or ():
                    await asyncio.sleep(0)
                await asyncio.sleep(0)
            for _ in self.drain_logs():
                await asyncio.sleep(0)
            self.relayout()
        except NoMatches:
            return  # the app is closing (its screen is gone): nothing to draw on

    def drain_logs(self) -> Iterator[None]:
        """Lines logged since the last refresh into the log pane (in-process), in pieces."""
        if self.logs is not None:
            yield from self.query_one("#logs", LogPane).drain()

    def _parts(self) -> list[Callable[[StateView], Iterator[None] | None]]:
        if isinstance(self.screen_stack[-1], Live):
            # A detail (enter) or the last reload (l) covers the dashboard: only it is
            # drawn (the tables under it cost the relay's loop for nothing); they are
            # drawn again when it closes.
            return [self.show_live]
        return [
            self.show_status,
            self.show_graph,
            lambda _: self.show_sparkline(),
            self.show_tap,
            self.show_sources,
            self.show_endpoints,
            self.show_clients,
            self.show_live,  # last: the detail (enter) or the last reload (l) on top
        ]

    def look(self) -> Look:
        """What the keys chose for every table now."""
        return Look(self.rates, self.totals, self.find, self.size.width >= WIDE)

    def show_status(self, view: StateView) -> Iterator[None]:
        yield from self.query_one("#summary", Summary).show(view, self.rates, self.reader.where)
        self.query_one("#status", StatusLine).show(view, self.paused)

    def show_graph(self, view: StateView) -> Iterator[None]:
        at = yield from self.query_one("#graph", EdgesTable).draw(view, self.look())
        if at is not None:
            self.selected_edge = tuple(at.split("|"))

    def show_sources(self, view: StateView) -> Iterator[None]:
        return self.query_one("#sources", SourcesTable).draw(view, self.look())

    def show_endpoints(self, view: StateView) -> Iterator[None]:
        at = yield from self.query_one("#endpoints", EndpointsTable).draw(view, self.look())
        if at is not None:
            self.selected_endpoint = at
        elif self.selected_endpoint not in view["endpoints"]:
            self.selected_endpoint = None  # (at is None: no endpoint is shown)
        self.reader.clients_of = True if self.every_client else self.selected_endpoint

    def show_clients(self, view: StateView) -> None:
        self.query_one("#clients", ClientsTable).draw(view, self.look(), self.selected_endpoint)

    def show_sparkline(self) -> None:
        edge = self.selected_edge
        history = self.rates.history.get(("edge", *edge)) if edge else None
        self.query_one("#sparkline", Spark).show(list(history) if history else [], " → ".join(edge or ()))

    def show_tap(self, view: StateView) -> None:
        self.query_one("#tap", TapPane).show(view, self.tapping, self.selected_edge)

    # ------------------------------------------------------------------ selection

    def on_table_highlighted(self, event: Table.Highlighted) -> None:
        """The user moved a table's cursor (the table keeps it on that row): the list of
        clients follows the endpoints table, the sparkline and the tap the graph."""
        name, key = event.table.id, event.key
        if name == "endpoints":
            self.selected_endpoint = key
            self.reader.clients_of = True if self.every_client else key
            if self.view is not None:
                self.show_clients(self.view)
        elif name == "graph":
            edge = tuple(key.split("|"))
            if self.tapping and self.selected_edge and edge[1] != self.selected_edge[1]:
                self.query_one("#tap", TapPane).starting()
            self.selected_edge = edge
            self.show_sparkline()

    # ------------------------------------------------------------------ actions

    def _redraw(self) -> None:
        if self.view is not None:
            self.draw(self.view)

    def redraw_dashboard(self) -> None:
        self._redraw()

    def _relabel(self) -> None:
        both = self.size.width >= WIDE
        for pane in self.tables.values():
            pane.relabel(self.totals, both)

    # ------------------------------------------------------------------ layout

    def on_resize(self) -> None:
        self._relabel()
        self.relayout()
        self._redraw()

    def relayout(self) -> None:
        """Fit the screen's size (:func:`veylor.tui.fitting.relayout`)."""
        try:
            fitting.relayout(self)
        except NoMatches:
            pass  # the app is closing (its screen is gone): nothing to lay out

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Read-only: no reload and no tap (their keys do nothing, and leave the footer)."""
        return not (self.read_only and action in ("reload", "tap"))

    async def action_quit(self) -> None:
        """Quit; in-process (``--tui``), where that stops Veylor, only on a second ``q``."""
        now = time.monotonic()
        if self.confirm_quit and (self.quit_asked_at is None or now - self.quit_asked_at > QUIT_WINDOW):
            self.quit_asked_at = now
            self.notify(
                "q again to stop Veylor (its clients are disconnected); anything else to stay",
                title="Quit?",
                severity="warning",
                timeout=QUIT_WINDOW,
            )
            return
        self.exit()

    @work(exclusive=True, group="reload")
    async def action_reload(self) -> None:
        self.query_one("#status", StatusLine).update("reloading…")
        try:
            outcome = await self.reader.reload()
        except Unavailable as exc:
            self.notify(printable(f"reload: {exc}"), severity="error", markup=False)
            return
        message, severity = reload_note(outcome)
        self.notify(message, severity=severity, markup=False)
        self.poll()

    def terminal_gone(self) -> None:
        """The terminal went away (its writes fail): quit, as ``q`` does."""
        logging.getLogger("veylor").warning("the terminal went away: quitting the TUI")
        self.exit()

    async def on_unmount(self) -> None:
        await self.reader.close()
