"""The selected edge's last minute of messages per second, under the graph: a label
(which edge, over how long) with its scale (the peak, at the top of the bars; the
bottom is 0), then the bars."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from ..printable import printable
from .rates import human_rate

REFRESH = 0.5  # seconds between two points (the app's refresh)


class Spark(Static):
    """A sparkline two lines high under a label, drawn as one text (Textual's Sparkline
    blends a colour per bar: a few milliseconds a frame, on the loop the relay
    shares)."""

    BARS = " ▁▂▃▄▅▆▇█"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data: list[float] = []
        self.label = ""

    def show(self, data: list[float], label: str = "") -> None:
        self.data, self.label = data, label
        width = self.content_size.width or 80
        points = data[-width:]
        top = max(points, default=0.0)
        levels = [round(p / top * 16) if top > 0 else 0 for p in points]
        bars = self.BARS
        upper = "".join(bars[max(0, level - 8)] for level in levels)
        lower = "".join(bars[min(8, level)] if level else "▁" for level in levels)
        head = Text(no_wrap=True, overflow="ellipsis")
        if label:
            head.append(printable(label), "bold")
            head.append(f" · msgs/s over {max(0, len(points) - 1) * REFRESH:.0f}s · ", "dim")
            head.append(f"top {human_rate(top)}, bottom 0", "dim")
        else:
            head.append("select an edge in the graph for its messages per second", "dim")
        text = Text(no_wrap=True)
        text.append_text(head)
        text.append("\n")
        text.append(f"{upper.rjust(width)}\n{lower.rjust(width)}", "green")
        self.update(text, layout=False)

    def on_resize(self) -> None:
        self.show(self.data, self.label)
