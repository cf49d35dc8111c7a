"""The selected edge's last minute of messages per second, under the graph."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static


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
