"""The garbage collector and the event loop: what lives long is kept out of its walks."""

from __future__ import annotations

import gc


def settle_heap(collect: bool = False) -> None:
    """Move what exists now (modules, the configuration just loaded, the connections of
    the moment) out of the garbage collector's sight: a full collection walks every
    tracked object with the event loop paused, and a large configuration is hundreds
    of thousands of them. Frozen objects are still freed by reference counting, which
    is how a replaced configuration and a closed connection go (measured: a client's
    connection leaves no cycle behind); only cyclic garbage among them would stay."""
    if collect:
        gc.collect()
    gc.freeze()


YOUNG = 50_000  # allocations (net of frees) between two collections of the youngest generation


def tune_collector() -> None:
    """Collect the youngest generation every ``YOUNG`` net allocations instead of 700.

    The relay allocates almost nothing the collector tracks; a reader of the state view
    (the in-process TUI twice a second, /graph, /metrics) allocates thousands of
    short-lived containers. Collected every 700, many are alive at that moment and are
    promoted, then die old, and the oldest generation's full collections pause the loop
    for as long as the heap is large: with 1,000 sources, endpoints and routes and the
    TUI on, 150 ms every 2 s (benchmarks/tui_lag.py --why). Every 50,000, reference
    counting has freed them before a collection sees them: no full collection in 15 s.
    Cyclic garbage waits for at most ``YOUNG`` allocations."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)
