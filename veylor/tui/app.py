"""The dashboard: one Textual App for both modes (in-process, attached over HTTP).

It reads the state view through a :class:`~veylor.tui.reader.StateReader` twice a second
in an exclusive worker (a slow admin endpoint never freezes the screen), computes rates
from consecutive snapshots (:mod:`veylor.tui.rates`), and updates tables by row key so
the cursor stays on its row. Nothing comes to it per message from the hot path; the
tap (``m``) reads a route's last messages with the state view, and costs the relay
nothing while off (:mod:`veylor.runtime.tap`).

A table shows at most ``ROWS`` rows (the first in its order; ``/`` finds the others):
with thousands of sources and endpoints, each refresh costs the same as with a few
hundred, on the loop the relay shares in-process.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, Input, RichLog, Static

from ..printable import printable
from .rates import Rates, drops, human_rate
from .reader import TIMEOUT, StateReader, Unavailable
from .table import Table
from .terminal import Driver

REFRESH = 0.5  # seconds between two reads of the state view
STALE_AFTER = TIMEOUT + REFRESH  # seconds a read may take before the screen says STALE
LOG_LINES = 500  # lines the log pane keeps
CHUNK = 200  # items a table reads between two turns of the event loop (the relay's)
ROWS = 100  # rows a table shows at once (the first in its order); the rest are counted
QUIET_AFTER = 10.0  # seconds without a message before a source's last-message age turns to a warning
STATE = {  # a source's state: mark and colour
    "connected": ("●", "connected", "green"),
    "connecting": ("◐", "connecting", "yellow"),
    "backoff": ("○", "backing off", "yellow"),
    "reconnecting": ("◐", "reconnecting", "yellow"),  # NATS: the client library fails over
    "subscribing": ("◐", "subscribing", "yellow"),  # NATS JetStream: connected, the stream not there yet
    "stalled": ("○", "stalled", "red"),  # NATS: the connection stopped reading; made again
    "stopped": ("✕", "stopped", "bright_black"),
    "failed": ("✕", "failed", "red"),
}
LIGHT, DARK = "textual-light", "textual-dark"


class LogBuffer(logging.Handler):
    """A bounded logging handler the TUI drains into its log pane (in-process): while the
    TUI owns the terminal nothing else may write to it."""

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__()
        self.lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append((record.levelno, printable(self.format(record), lines=True)))
        except Exception:  # pragma: no cover - never raise from logging
            self.handleError(record)


@dataclass(slots=True)
class Row:
    """One item of a table: its key, what it is found by (``/``), its sort value for each
    column (names ascending; numbers negated, the largest first), and what its cells are
    made of (cells are made only for the rows shown)."""

    key: str
    names: str
    order: tuple[Any, ...]
    data: Any


@dataclass
class Columns:
    """A table's columns: labels with rates shown, and with totals shown (``t``); which
    are right-aligned (numbers)."""

    rates: tuple[str, ...]
    totals: tuple[str, ...]
    right: tuple[bool, ...]


COLUMNS = {
    "graph": Columns(
        ("source", "route", "filter", "endpoint", "msgs/s", "filtered/s", "drops/s"),
        ("source", "route", "filter", "endpoint", "msgs", "filtered", "drops"),
        (False, False, False, False, True, True, True),
    ),
    "sources": Columns(
        ("source", "state", "msgs/s", "bytes/s", "reconnects", "last msg", "up", "ping", "url"),
        ("source", "state", "msgs", "bytes", "reconnects", "last msg", "up", "ping", "url"),
        (False, False, True, True, True, False, True, True, False),
    ),
    "endpoints": Columns(
        ("endpoint", "clients", "deliveries/s", "drops/s", "refused", "from clients", "address"),
        ("endpoint", "clients", "deliveries", "drops", "refused", "from clients", "address"),
        (False, True, True, True, True, True, False),
    ),
    "clients": Columns(
        ("client", "connected", "messages", "buffered"),
        ("client", "connected", "messages", "buffered"),
        (False, True, True, True),
    ),
}


def refused(endpoint: dict[str, Any]) -> int:
    """Clients an endpoint refused, for every reason (max_clients, origin, token, peer,
    pending handshakes)."""
    return sum(v for k, v in endpoint.items() if k.startswith("refused") and isinstance(v, int))


class VeylorApp(App[None]):
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
        Binding("p", "pause", "Pause"),
        Binding("d", "dark", "Dark/light"),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(self, reader: StateReader, logs: LogBuffer | None = None) -> None:
        super().__init__(driver_class=Driver)
        self.reader = reader
        self.logs = logs
        self.rates = Rates()
        self.view: dict[str, Any] | None = None
        self.stale_since: float | None = None
        self.reading = False  # a read of the state view is out
        self.terminal_ok = True  # False: at exit, the terminal had gone or was not reading
        self.last_read = time.monotonic()  # when the last one came back
        self.selected_endpoint: str | None = None
        self.selected_edge: tuple[str, ...] | None = None
        self.sort_by = dict.fromkeys(COLUMNS, 0)  # table -> column index
        self.cursor: dict[str, str] = {}  # table -> the key of the row its cursor is on
        self.tables: dict[str, Table] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("connecting…", id="status")
        yield Table(id="graph", zebra=True)
        yield Spark(id="sparkline")
        yield Static(id="tap")
        yield Table(id="sources")
        yield Table(id="endpoints")
        with Horizontal(id="bottom"):
            yield Table(id="clients")
            if self.logs is not None:
                yield RichLog(id="logs", max_lines=LOG_LINES, markup=False, wrap=False)
        yield Input(placeholder="filter by name (enter: keep, escape: clear)", id="find")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.reader.where
        self.query_one("#tap").display = False
        self.query_one("#find").display = False
        self.tables = {name: self.query_one(f"#{name}", Table) for name in COLUMNS}
        self._columns()
        self.set_interval(REFRESH, self.tick)
        self.poll()

    def _columns(self) -> None:
        for name, columns in COLUMNS.items():
            labels = columns.totals if self.totals else columns.rates
            self.tables[name].set_columns(
                tuple(label + (" ▼" if i == self.sort_by[name] else "") for i, label in enumerate(labels)),
                columns.right,
            )

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
        try:
            for _ in self.rates.updating(view):
                await asyncio.sleep(0)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.stale(f"{self.reader.where} did not answer with Veylor's state view ({exc!r})")
            return
        self.last_read = time.monotonic()
        self.stale_since = None
        self.view = view
        self.draw(view)

    def stale(self, why: str) -> None:
        """The state cannot be read: say so, and keep the last state on the screen."""
        if self.stale_since is None:
            self.stale_since = time.monotonic()
        status = Text.assemble(("STALE", "bold red"), " ", printable(why))
        self.query_one("#status", Static).update(status, layout=False)

    @work(exclusive=True, group="draw")
    async def draw(self, view: dict[str, Any]) -> None:
        """Draw ``view`` in pieces, the relay's clients served between two (a key that
        redraws, or a new view, cancels a drawing under way: typing is not queued)."""
        try:
            for part in self._parts():
                for _ in part(view) or ():
                    await asyncio.sleep(0)
                await asyncio.sleep(0)
        except NoMatches:
            return  # the app is closing (its screen is gone): nothing to draw on
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.stale(f"{self.reader.where} did not answer with Veylor's state view ({exc!r})")
            return
        for _ in self.drain_logs():
            await asyncio.sleep(0)

    def drain_logs(self) -> Iterator[None]:
        """Lines logged since the last refresh into the log pane (the last ``LOG_LINES``
        of them: the pane keeps no more), in pieces."""
        if self.logs is None:
            return
        pane = self.query_one("#logs", RichLog)
        lines = self.logs.lines
        while len(lines) > LOG_LINES:
            lines.popleft()
        for i in range(len(lines)):
            level, line = lines.popleft()
            style = "red" if level >= logging.ERROR else "yellow" if level >= logging.WARNING else ""
            pane.write(Text(line, style=style))
            if i % 50 == 49:
                yield

    # ------------------------------------------------------------------ drawing

    def _parts(self) -> list[Callable[[dict[str, Any]], Iterator[None] | None]]:
        return [
            self.show_status,
            self.show_graph,
            lambda _: self.show_sparkline(),
            self.show_tap,
            self.show_sources,
            self.show_endpoints,
            self.show_clients,
        ]

    def show_status(self, view: dict[str, Any]) -> None:
        config = view["config"]
        status = Text(f"generation {config['generation']} (config {config['digest'][:12]}) · ")
        last = view["reloads"]["last"]
        if last is None:
            status.append("no reload yet")
        elif last["problems"]:
            first = last["problems"][0]
            status.append("last reload refused", "bold red")
            status.append(printable(f": {first['file']}:{first['line']} {first['path']}: {first['message']}"))
        elif last["error"]:
            status.append("last reload not applied", "bold red")
            status.append(printable(f": {last['error']}"))
        else:
            steps = last.get("steps") or []
            status.append(printable("last reload: " + ("; ".join(last["changes"][:3]) or "no changes")))
            if steps:
                status.append(
                    printable(
                        f" ({len(steps)} steps: "
                        + ", ".join(_step(s) for s in steps[:4])
                        + ("…)" if len(steps) > 4 else ")")
                    )
                )
        if self.paused:
            status = Text.assemble(("PAUSED ", "bold yellow"), status)
        self.query_one("#status", Static).update(status, layout=False)

    def show_graph(self, view: dict[str, Any]) -> Iterator[None]:
        routes, endpoints, sources = view["routes"], view["endpoints"], view["sources"]
        rows = []
        for i, edge in enumerate(view["edges"], 1):
            if i % CHUNK == 0:
                yield
            source, route, endpoint = edge["source"], edge["route"], edge["endpoint"]
            r, ep = routes.get(route, {}), endpoints.get(endpoint, {})
            msgs = self._number(("edge", source, route, endpoint), edge["messages"])
            filtered = self._number(("filtered", route), r.get("filtered", 0))
            dropped = self._number(("drops", endpoint), drops(ep))
            rows.append(
                Row(
                    f"{source}|{route}|{endpoint}",
                    f"{source} {route} {endpoint}",
                    (source, route, r.get("filter", ""), endpoint, msgs[1], filtered[1], dropped[1]),
                    (edge, r, ep, sources.get(source, {}), msgs[0], filtered[0], dropped[0]),
                )
            )
        shown = self._fill("graph", rows, "edge")
        yield
        by_source = self.sort_by["graph"] == 0  # a source's name on its first row only
        cells = []
        previous = None
        for row in shown:
            edge, r, ep, source, msgs, filtered, dropped = row.data
            mark, _, colour = _state(source)
            name = edge["source"]
            cells.append(
                (
                    Text("") if by_source and name == previous else Text.assemble((mark, colour), " ", name),
                    Text("→ " + edge["route"] + (" ⇅" if r.get("upstream") else "")),
                    Text(r.get("filter", "")),
                    Text(f"→ {edge['endpoint']} ({ep.get('clients', 0):,})"),
                    Text(msgs),
                    Text(filtered),
                    Text(dropped),
                )
            )
            previous = name
        at = self._sync("graph", shown, cells)
        if at is not None:
            self.selected_edge = tuple(at.split("|"))

    def show_sources(self, view: dict[str, Any]) -> Iterator[None]:
        now = view["time"]
        rows = []
        for i, (name, s) in enumerate(view["sources"].items(), 1):
            if i % CHUNK == 0:
                yield
            last = s.get("last_message_at")
            since = s.get("connected_since")
            up = now - since if since and s["state"] == "connected" else None
            rtt = s.get("ping_rtt")
            msgs = self._number(("source", name), s["messages_in"])
            size = self._number(("source_bytes", name), s["bytes_in"], unit="B")
            reconnects = max(0, s["connects"] - 1)
            url = s.get("url", "")
            rows.append(
                Row(
                    name,
                    f"{name} {url}",
                    (
                        name,
                        _state(s)[1],
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
        shown = self._fill("sources", rows, "source")
        yield
        cells = []
        for row in shown:
            s, msgs, size, reconnects, last, up, rtt = row.data
            age = Text("-" if last is None else _duration(now - last) + " ago")
            if last is not None and now - last > QUIET_AFTER:
                age.stylize("yellow")
            mark, word, colour = _state(s)
            state = Text.assemble((f"{mark} {word}", colour))
            if s["state"] == "backoff" and s.get("next_attempt_at"):
                state.append(f" ({max(0.0, s['next_attempt_at'] - now):.0f}s)")
            cells.append(
                (
                    Text(row.key),
                    state,
                    Text(msgs),
                    Text(size),
                    Text(f"{reconnects:,}"),
                    age,
                    Text("-" if up is None else _duration(up)),
                    Text("-" if not rtt else f"{rtt * 1000:.1f} ms"),
                    Text(s.get("url", "")),
                )
            )
        self._sync("sources", shown, cells)

    def show_endpoints(self, view: dict[str, Any]) -> Iterator[None]:
        rows = []
        for i, (name, e) in enumerate(view["endpoints"].items(), 1):
            if i % CHUNK == 0:
                yield
            out = self._number(("endpoint", name), e["messages_out"])
            dropped = self._number(("drops", name), drops(e))
            rows.append(
                Row(
                    name,
                    f"{name} {e['address']}",
                    (name, -e["clients"], out[1], dropped[1], -refused(e), -e["received"], e["address"]),
                    (e, out[0], dropped[0]),
                )
            )
        shown = self._fill("endpoints", rows, "endpoint")
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
        at = self._sync("endpoints", shown, cells)
        if at is not None:
            self.selected_endpoint = at
        elif self.selected_endpoint not in view["endpoints"]:
            self.selected_endpoint = shown[0].key if shown else None
        self.reader.clients_of = self.selected_endpoint

    def show_clients(self, view: dict[str, Any]) -> None:
        table = self.tables["clients"]
        ep = view["endpoints"].get(self.selected_endpoint or "", {})
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
        of = f"{self.selected_endpoint}: " if self.selected_endpoint else ""
        shown = self._fill("clients", rows, "client", unlisted=ep.get("clients_not_listed", 0), prefix=of)
        table.border_subtitle = None if rows else "no clients connected"
        cells = [
            (
                Text(c["client"]),
                Text(_duration(now - c["connected_since"])),
                Text(f"{c['messages']:,}"),
                Text(f"{c['buffered']:,}"),
            )
            for c in (row.data for row in shown)
        ]
        self._sync("clients", shown, cells)

    def show_sparkline(self) -> None:
        history = self.rates.history.get(("edge", *self.selected_edge)) if self.selected_edge else None
        self.query_one("#sparkline", Spark).show(list(history) if history else [])

    def show_tap(self, view: dict[str, Any]) -> None:
        pane = self.query_one("#tap", Static)
        if pane.display != self.tapping:
            pane.display = self.tapping
        if not self.tapping:
            return
        tap = view.get("tap")
        if not self.selected_edge:
            pane.border_title, body = _title("tap"), Text("select an edge in the graph")
        elif tap is None:
            pane.border_title, body = _title(f"tap: {self.selected_edge[1]}"), Text("starting…")
        elif tap.get("error"):
            pane.border_title, body = _title(f"tap: {tap['route']}"), Text(printable(tap["error"]), "red")
        else:
            pane.border_title = _title(
                f"tap: {tap['route']} (newest first; {tap['seen']:,} passed while tapped)"
            )
            lines = "\n".join(printable(line) for line in tap["messages"])  # (escaped already by Veylor)
            body = Text(lines or "no message yet", no_wrap=True, overflow="ellipsis")
        pane.update(body, layout=False)

    def _number(self, key: tuple[str, ...], total: int, unit: str = "") -> tuple[str, float]:
        """A counter as shown (its rate, or with ``t`` its total) and its sort value."""
        if self.totals:
            return f"{total:,}", -total
        rate = self.rates.get(*key)
        return human_rate(rate, unit), -(rate or 0.0)

    def _fill(self, name: str, rows: list[Row], noun: str, unlisted: int = 0, prefix: str = "") -> list[Row]:
        """The rows a table shows: those found by ``/``, in the table's order, at most
        ``ROWS``; the table's title says how many there are and how many are not shown."""
        table = self.tables[name]
        everyone = len(rows) + unlisted
        if self.find:
            rows = [row for row in rows if self.find in row.names.lower()]
        column = self.sort_by[name]
        rows.sort(key=lambda row: (row.order[column], row.key))
        shown = rows[:ROWS]
        title = f"{prefix}{everyone:,} {noun}{'s' * (everyone != 1)}"
        if self.find:
            title += f", {len(rows):,} match “{self.find}”"
        if len(shown) < len(rows) or unlisted:
            title += f", {len(rows) - len(shown) + unlisted:,} not shown (/ to filter)"
        table.border_title = _title(title)
        return shown

    def _sync(self, name: str, rows: list[Row], cells: Sequence[tuple[Text, ...]]) -> str | None:
        """Show ``rows`` in table ``name``; the key of the row under its cursor now (which
        follows its row when the order changes), or None when the table is empty."""
        return self.tables[name].show([row.key for row in rows], cells, self.cursor.get(name))

    # ------------------------------------------------------------------ selection

    def on_table_highlighted(self, event: Table.Highlighted) -> None:
        name, key = event.table.id, event.key
        if name not in self.tables:
            return
        self.cursor[name] = key
        if name == "endpoints":
            self.selected_endpoint = self.reader.clients_of = key
            if self.view is not None:
                self.show_clients(self.view)
        elif name == "graph":
            edge = tuple(key.split("|"))
            if self.tapping and self.selected_edge and edge[1] != self.selected_edge[1]:
                self.query_one("#tap", Static).update(Text("starting…"))
            self.selected_edge = edge
            self.show_sparkline()

    # ------------------------------------------------------------------ actions

    def _redraw(self) -> None:
        if self.view is not None:
            self.draw(self.view)

    def action_sort(self) -> None:
        """Sort the focused table (the graph, if none is) by its next column."""
        focused = self.focused
        name = focused.id if isinstance(focused, Table) and focused.id in COLUMNS else "graph"
        self.sort_by[name] = (self.sort_by[name] + 1) % len(COLUMNS[name].rates)
        self._columns()
        self._redraw()

    def action_totals(self) -> None:
        self.totals = not self.totals

    def watch_totals(self) -> None:
        self._columns()
        self._redraw()

    def action_pause(self) -> None:
        self.paused = not self.paused

    def watch_paused(self, paused: bool) -> None:
        self.sub_title = self.reader.where + (" · PAUSED (p resumes)" if paused else "")
        self._redraw()
        if not paused:
            self.poll()

    def action_dark(self) -> None:
        self.theme = LIGHT if self.theme != LIGHT else DARK

    def action_tap(self) -> None:
        self.tapping = not self.tapping

    def watch_tapping(self) -> None:
        self.query_one("#tap", Static).update(Text("starting…"))
        self._redraw()
        self.poll()

    def action_find(self) -> None:
        find = self.query_one("#find", Input)
        find.display = True
        find.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.find = event.value.strip().lower()

    def watch_find(self) -> None:
        self._redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.input.display = bool(event.value.strip())
        self.tables["graph"].focus()

    def on_key(self, event: Any) -> None:
        find = self.query_one("#find", Input)
        if event.key == "escape" and find.has_focus:
            find.value = ""
            find.display = False
            self.tables["graph"].focus()
            event.stop()

    def action_help(self) -> None:
        self.push_screen(Help())

    @work(exclusive=True, group="reload")
    async def action_reload(self) -> None:
        self.query_one("#status", Static).update("reloading…")
        try:
            outcome = await self.reader.reload()
        except Unavailable as exc:
            self.notify(printable(f"reload: {exc}"), severity="error", markup=False)
            return
        if outcome.get("problems"):
            first = outcome["problems"][0]
            self.notify(
                printable(f"{first['file']}:{first['line']} {first['path']}: {first['message']}"),
                severity="error",
                markup=False,
            )
        elif outcome.get("error"):
            self.notify(printable(str(outcome["error"])), severity="error", markup=False)
        else:
            steps = outcome.get("steps") or []
            text = "; ".join(outcome.get("changes", [])) or "no changes"
            if steps:
                text += "\nsteps: " + ", ".join(_step(s) for s in steps)
            self.notify(printable(text, lines=True), markup=False)
        self.poll()

    def terminal_gone(self) -> None:
        """The terminal went away (its writes fail): quit, as ``q`` does."""
        logging.getLogger("veylor").warning("the terminal went away: quitting the TUI")
        self.exit()

    async def on_unmount(self) -> None:
        await self.reader.close()


class Help(ModalScreen[None]):
    """The keys, and what the screen shows."""

    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape,question_mark,q", "dismiss", "Close")
    ]
    TEXT = """[b]Veylor: the routing graph, live[/b]

[b]graph[/b]      one row per edge source → route → endpoint: the source's state, the
           route's filter, ⇅ where clients may send upstream, the endpoint's
           clients; messages, filtered out (the route) and slow-client drops (the
           endpoint) per second, smoothed over a few seconds. Under it, the
           selected edge's last minute
[b]sources[/b]    state (backing off: seconds to the next try), rates, reconnects, the
           last message's age (yellow after 10 s of silence), uptime, ping
[b]endpoints[/b]  clients, deliveries, drops, refused, messages from clients; select
           one to list its clients below
A table shows its first {ROWS} rows: [b]/[/b] finds the others.

[b]r[/b]  reload the configuration (the steps, or the problem with its file and line)
[b]/[/b]  filter the tables by name (enter keeps it, escape clears it)
[b]s[/b]  sort the focused table by its next column (▼ marks it)
[b]t[/b]  totals instead of rates, and back
[b]m[/b]  tap: the last messages that passed the selected edge's route (off: free)
[b]p[/b]  pause the display      [b]d[/b]  dark or light
[b]tab[/b]  move between tables   [b]?[/b]  this help      [b]q[/b]  quit
""".replace("{ROWS}", str(ROWS))

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(self.TEXT)


def _state(source: dict[str, Any]) -> tuple[str, str, str]:
    """A source's state as (mark, word, colour): a source stopped after failing is failed."""
    state = source.get("state", "stopped")
    if state == "stopped" and source.get("failures"):
        state = "failed"
    return STATE.get(state, ("?", state, ""))


def _title(text: str) -> Content:
    """A border title shown as it is: never markup, no control character."""
    return Content(printable(text))


def _step(step: dict[str, Any]) -> str:
    return f"{step['op']} {step['name']}".strip()


def _duration(seconds: float) -> str:
    """``45s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class Spark(Static):
    """A sparkline two lines high, drawn as one text (Textual's Sparkline blends a colour
    per bar: a few milliseconds a frame, on the loop the relay shares)."""

    BARS = " ▁▂▃▄▅▆▇█"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data: list[float] = []

    def show(self, data: list[float]) -> None:
        self.data = data
        width = self.content_size.width or 80
        points = data[-width:]
        top = max(points, default=0.0)
        levels = [round(p / top * 16) if top > 0 else 0 for p in points]
        bars = self.BARS
        upper = "".join(bars[max(0, level - 8)] for level in levels)
        lower = "".join(bars[min(8, level)] if level else "▁" for level in levels)
        self.update(
            Text(f"{upper.rjust(width)}\n{lower.rjust(width)}", style="green", no_wrap=True), layout=False
        )

    def on_resize(self) -> None:
        self.show(self.data)
