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
