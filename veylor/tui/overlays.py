"""The screens the dashboard opens over itself: the help (``?``), a row's detail
(``enter``) and the last reload (``l``). The dashboard (:class:`~veylor.tui.app.VeylorApp`)
is an :class:`Overlays`: it lists :data:`KEYS` among its bindings, and draws each new
view on the screen on top, last, with :meth:`Overlays.show_live`. What each screen says
is in its own module (:mod:`.help`, :mod:`.detail`, :mod:`.reloads`); this one only
opens them.
"""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from ..observe.view import StateView
from .detail import Detail, selected
from .help import Help
from .live import Live
from .pane import Pane
from .reloads import Reloads

KEYS = [Binding("enter", "detail", "Details"), Binding("l", "reloads", "Last reload")]


class Overlays(App[None]):
    """The actions that open a screen over the dashboard. Those drawn from the state
    view (:class:`~veylor.tui.live.Live`) start from the last view read and follow each
    new one. The app has the tables, the endpoint whose clients are listed, and that
    view."""

    tables: dict[str, Pane]
    selected_endpoint: str | None
    view: StateView | None

    def action_help(self) -> None:
        self.push_screen(Help())

    def action_detail(self) -> None:
        """The detail of the focused table's row (the graph's, if no table is focused)."""
        chosen = selected(self.focused, self.tables["graph"], self.selected_endpoint)
        if chosen is not None:
            self.push_screen(Detail(*chosen, self.view), self.closed)

    def action_reloads(self) -> None:
        """The last reload, whole."""
        self.push_screen(Reloads(self.view), self.closed)

    def closed(self, _: object = None) -> None:
        """A screen drawn from the state view closed: the dashboard under it (not drawn
        while it was on top) is drawn from the last view."""
        if self.view is not None:
            self.redraw_dashboard()

    def redraw_dashboard(self) -> None:
        """Draw the dashboard from the last view (the app's)."""

    def show_live(self, view: StateView) -> None:
        """Draw ``view`` on the detail or the last reload, if one is on top."""
        top = self.screen_stack[-1]
        if isinstance(top, Live):
            top.show(view)
