"""What the sort and filter keys do, for :class:`~veylor.tui.app.VeylorApp`: ``s`` the
next column, ``1``-``9`` that column as shown (again: the other way), ``/`` the filter
by name (enter keeps it, escape clears it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from textual.widgets import Input

from .pane import Pane

if TYPE_CHECKING:
    from .app import VeylorApp


class Keys:
    """The app's sort and filter keys (a part of the app: ``self`` is the app)."""

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
