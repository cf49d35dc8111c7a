"""The dashboard: one Textual App for both modes (in-process, attached over HTTP).

It reads the state view through a :class:`~veylor.tui.reader.StateReader` twice a second
in an exclusive worker (a slow admin endpoint never freezes the screen), computes rates
from consecutive snapshots (:mod:`veylor.tui.rates`), and updates tables by row key so
the cursor stays still. Nothing comes to it per message from the hot path.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, RichLog, Sparkline, Static

from .rates import Rates, human_rate
from .reader import StateReader, Unavailable
from .terminal import Driver

REFRESH = 0.5  # seconds between two reads of the state view
CLIENT_ROWS = 200  # clients shown at once (the first by the chosen order); the rest are counted
QUIET_AFTER = 10.0  # seconds without a message before a source's last-message age turns to a warning
STATE_MARK = {
    "connected": "● connected",
    "connecting": "◐ connecting",
    "backoff": "○ backing off",
    "stopped": "✕ stopped",
}


class LogBuffer(logging.Handler):
    """A bounded logging handler the TUI drains into its log pane (in-process): while the
    TUI owns the terminal nothing else may write to it."""

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__()
        self.lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append((record.levelno, self.format(record)))
        except Exception:  # pragma: no cover - never raise from logging
            self.handleError(record)


class VeylorApp(App[None]):
    """The live routing graph with per-edge rates."""

    CSS_PATH = "veylor.tcss"
    TITLE = "Veylor"
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("q", "quit", "Quit"),
        Binding("r", "reload", "Reload"),
        Binding("s", "sort_clients", "Sort clients"),
        Binding("question_mark", "help", "Help"),
    ]
    CLIENT_SORTS = ("client", "connected", "messages", "buffered")

    def __init__(self, reader: StateReader, logs: LogBuffer | None = None) -> None:
        super().__init__(driver_class=Driver)
        self.reader = reader
        self.logs = logs
        self.rates = Rates()
        self.view: dict[str, Any] | None = None
        self.stale_since: float | None = None
        self.selected_endpoint: str | None = None
        self.selected_edge: tuple[str, ...] | None = None
        self.client_sort = 0  # index into CLIENT_SORTS

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting…", id="status")
        yield DataTable(id="graph", cursor_type="row", zebra_stripes=True)
        yield Sparkline([], id="sparkline")
        with Horizontal(id="middle"):
            yield DataTable(id="sources", cursor_type="row")
            yield DataTable(id="endpoints", cursor_type="row")
        with Horizontal(id="bottom"):
            yield DataTable(id="clients", cursor_type="row")
            if self.logs is not None:
                yield RichLog(id="logs", max_lines=500, markup=False, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.reader.where
        self.query_one("#graph", DataTable).add_columns(
            "source", "route", "filter", "endpoint", "msgs/s", "total", "filtered"
        )
        self.query_one("#sources", DataTable).add_columns(
            "source", "state", "msgs/s", "bytes/s", "reconnects", "last msg"
        )
        self.query_one("#endpoints", DataTable).add_columns(
            "endpoint", "clients", "deliveries/s", "refused", "from clients", "address"
        )
        self.query_one("#clients", DataTable).add_columns("client", "connected", "messages", "buffered")
        self.set_interval(REFRESH, self.poll)
        self.poll()

    # ------------------------------------------------------------------ reading

    @work(exclusive=True, group="read")
    async def poll(self) -> None:
        try:
            view = await self.reader.read()
        except Unavailable as exc:
            if self.stale_since is None:
                self.stale_since = time.monotonic()
            self.query_one("#status", Static).update(f"[b red]STALE[/] cannot read the state: {exc}")
            return
        self.stale_since = None
        self.rates.update(view)
        self.view = view
        self.show(view)
        self.drain_logs()

    def drain_logs(self) -> None:
        if self.logs is None:
            return
        pane = self.query_one("#logs", RichLog)
        while self.logs.lines:
            level, line = self.logs.lines.popleft()
            style = "red" if level >= logging.ERROR else "yellow" if level >= logging.WARNING else ""
            pane.write(f"[{style}]{_escape(line)}[/]" if style else line)

    # ------------------------------------------------------------------ drawing

    def show(self, view: dict[str, Any]) -> None:
        config = view["config"]
        last = view["reloads"]["last"]
        reload_text = "no reload yet"
        if last is not None:
            if last["problems"]:
                first = last["problems"][0]
                reload_text = f"[b red]last reload refused[/]: {first['file']}:{first['line']} {first['path']}: {first['message']}"
            elif last["error"]:
                reload_text = f"[b red]last reload not applied[/]: {last['error']}"
            else:
                changes = "; ".join(last["changes"][:3]) or "no changes"
                reload_text = f"last reload: {changes}"
        self.query_one("#status", Static).update(
            f"generation {config['generation']} (config {config['digest'][:12]}) · {reload_text}"
        )
        self.show_graph(view)
        self.show_sparkline()
        self.show_sources(view)
        self.show_endpoints(view)
        self.show_clients(view)

    def show_graph(self, view: dict[str, Any]) -> None:
        routes, endpoints = view["routes"], view["endpoints"]
        rows: dict[str, tuple[Any, ...]] = {}
        previous_source = None
        for edge in sorted(view["edges"], key=lambda e: (e["source"], e["route"], e["endpoint"])):
            source, route, endpoint = edge["source"], edge["route"], edge["endpoint"]
            r = routes.get(route, {})
            ep = endpoints.get(endpoint, {})
            rows[f"{source}|{route}|{endpoint}"] = (
                source if source != previous_source else "",
                f"→ {route}" + (" ⇅" if r.get("upstream") else ""),
                r.get("filter", ""),
                f"→ {endpoint} ({ep.get('clients', 0)})",
                human_rate(self.rates.get("edge", source, route, endpoint)),
                f"{edge['messages']:,}",
                f"{r.get('filtered', 0):,}",
            )
            previous_source = source
        _sync(self.query_one("#graph", DataTable), rows)

    def show_sources(self, view: dict[str, Any]) -> None:
        now = view["time"]
        rows = {}
        for name, s in view["sources"].items():
            last = s.get("last_message_at")
            age = "-" if last is None else f"{now - last:.0f}s ago"
            if last is not None and now - last > QUIET_AFTER:
                age = f"[yellow]{age}[/]"
            state = STATE_MARK.get(s["state"], s["state"])
            if s["state"] == "backoff" and s.get("next_attempt_at"):
                state += f" ({max(0.0, s['next_attempt_at'] - now):.0f}s)"
            rows[name] = (
                name,
                state,
                human_rate(self.rates.get("source", name)),
                human_rate(self.rates.get("source_bytes", name)).replace("/s", "B/s"),
                f"{max(0, s['connects'] - 1):,}",
                age,
            )
        _sync(self.query_one("#sources", DataTable), rows)

    def show_endpoints(self, view: dict[str, Any]) -> None:
        rows = {
            name: (
                name,
                f"{e['clients']:,}",
                human_rate(self.rates.get("endpoint", name)),
                f"{e['refused']:,}",
                f"{e['received']:,}",
                e["address"],
            )
            for name, e in view["endpoints"].items()
        }
        table = self.query_one("#endpoints", DataTable)
        _sync(table, rows)
        if self.selected_endpoint not in rows:
            self.selected_endpoint = next(iter(rows), None)
        self.reader.clients_of = self.selected_endpoint

    def show_clients(self, view: dict[str, Any]) -> None:
        table = self.query_one("#clients", DataTable)
        ep = view["endpoints"].get(self.selected_endpoint or "", {})
        now = view["time"]
        key = self.CLIENT_SORTS[self.client_sort]
        everyone = sorted(ep.get("client_list", []), key=_CLIENT_ORDER[key])
        listed = everyone[:CLIENT_ROWS]
        rows = {
            c["client"]: (
                c["client"],
                f"{now - c['connected_since']:.0f}s",
                f"{c['messages']:,}",
                f"{c['buffered']:,}",
            )
            for c in listed
        }
        more = ep.get("clients_not_listed", 0) + len(everyone) - len(listed)
        title = f"clients of {self.selected_endpoint}" if self.selected_endpoint else "clients"
        table.border_title = title + f", by {key}" + (f" (+{more:,} not listed)" if more else "")
        table.border_subtitle = None if rows else "no clients connected"
        shown = [k.value for k in table.rows]
        if shown != [k for k in rows if k in set(shown)]:
            table.clear()  # the order changed (a new sort): rebuilt
        _sync(table, rows)

    def show_sparkline(self) -> None:
        line = self.query_one("#sparkline", Sparkline)
        history = self.rates.history.get(("edge", *self.selected_edge)) if self.selected_edge else None
        line.data = list(history) if history else [0.0]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if key is None:
            return
        if event.data_table.id == "endpoints":
            self.selected_endpoint = self.reader.clients_of = key
            if self.view is not None:
                self.show_clients(self.view)
        elif event.data_table.id == "graph":
            self.selected_edge = tuple(key.split("|"))
            self.show_sparkline()

    def action_sort_clients(self) -> None:
        self.client_sort = (self.client_sort + 1) % len(self.CLIENT_SORTS)
        if self.view is not None:
            self.show_clients(self.view)

    def action_help(self) -> None:
        self.push_screen(Help())

    # ------------------------------------------------------------------ actions

    @work(exclusive=True, group="reload")
    async def action_reload(self) -> None:
        self.query_one("#status", Static).update("reloading…")
        try:
            outcome = await self.reader.reload()
        except Unavailable as exc:
            self.notify(f"reload: {exc}", severity="error")
            return
        if outcome.get("problems"):
            first = outcome["problems"][0]
            self.notify(
                f"{first['file']}:{first['line']} {first['path']}: {first['message']}", severity="error"
            )
        elif outcome.get("error"):
            self.notify(outcome["error"], severity="error")
        else:
            self.notify("; ".join(outcome.get("changes", [])) or "no changes")
        self.poll()

    def terminal_gone(self) -> None:
        """The terminal went away (its writes fail): quit, as ``q`` does."""
        logging.getLogger("veylor").warning("the terminal went away: quitting the TUI")
        self.exit()

    async def on_unmount(self) -> None:
        await self.reader.close()


_CLIENT_ORDER: dict[str, Any] = {
    "client": lambda c: c["client"],
    "connected": lambda c: c["connected_since"],  # the longest connected first
    "messages": lambda c: -c["messages"],
    "buffered": lambda c: -c["buffered"],
}


class Help(ModalScreen[None]):
    """The keys, and what the screen shows."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape,question_mark,q", "dismiss", "Close")
    ]
    TEXT = """[b]Veylor: the routing graph, live[/b]

[b]graph[/b]      one row per edge source → route → endpoint: the route's filter, ⇅ where
           clients may send upstream, the endpoint's clients, messages per second
           (smoothed), the edge's total, the route's filtered-out count; the
           sparkline under it is the selected edge's last minute
[b]sources[/b]    state (backing off: seconds to the next try), rates, reconnects, and
           the last message's age (yellow after 10 s of silence)
[b]endpoints[/b]  clients, deliveries per second, refused, messages from clients;
           select one to list its clients below

[b]r[/b]  reload the configuration (the result shows in the status line)
[b]s[/b]  sort the clients: by address, connection time, messages, buffered bytes
[b]tab[/b]  move between tables      [b]?[/b]  this help      [b]q[/b]  quit
"""

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(self.TEXT)


def _sync(table: DataTable[Any], rows: dict[str, tuple[Any, ...]]) -> None:
    """Make ``table`` show ``rows`` (by key): rows gone are removed, new ones added,
    changed cells updated in place (the cursor stays where it is)."""
    present = {key.value for key in table.rows}
    for key in present - rows.keys():
        table.remove_row(key)
    columns = list(table.columns)
    for key, cells in rows.items():
        if key not in present:
            table.add_row(*cells, key=key)
            continue
        current = table.get_row(key)
        for column, old, new in zip(columns, current, cells, strict=False):
            if old != new:
                table.update_cell(key, column, new)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
