"""What ``slow_client: conflate`` keeps for the clients behind (runtime/catchup.Latest)
against a hostile upstream and many clients reading again: what a message or a part
of a catch-up costs does not grow with the number of keys kept."""

from __future__ import annotations

import time

from veylor.runtime.catchup import Latest


def keys(prefix: str, n: int) -> list[tuple[str, tuple[type, str]]]:
    return [("feed", (str, f"{prefix}{i}")) for i in range(n)]


def test_a_new_key_beyond_max_keys_costs_the_same_however_many_are_kept():
    """A hostile upstream sends a new key every message beyond max_keys: the least
    recently updated goes each time. It was found as a dict's first entry, which walks
    past every slot emptied since the dict was last resized: 100,000 keys cost 70 us a
    message (a pass of 100 held the loop 57 ms), a million 400 us (254 ms)."""
    per_message = {}
    for kept in (1_000, 200_000):
        latest = Latest()
        latest.take(keys("K", kept), [b"x"] * kept, 1, kept, 2**40)
        fresh = keys("N", 100_000)
        started = time.perf_counter()
        for i in range(0, len(fresh), 100):
            latest.take(fresh[i : i + 100], [b"y"] * 100, kept + 1 + i, kept, 2**40)
        per_message[kept] = (time.perf_counter() - started) / len(fresh)
        assert len(latest.frames) == kept and latest.evicted == len(fresh)
        assert list(latest.frames)[-1] == fresh[-1]
    shown = {kept: f"{cost * 1e6:.2f} us" for kept, cost in per_message.items()}
    assert per_message[200_000] < 5 * per_message[1_000], shown  # (0.8-1.6 times; 56 times before)
