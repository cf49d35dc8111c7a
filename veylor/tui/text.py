"""How the dashboard words what the state view says: a source's state as a mark, a word
and a colour, a duration, a moment, a reload's step and problem, a border title. Plain
functions of plain data, shared by the panes, the app and the screens over it."""

from __future__ import annotations

import time

from textual.content import Content

from ..observe.view import ProblemView, SourceView, StepView
from ..printable import printable

STATE = {  # a source's state: mark, word and colour
    "connected": ("●", "connected", "green"),
    "connecting": ("◐", "connecting", "yellow"),
    "backoff": ("○", "backing off", "yellow"),
    "reconnecting": ("◐", "reconnecting", "yellow"),  # NATS: the client library fails over
    "subscribing": ("◐", "subscribing", "yellow"),  # NATS JetStream: connected, the stream not there yet
    "stalled": ("○", "stalled", "red"),  # NATS: the connection stopped reading; made again
    "stopped": ("✕", "stopped", "bright_black"),
    "failed": ("✕", "failed", "red"),
}


def state(source: SourceView) -> tuple[str, str, str]:
    """A source's state as (mark, word, colour): a source stopped after failing is failed."""
    name = source.get("state", "stopped")
    if name == "stopped" and source.get("failures"):
        name = "failed"
    return STATE.get(name, ("?", name, ""))


def title(text: str) -> Content:
    """A border title shown as it is: never markup, no control character."""
    return Content(printable(text))


def step(entry: StepView) -> str:
    """One step of a reload's plan: its operation and the component's name."""
    return f"{entry['op']} {entry['name']}".strip()


def problem(entry: ProblemView) -> str:
    """One problem of a refused reload, where it is first: ``FILE:LINE PATH: MESSAGE``
    (without a line or a key path where it has none: ``FILE:6: YAML syntax error``)."""
    where = f"{entry['file']}:{entry['line']}" if entry["line"] else str(entry["file"])
    key = f" {entry['path']}" if entry["path"] else ""
    return f"{where}{key}: {entry['message']}"


def duration(seconds: float) -> str:
    """``45s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def clock(at: float, now: float) -> str:
    """A moment (wall clock) as local clock time, with its date a day or more from ``now``."""
    return time.strftime("%H:%M:%S" if abs(now - at) < 86400 else "%Y-%m-%d %H:%M:%S", time.localtime(at))


def when(at: float, now: float) -> str:
    """A moment as local clock time and how long before (or after) ``now``, both wall
    clock: ``14:03:12 (3m12s ago)``, ``14:06:36 (in 12s)``."""
    delta = now - at
    return (
        f"{clock(at, now)} ({duration(delta)} ago)"
        if delta >= 0
        else f"{clock(at, now)} (in {duration(-delta)})"
    )
