"""What ``slow_client: conflate`` keeps for the clients behind (runtime/catchup.Latest)
and what a conflating route holds, beyond their bounds and caught up in parts: the
oldest go first, each key once, in the order of its latest update. (What these cost
as the keys grow, a hostile upstream's case, is measured in
benchmarks/latest_costs.py: speed belongs there, not here.)"""

from __future__ import annotations

import asyncio

from veylor.config.latestspec import ConflateSpec
from veylor.message import Message
from veylor.runtime.catchup import Latest
from veylor.runtime.conflate import Conflater
from veylor.runtime.stats import RouteStats


def keys(prefix: str, n: int) -> list[tuple[str, tuple[type, str]]]:
    return [("feed", (str, f"{prefix}{i}")) for i in range(n)]


def test_a_new_key_beyond_max_keys_evicts_the_least_recently_updated():
    kept, fresh = 100, keys("N", 1_000)
    latest = Latest()
    latest.take(keys("K", kept), [b"x"] * kept, 1, kept, 2**40)
    latest.take(keys("K", 1), [b"again"], kept + 1, kept, 2**40)  # K0: updated, now the newest
    for i in range(0, len(fresh), 100):
        latest.take(fresh[i : i + 100], [b"y"] * 100, kept + 2 + i, kept, 2**40)
    assert len(latest.frames) == kept and list(latest.frames) == fresh[-kept:]
    assert latest.evicted == kept + 1 + len(fresh) - kept  # (the newest number forgotten)


def test_a_catch_up_in_parts_gives_each_key_once_in_the_order_of_its_latest_update():
    n = 2_000
    latest = Latest()
    latest.take(keys("K", n), [b"%05d" % i + b"x" * 995 for i in range(n)], 1, n, 2**40)
    latest.take(keys("K", 10), [b"%05d" % i + b"z" * 995 for i in range(10)], n + 1, n, 2**40)
    everything, rest = latest.since(1, 2**40)
    assert len(everything) == n and rest is None
    got: list[bytes] = []
    first: int | None = 1
    parts = 0
    while first is not None:
        frames, first = latest.since(first, 64 * 1024)
        assert sum(map(len, frames)) <= 64 * 1024 or len(frames) == 1
        got.extend(frames)
        parts += 1
    assert got == everything == [frame for _, frame in latest.frames.values()]
    assert got[-1] == b"00009" + b"z" * 995 and parts == 31
    assert latest.since(n + 5, 64 * 1024) == ([b"%05d" % i + b"z" * 995 for i in range(4, 10)], None)
    assert latest.since(n + 11, 64 * 1024) == ([], None)


async def test_a_conflating_route_beyond_max_keys_sends_the_least_recently_updated_at_once():
    sent: list[bytes] = []
    held = 100
    conflater = Conflater(ConflateSpec(by="s", interval=3600, max_keys=held), RouteStats())
    conflater.deliver = lambda groups, data, is_text: sent.append(data)
    for i in range(held):
        conflater.match(Message(b'{"s":"K%d"}' % i, True))
    conflater.match(Message(b'{"s":"K0","v":2}', True))  # K0 updated: now the newest held
    fresh = [Message(b'{"s":"N%d"}' % i, True) for i in range(500)]
    for m in fresh:
        conflater.match(m)
    await asyncio.sleep(0)  # (what is over the bound goes once the message's dispatch is over)
    assert len(conflater.held) == held
    want = (
        [b'{"s":"K%d"}' % i for i in range(1, held)] + [b'{"s":"K0","v":2}'] + [m.data for m in fresh[:400]]
    )
    assert sent == want  # each once, the least recently updated first
    conflater.stop()
