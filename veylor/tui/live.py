"""The screens the dashboard opens over itself that stay live: a row's detail
(:mod:`veylor.tui.detail`, ``enter``) and the last reload (:mod:`veylor.tui.reloads`,
``l``). Each is drawn from the state view as lines of Rich :class:`~rich.text.Text`
(never markup), and again from each view the app reads while it is on top, so what it
says is as fresh as the tables under it. Their look is in ``live.tcss``.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..observe.view import StateView
from ..printable import printable
from .text import title

LABEL = 20  # columns of a field's label
UNREAD = "no state read yet"  # what a screen says before the app has read a view
# A screen is drawn again twice a second, on the loop the relay shares in-process: what it
# shows is bounded whatever the view holds (a reload of 10,000 changes took 4 s a drawing,
# a 1 MB error 3 s), the rest counted.
LISTED = 100  # items of one list shown (changes, steps, problems, routes), as a table's rows
LONGEST = 1000  # characters of one text from outside shown (an error, a URL, a filter)


def field(label: str, value: str | Text, style: str = "") -> Text:
    """One line: ``label``, then ``value`` (words of ours, or text from outside made
    printable already; a plain string in ``style``)."""
    line = Text(f"{label:<{LABEL - 1}} ", style="bold")
    line.append_text(value if isinstance(value, Text) else Text(value, style))
    return line


def section(label: str) -> Text:
    """A blank line, then a section's heading."""
    return Text.assemble("\n", (label, "bold underline"))


def count(n: int) -> str:
    """A number with thousands separators: ``1,234,567``."""
    return f"{n:,}"


def outside(value: object) -> str:
    """Text from outside (a name, an error, a URL, a filter) as shown: printable, and at
    most ``LONGEST`` characters of it (how many more there are is said)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= LONGEST:
        return printable(text)
    return printable(text[:LONGEST]) + f"… ({len(text) - LONGEST:,} more characters)"


def more(total: int, noun: str) -> list[Text]:
    """The line that says how many of ``total`` items a list left out (none: no line),
    after its first ``LISTED``."""
    if total <= LISTED:
        return []
    left = total - LISTED
    return [Text(f"  … {left:,} more {noun}{'s' * (left != 1)}", "italic")]


class Live(ModalScreen[None]):
    """A modal screen drawn from the state view, and again from each view the app reads
    while it is on top (the app calls :meth:`show`); it scrolls when long. Escape,
    enter and q close it."""

    CSS_PATH = "live.tcss"
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("escape,enter,q", "dismiss", "Close")
    ]

    def __init__(self, view: StateView | None) -> None:
        super().__init__()
        self.latest = view
        self.shown: Text | None = None  # what the body shows now

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="live"):
            yield Static(UNREAD, id="live-body")

    def on_mount(self) -> None:
        if self.latest is not None:
            self.show(self.latest)

    def show(self, view: StateView) -> None:
        """Draw ``view`` (before the screen is composed: when it is mounted)."""
        self.latest = view
        body = self.query("#live-body")
        if not body:
            return
        name, lines = self.describe(view)
        text = Text("\n").join(lines)
        if text == self.shown:
            return  # (unchanged: no layout, no redraw, on the loop the relay shares)
        self.shown = text
        self.query_one(VerticalScroll).border_title = title(name)
        body.first(Static).update(text)

    def describe(self, view: StateView) -> tuple[str, list[Text]]:
        """The title and the lines for ``view``."""
        raise NotImplementedError
