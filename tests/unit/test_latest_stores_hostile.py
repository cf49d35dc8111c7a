"""Latest-value delivery (issue 26) against a hostile upstream and many clients coming
back: an infinite number does not end a route's history, a huge key is not held beside
its payload uncounted, and a client coming back from far costs what it gets, not what
the route keeps."""

from __future__ import annotations

import json
import tracemalloc
from types import SimpleNamespace

from veylor.config.latestspec import ResumeSpec, SnapshotSpec
from veylor.latest import History, kept_for, key_of
from veylor.message import Message
from veylor.runtime.keeper import Resumable, _resumed


def msg(text: str) -> Message:
    return Message(text.encode(), True)


def test_an_infinite_number_is_not_kept_and_does_not_stop_the_history():
    """Python's json reads Infinity and 1e999 as inf: kept, no later number was greater,
    and the route kept nothing more until a reload (a client's since cannot even be
    infinite: 400)."""
    history = History(ResumeSpec(by="seq"))
    for text in ("1", "Infinity", "1e999", "-Infinity", "2", "NaN", "3"):
        history.keep(0, msg(f'{{"seq": {text}}}'))
    assert list(history.values) == [1, 2, 3]
    assert history.unkept == 4 and history.unordered == 0
    entries, lost = history.since(1)
    assert [json.loads(e.data)["seq"] for e in entries] == [2, 3] and not lost


def test_huge_keys_are_held_by_their_digest_within_max_bytes():
    """A 1 MB key with one character outside the BMP is a 4 MB str: held as the dict's
    key beside its payload, 8 MiB of kept payloads held 36 MB (5 times)."""
    kept = kept_for(SnapshotSpec(by="s", max_bytes=8 * 2**20))
    tracemalloc.start()
    try:
        for i in range(20):
            kept.keep(i, msg(f'{{"s": "{"a" * 2**20}{i}\\ud83d\\ude00"}}'))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept.bytes <= 8 * 2**20 and len(kept) == 7
    assert held < 1.2 * kept.bytes  # (36.7 MB before)
    # still one key per value: the same long value is the same key, another is not
    long = "b" * 1000
    assert key_of(long) == key_of("b" * 1000) != key_of(long + "c")
    assert key_of(long) != key_of(long.encode().hex()) and key_of("\ud800" * 300) is not None
    assert key_of("short") == (str, "short")


def test_newest_since_walks_from_the_newest_and_says_where_it_was_cut():
    history = History(ResumeSpec(by="seq"))
    for n in range(1, 11):
        history.keep(100 + n, msg(f'{{"seq": {n}}}'))  # 12 bytes each
    entries, lost, cut = history.newest_since(4, 30)
    assert [json.loads(e.data)["seq"] for e in entries] == [9, 10] and not lost and cut == 108
    assert history.newest_since(4, None) == (list(history.entries)[4:], False, None)
    assert history.newest_since(10, 5) == ([], False, None)
    entries, lost, cut = history.newest_since(9, 5)  # the newest alone does not fit
    assert entries == [] and cut == 110


def resumable(size: int, pad: int, seq0: int = 0) -> History:
    history = History(ResumeSpec(by="n", size=size, max_bytes=2**30))
    filler = "x" * pad
    for n in range(size):
        history.keep(seq0 + 2 * n, Message(b'{"n":%d,"p":"%s"}' % (n, filler.encode()), True))
    return history


def endpoint(*histories: History, client_buffer: int) -> SimpleNamespace:
    stats = SimpleNamespace(resumes_ok=0, resumes_lost=0)
    return SimpleNamespace(
        histories=tuple(Resumable(h, stats, b"LOST", b"LOST") for h in histories),
        spec=SimpleNamespace(client_buffer=client_buffer),
    )


def test_a_client_coming_back_from_far_costs_what_it_gets_not_what_is_kept():
    """100,000 kept, ?since=0, a 64 KiB client_buffer: the deque was read by index from
    the oldest (O(n) each: 150-190 ms of the event loop per client) before the newest
    that fit were picked; a thousand clients coming back held it minutes."""
    history = resumable(100_000, 50)
    ep = endpoint(history, client_buffer=64 * 2**10)
    out, head = _resumed(ep, 0.0)  # type: ignore[arg-type]
    # (what it costs, under 1 ms against 150-190 ms: benchmarks/latest_costs.py)
    assert head == [(b"LOST", b"LOST")] and out[-1] is history.entries[-1]
    assert [json.loads(e.data)["n"] for e in out] == list(range(100_000 - len(out), 100_000))
    assert sum(len(e.data) for e in out) <= 64 * 2**10 < sum(len(e.data) for e in out) + 80


def test_two_histories_cut_by_the_buffer_give_the_newest_of_both_in_order():
    """Each history gives only its newest that fit; what is older than one's cut is
    not given from the other either (the client gets the newest, without a hole)."""
    small = resumable(1000, 10, seq0=1)  # odd seqs, 27 bytes each
    big = resumable(1000, 200, seq0=2)  # even seqs, 217 bytes each
    ep = endpoint(small, big, client_buffer=4000)
    out, head = _resumed(ep, 0.0)  # type: ignore[arg-type]
    seqs = [e.seq for e in out]
    everything = sorted([*small.entries, *big.entries], key=lambda e: e.seq)
    fit, size = [], 0
    for entry in reversed(everything):
        if size + len(entry.data) > 4000:
            break
        size += len(entry.data)
        fit.append(entry.seq)
    assert seqs == fit[::-1] and head == [(b"LOST", b"LOST")]
