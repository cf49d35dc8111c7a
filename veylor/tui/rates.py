"""Rates from two snapshots of the state view, smoothed: pure, no clock of its own.

The hot path keeps totals only; a reader takes the difference of two snapshots and
divides by the time between them. Rates are smoothed exponentially over about
``HORIZON`` seconds, so that a 2 Hz refresh does not flicker, and each edge keeps the
last minute of its rate for a sparkline.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from ..observe.view import StateView

HORIZON = 3.0  # seconds over which a rate is smoothed
# A counter that has not moved for this long reads 0 at once, not what the smoothing
# remembers (a dead feed's rate fell over HORIZON seconds: still 8/s five seconds later).
STILL_AFTER = 1.5
HISTORY = 120  # points kept per edge (a minute at 2 Hz)


class Rates:
    """Smoothed per-second rates of the counters the TUI shows, by key."""

    def __init__(self) -> None:
        self.previous: StateView | None = None
        self.rates: dict[tuple[str, ...], float] = {}
        self.history: dict[tuple[str, ...], deque[float]] = {}
        self.moved_at: dict[tuple[str, ...], float] = {}  # when each counter last moved (view time)

    def update(self, view: StateView) -> None:
        """Take a new snapshot; rates move towards what happened since the last one."""
        for _ in self.updating(view):
            pass

    def updating(self, view: StateView, chunk: int = 500) -> Iterator[None]:
        """:meth:`update`, yielding every ``chunk`` counters (thousands of components:
        the event loop it shares with the relay runs between two chunks)."""
        before, self.previous = self.previous, view
        if before is None:
            return
        if view.get("pid") != before.get("pid"):
            self.rates.clear()  # a restarted Veylor: its counters started again
            return
        dt = view["time"] - before["time"]
        if dt <= 0:  # the same snapshot again: nothing new to learn
            self.previous = before
            return
        weight = 1 - math.exp(-dt / HORIZON)
        at = view["time"]
        moved_at = self.moved_at
        for i, (key, now, then) in enumerate(_pairs(before, view), 1):
            if i % chunk == 0:
                yield
            rate = max(0.0, (now - then) / dt)
            if rate:
                moved_at[key] = at
            old = self.rates.get(key)
            if old is None:
                self.rates[key] = rate
            elif not rate and at - moved_at.get(key, before["time"]) >= STILL_AFTER:
                self.rates[key] = 0.0  # still for a while: none now, whatever came before
            else:
                self.rates[key] = old + weight * (rate - old)
            if key[0] == "edge":
                self.history.setdefault(key, deque(maxlen=HISTORY)).append(self.rates[key])

    def get(self, *key: str) -> float | None:
        return self.rates.get(key)


def _pairs(a: StateView, b: StateView) -> list[tuple[tuple[str, ...], float, float]]:
    out: list[tuple[tuple[str, ...], float, float]] = []
    for name, s in b["sources"].items():
        old = a["sources"].get(name)
        if old is not None:
            out.append((("source", name), s["messages_in"], old["messages_in"]))
            out.append((("source_bytes", name), s["bytes_in"], old["bytes_in"]))
    for name, e in b["endpoints"].items():
        was = a["endpoints"].get(name)
        if was is not None:
            out.append((("endpoint", name), e["messages_out"], was["messages_out"]))
            out.append((("drops", name), drops(e), drops(was)))
    for name, r in b["routes"].items():
        before = a["routes"].get(name)
        if before is not None:
            out.append((("filtered", name), r.get("filtered", 0), before.get("filtered", 0)))  # (optional)
    edges = {(x["source"], x["route"], x["endpoint"]): x["messages"] for x in a["edges"]}
    for x in b["edges"]:
        key = (x["source"], x["route"], x["endpoint"])
        if key in edges:
            out.append((("edge", *key), x["messages"], edges[key]))
    return out


def human_rate(rate: float | None, unit: str = "") -> str:
    """``1.2k/s``, ``35/s``, ``3.1MB/s`` (``unit="B"``), ``-`` (not known yet)."""
    if rate is None:
        return "-"
    for prefix, size in (("M", 1e6), ("k", 1e3)):
        if rate >= size:
            return f"{rate / size:.1f}{prefix}{unit}/s"
    return f"{rate:.0f}{unit}/s"


def drops(endpoint: Mapping[str, Any]) -> int:
    """Deliveries an endpoint did not make, for every reason (its slow clients, its
    framing): ``veylor_endpoint_undelivered_total``, as :func:`veylor.observe.view.undelivered`."""
    get = endpoint.get  # (no generator: called for every endpoint at each refresh)
    return (
        int(get("dropped", 0))
        + int(get("lost_slow", 0))
        + int(get("unframeable", 0))
        + int(get("superseded", 0))
    )
