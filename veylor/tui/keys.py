"""What the keys that change the view do, for :class:`~veylor.tui.app.VeylorApp`: ``s``
the next column, ``1``-``9`` that column as shown (again: the other way), ``/`` the
filter by name (enter keeps it, escape clears it), ``t`` totals, ``p`` pause, ``d``
dark or light, ``c`` the clients of every endpoint, ``m`` the tap. (The app keeps
those that act on Veylor: reload and quit.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from textual.widgets import Input

from .clients import ClientsTable
from .pane import Pane
from .tap import TapPane

if TYPE_CHECKING:
    from .app import VeylorApp

LIGHT, DARK = "textual-light", "textual-dark"


class Keys:
    """The app's keys that change the view (a part of the app: ``self`` is the app)."""

    def _sorting(self) -> Pane:
        """The table the sort keys sort: the focused one (the graph, if none is)."""
        app = cast("VeylorApp", self)
        focused = app.focused
        return focused if isinstance(focused, Pane) else app.tables["graph"]

    def action_sort(self) -> None:
        """Sort the focused table by its next column."""
        app = cast("VeylorApp", self)
        app._sorting().sort_next()
        app._relabel()
        app._redraw()

    def action_sort_column(self, place: int) -> None:
        """1-9: sort the focused table by that column (as shown, from the left); again:
        the other way."""
        app = cast("VeylorApp", self)
        app._sorting().sort_by(place)
        app._relabel()
        app._redraw()

    def action_find(self) -> None:
        app = cast("VeylorApp", self)
        find = app.query_one("#find", Input)
        find.display = True
        find.focus()
        app.relayout()

    def on_input_changed(self, event: Input.Changed) -> None:
        app = cast("VeylorApp", self)
        app.find = event.value.strip().lower()

    def watch_find(self) -> None:
        app = cast("VeylorApp", self)
        app._redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        app = cast("VeylorApp", self)
        event.input.display = bool(event.value.strip())
        app.tables["graph"].focus()
        app.relayout()

    def on_key(self, event: Any) -> None:
        app = cast("VeylorApp", self)
        find = app.query_one("#find", Input)
        if event.key == "escape" and find.has_focus:
            find.value = ""
            find.display = False
            app.tables["graph"].focus()
            app.relayout()
            event.stop()

    def action_totals(self) -> None:
        app = cast("VeylorApp", self)
        app.totals = not app.totals

    def watch_totals(self) -> None:
        app = cast("VeylorApp", self)
        app._relabel()
        app._redraw()

    def action_pause(self) -> None:
        app = cast("VeylorApp", self)
        app.paused = not app.paused

    def watch_paused(self, paused: bool) -> None:
        app = cast("VeylorApp", self)
        app.sub_title = app.reader.where + (" · PAUSED (p resumes)" if paused else "")
        app._redraw()
        if not paused:
            app.poll()

    def action_dark(self) -> None:
        app = cast("VeylorApp", self)
        app.theme = LIGHT if app.theme != LIGHT else DARK

    def action_every_client(self) -> None:
        """c: list the clients of every endpoint (worst first), or of the selected one."""
        app = cast("VeylorApp", self)
        app.every_client = not app.every_client
        app.query_one("#clients", ClientsTable).show_every(app.every_client)
        app.reader.clients_of = True if app.every_client else app.selected_endpoint
        app._relabel()
        app.poll()

    def action_tap(self) -> None:
        app = cast("VeylorApp", self)
        app.tapping = not app.tapping

    def watch_tapping(self) -> None:
        app = cast("VeylorApp", self)
        app.query_one("#tap", TapPane).starting()
        app.relayout()
        app._redraw()
        app.poll()
