"""The log pane (in-process only): what Veylor logs while the TUI owns the terminal.

While the TUI runs, nothing else may write to the terminal (a handler made earlier
draws over the screen): :func:`veylor.tui.run.in_process` puts one bounded
:class:`LogBuffer` in place of the root logger's handlers, and the pane drains it at
each refresh.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator

from rich.text import Text
from textual.widgets import RichLog

from ..printable import printable

LOG_LINES = 500  # lines the log pane keeps


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


class LogPane(RichLog):
    """The last ``LOG_LINES`` lines logged, warnings yellow and errors red."""

    def __init__(self, buffer: LogBuffer, *, id: str) -> None:
        super().__init__(id=id, max_lines=LOG_LINES, markup=False, wrap=False)
        self.buffer = buffer

    def drain(self) -> Iterator[None]:
        """Lines logged since the last refresh into the pane (the last ``LOG_LINES`` of
        them: the pane keeps no more), in pieces."""
        lines = self.buffer.lines
        while len(lines) > LOG_LINES:
            lines.popleft()
        for i in range(len(lines)):
            level, line = lines.popleft()
            style = "red" if level >= logging.ERROR else "yellow" if level >= logging.WARNING else ""
            self.write(Text(line, style=style))
            if i % 50 == 49:
                yield
