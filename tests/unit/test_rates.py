"""The TUI's rates (veylor.tui.rates) from state views, pure: a feed that dies reads 0
within 2 s (the smoothing kept showing 8/s five seconds after a feed died: issue 25,
point 4), and a steady feed is smooth, not flickering."""

from __future__ import annotations

import pytest

pytest.importorskip("textual")

from veylor.tui.rates import Rates


def view(at: float, messages: int, pid: int = 1) -> dict:
    source = {"messages_in": messages, "bytes_in": messages * 100}
    return {"pid": pid, "time": at, "sources": {"feed": source}, "endpoints": {}, "routes": {}, "edges": []}


def seen(rates: Rates, views: list[dict]) -> list[float | None]:
    """The feed's rate after each view."""
    out = []
    for v in views:
        rates.update(v)
        out.append(rates.get("source", "feed"))
    return out


def test_a_dead_feed_reads_0_within_2_s():
    rates = Rates()
    t, n = 1000.0, 0
    for _ in range(20):  # 100 msg/s for 10 s, a view every 0.5 s
        rates.update(view(t, n))
        t, n = t + 0.5, n + 50
    assert rates.get("source", "feed") == pytest.approx(100, rel=0.05)
    died = t
    while rates.get("source", "feed"):
        rates.update(view(t, n))
        t += 0.5
        assert t - died <= 2.5, "still a rate 2 s after the feed died"


def test_a_steady_feed_is_smooth():
    """Views that land unevenly (a refresh late, the next one early) do not make a steady
    feed's rate jump: it is smoothed, and never reads 0 while messages come."""
    views, t, n = [], 1000.0, 0
    for i in range(40):
        views.append(view(t, n))
        step = 0.3 if i % 2 else 0.7
        t, n = t + step, n + int(100 * step)
    steady = [r for r in seen(Rates(), views)[10:] if r is not None]
    assert min(steady) > 80 and max(steady) < 120


def test_a_slow_feed_is_not_called_dead_between_two_messages():
    """A message every second: its rate stays about 1/s, not 0 between messages."""
    views = [view(1000.0 + i * 0.5, i // 2) for i in range(40)]
    rates = seen(Rates(), views)
    assert all(r for r in rates[10:]), rates
