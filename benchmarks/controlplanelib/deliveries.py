"""The control client of the control-plane benchmark, and what its deliveries say:
gaps between them, latency, and lost, duplicated or reordered sequence numbers."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from typing import Any

from common import seq_of, ts_of
from harness.report import percentile
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from controlplanelib.results import TARGET_GAP_MS


class ControlClient:
    """One WebSocket client of the control endpoint that stamps every delivery."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.times: list[float] = []  # time.monotonic() at receipt
        self.seqs: list[int] = []
        self.latency_ms: list[float] = []  # receipt minus send time (wall clocks, same machine)
        self.connected = asyncio.Event()
        self.first = asyncio.Event()
        self.closed: str | None = None  # why the connection ended, if it did before we stopped

    async def run(self) -> None:
        try:
            async with connect(
                self.url,
                compression=None,
                max_size=2**20,
                ping_interval=None,  # Veylor pings its clients; the client answers
                open_timeout=10,
                close_timeout=2,
            ) as ws:
                self.connected.set()
                async for msg in ws:
                    t = time.monotonic()
                    now_ns = time.time_ns()
                    data = msg.encode() if isinstance(msg, str) else msg
                    self.times.append(t)
                    self.seqs.append(seq_of(data))
                    self.latency_ms.append((now_ns - ts_of(data)) / 1e6)
                    self.first.set()
                self.closed = f"closed by Veylor: {ws.close_code} {ws.close_reason!r}"
        except (OSError, ConnectionClosed, TimeoutError, ValueError) as exc:
            self.closed = f"{type(exc).__name__}: {exc}"


def gaps_in(times: Sequence[float], lo: float, hi: float) -> list[float]:
    """Gaps (s) between consecutive deliveries overlapping [lo, hi]: from the last delivery
    before ``lo`` to the first after ``hi``; a delivery still awaited at ``hi`` ends at ``hi``."""
    import bisect

    a = max(0, bisect.bisect_left(times, lo) - 1)
    b = bisect.bisect_right(times, hi)
    window = list(times[a : b + 1])
    if b >= len(times):  # nothing after hi: an open gap counts up to hi
        window.append(hi)
    return [y - x for x, y in itertools.pairwise(window)]


def delivery_stats(client: ControlClient, lo: float, hi: float) -> dict[str, Any]:
    """Gap and latency statistics of the control client's deliveries in [lo, hi]."""
    import bisect

    gaps = gaps_in(client.times, lo, hi)
    a, b = bisect.bisect_left(client.times, lo), bisect.bisect_right(client.times, hi)
    latency = client.latency_ms[a:b]
    worst_at = float("nan")
    if gaps:
        k = max(range(len(gaps)), key=gaps.__getitem__)
        start = max(0, bisect.bisect_left(client.times, lo) - 1)
        worst_at = client.times[start + k] - lo if start + k < len(client.times) else float("nan")
    return {
        "seconds": hi - lo,
        "messages": b - a,
        "msgs_per_s": (b - a) / max(hi - lo, 1e-9),
        "max_gap_ms": max(gaps, default=float("nan")) * 1000,
        "max_gap_starts_at_s": worst_at,
        "p99_gap_ms": percentile(gaps, 99) * 1000,
        "p50_gap_ms": percentile(gaps, 50) * 1000,
        "gaps_over_20ms": sum(1 for g in gaps if g > TARGET_GAP_MS / 1000),
        "latency_p50_ms": percentile(latency, 50),
        "latency_p99_ms": percentile(latency, 99),
        "latency_max_ms": max(latency, default=float("nan")),
    }


def sequence_stats(seqs: Sequence[int]) -> dict[str, int]:
    """Lost (never received), duplicated and reordered sequence numbers, first to last received."""
    if not seqs:
        return {"received": 0, "first": 0, "last": 0, "lost": 0, "duplicates": 0, "reorders": 0}
    unique = set(seqs)
    reorders = sum(1 for x, y in itertools.pairwise(seqs) if y < x)
    lo, hi = min(unique), max(unique)
    return {
        "received": len(seqs),
        "first": lo,
        "last": hi,
        "lost": (hi - lo + 1) - len(unique),
        "duplicates": len(seqs) - len(unique),
        "reorders": reorders,
    }
