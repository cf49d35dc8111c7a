"""The tap pane (``m``): the last messages that passed the selected edge's route, newest
first, as Veylor escaped them (see :mod:`veylor.runtime.tap`); hidden while off."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..observe.view import StateView
from ..printable import printable
from .text import title


class TapPane(Static):
    """What the tap of the selected edge's route caught (the state view's ``tap``)."""

    def show(self, view: StateView, tapping: bool, edge: tuple[str, ...] | None) -> None:
        """Show or hide the pane; while ``tapping``, what the tap of ``edge``'s route
        caught in ``view``."""
        if self.display != tapping:
            self.display = tapping
        if not tapping:
            return
        tap = view.get("tap")
        if not edge:
            self.border_title, body = title("tap"), Text("select an edge in the graph")
        elif tap is None:
            self.border_title, body = title(f"tap: {edge[1]}"), Text("starting…")
        elif tap.get("error"):
            self.border_title, body = title(f"tap: {tap['route']}"), Text(printable(tap["error"]), "red")
        else:
            self.border_title = title(
                f"tap: {tap['route']} (newest first; {tap['seen']:,} passed while tapped)"
            )
            lines = "\n".join(printable(line) for line in tap["messages"])  # (escaped already by Veylor)
            body = Text(lines or "no message yet", no_wrap=True, overflow="ellipsis")
        self.update(body, layout=False)

    def starting(self) -> None:
        """A tap was asked for (another route, or the tap just turned on): nothing yet."""
        self.update(Text("starting…"))
