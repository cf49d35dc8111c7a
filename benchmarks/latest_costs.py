"""What ``slow_client: conflate`` keeps for the clients behind (runtime/catchup.Latest)
and a conflating route hold, against a hostile upstream and many clients reading
again: what a message or a part of a catch-up costs does not grow with the number of
keys kept. Each cost is the best of three runs, compared within the run.

    .venv/bin/python benchmarks/latest_costs.py      # about 20 s

(Speed belongs here, not in the test suite: tests/unit/test_catchup_store.py checks
what these do, at small sizes, without a clock.)"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

from veylor.config.latestspec import ConflateSpec
from veylor.message import NOT_JSON, Message
from veylor.runtime.catchup import Latest
from veylor.runtime.conflate import Conflater
from veylor.runtime.stats import RouteStats


def keys(prefix: str, n: int) -> list[tuple[str, tuple[type, str]]]:
    return [("feed", (str, f"{prefix}{i}")) for i in range(n)]


def a_new_key_beyond_max_keys_costs_the_same_however_many_are_kept() -> tuple[bool, str]:
    """A hostile upstream sends a new key every message beyond max_keys: the least
    recently updated goes each time. It was found as a dict's first entry, which walks
    past every slot emptied since the dict was last resized: 100,000 keys cost 70 us a
    message (a pass of 100 held the loop 57 ms), a million 400 us (254 ms)."""
    per_message = {}
    fresh = keys("N", 100_000)
    for kept in (1_000, 200_000):
        costs = []
        for _ in range(3):
            latest = Latest()
            latest.take(keys("K", kept), [b"x"] * kept, 1, kept, 2**40)
            started = time.perf_counter()
            for i in range(0, len(fresh), 100):
                latest.take(fresh[i : i + 100], [b"y"] * 100, kept + 1 + i, kept, 2**40)
            costs.append((time.perf_counter() - started) / len(fresh))
            assert len(latest.frames) == kept and latest.evicted == len(fresh)
            assert list(latest.frames)[-1] == fresh[-1]
        per_message[kept] = min(costs)
    shown = {kept: f"{cost * 1e6:.2f} us" for kept, cost in per_message.items()}
    return per_message[200_000] < 5 * per_message[1_000], str(shown)  # (0.8-1.6 times; 17-56 times before)


def a_catch_up_in_parts_costs_what_it_gets_not_what_is_kept() -> tuple[bool, str]:
    """20,000 keys of 1 KB behind, parts of 64 KiB: each part read every key newer than
    where the client was, from the newest end, before taking the 55 oldest (10,000 keys:
    0.3 ms a part, 154 parts, 21-72 ms for one client: 21 s of the event loop or more
    for a thousand reading again; twice the keys, four times that). Now its parts cost
    what reading every key once does."""
    n = 20_000
    latest = Latest()
    latest.take(keys("K", n), [b"%05d" % i + b"x" * 995 for i in range(n)], 1, n, 2**40)
    # (updates after: the kept order is the order of the latest update, with gaps in the numbers)
    latest.take(keys("K", 10), [b"%05d" % i + b"z" * 995 for i in range(10)], n + 1, n, 2**40)
    whole, costs = [], []
    for _ in range(3):
        started = time.perf_counter()
        everything, rest = latest.since(1, 2**40)  # (in one part: what reading each key once costs)
        whole.append(time.perf_counter() - started)
        assert len(everything) == n and rest is None
        got: list[bytes] = []
        first: int | None = 1
        parts = 0
        started = time.perf_counter()
        while first is not None:
            frames, first = latest.since(first, 64 * 1024)
            assert sum(map(len, frames)) <= 64 * 1024 or len(frames) == 1
            got.extend(frames)
            parts += 1
        costs.append(time.perf_counter() - started)
        assert got == [frame for _, frame in latest.frames.values()]  # every key once, oldest update first
        assert got[-1] == b"00009" + b"z" * 995 and parts == 308
    assert latest.since(n + 5, 64 * 1024) == ([b"%05d" % i + b"z" * 995 for i in range(4, 10)], None)
    assert latest.since(n + 11, 64 * 1024) == ([], None)
    took, once = min(costs), min(whole)
    shown = f"{took * 1000:.1f} ms for one client's catch-up, {once * 1000:.1f} ms for every key at once"
    return took < 5 * once, shown  # (1.2 times; 52 times before)


def a_conflating_route_costs_the_same_per_new_key_however_many_it_holds() -> tuple[bool, str]:
    """The same walk in a conflating route (conflate.max_keys): a hostile upstream's new
    key each message beyond what it holds sent the least recently updated, found as its
    dict's first entry (10,000 held: 9 us a message, 100,000: 36 us)."""
    sent: list[bytes] = []
    per_message = {}
    fresh = [Message(b'{"s":"N%d"}' % i, True) for i in range(50_000)]
    for m in fresh:
        assert m.json is not NOT_JSON  # (parsed once, outside what is measured)
    for held in (1_000, 200_000):
        costs = []
        for _ in range(3):
            conflater = Conflater(ConflateSpec(by="s", interval=3600, max_keys=held), RouteStats())
            conflater.deliver = lambda groups, data, is_text: sent.append(data)
            for i in range(held):
                conflater.match(Message(b'{"s":"K%d"}' % i, True))
            sent.clear()
            started = time.perf_counter()
            for m in fresh:
                conflater.match(m)
                if conflater.over:  # (what the event loop does after each message's dispatch)
                    conflater.trim()
            costs.append((time.perf_counter() - started) / len(fresh))
            assert len(sent) == len(fresh) and len(conflater.held) == held
            conflater.stop()
        per_message[held] = min(costs)
    shown = {held: f"{cost * 1e6:.2f} us" for held, cost in per_message.items()}
    return per_message[200_000] < 5 * per_message[1_000], str(shown)  # (about 1 time; 9 before)


def a_client_coming_back_from_far_costs_what_it_gets_not_what_is_kept() -> tuple[bool, str]:
    """100,000 kept, ?since=0, a 64 KiB client_buffer: the history was read by index from
    the oldest end of a deque (150-190 ms of the event loop per client) before the newest
    that fit were picked; now from the newest end, only what fits."""
    from types import SimpleNamespace

    from veylor.config.latestspec import ResumeSpec
    from veylor.latest import History
    from veylor.runtime.keeper import Resumable, _resumed

    history = History(ResumeSpec(by="n", size=100_000))
    for n in range(100_000):
        history.keep(n, Message(b'{"n":%d,"p":"%s"}' % (n, b"x" * 50), True))
    stats = SimpleNamespace(resumes_ok=0, resumes_lost=0)
    ep = SimpleNamespace(
        histories=(Resumable(history, stats, b"LOST", b"LOST"),),
        spec=SimpleNamespace(client_buffer=64 * 2**10),
    )
    costs = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(10):
            _resumed(ep, 0.0)  # type: ignore[arg-type]
        costs.append((time.perf_counter() - started) / 10)
    took = min(costs)
    return took < 0.005, f"{took * 1000:.2f} ms per client coming back (150-190 ms before)"


async def run_in_loop(check: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    return check()


def main() -> int:
    failed = False
    for check in (
        a_new_key_beyond_max_keys_costs_the_same_however_many_are_kept,
        a_catch_up_in_parts_costs_what_it_gets_not_what_is_kept,
        a_conflating_route_costs_the_same_per_new_key_however_many_it_holds,
        a_client_coming_back_from_far_costs_what_it_gets_not_what_is_kept,
    ):
        ok, shown = asyncio.run(run_in_loop(check))  # (a conflater arms its timer on the running loop)
        failed |= not ok
        print(f"- {'PASS' if ok else 'FAIL'}: {check.__name__.replace('_', ' ')}: {shown}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
