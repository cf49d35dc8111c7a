"""What a route keeps for clients that join later (veylor.latest), without sockets."""

from __future__ import annotations

import json

import pytest

from veylor.config.latestspec import SnapshotSpec, snapshot_from
from veylor.latest import ByKey, LastN, kept_for, snapshot
from veylor.message import Message


def msg(text: str) -> Message:
    return Message(text.encode(), True)


def tick(s, n: int) -> Message:
    return msg(json.dumps({"s": s, "n": n}))


def payloads(entries) -> list[str]:
    return [e.data.decode() for e in entries]


def test_by_key_keeps_the_latest_per_key_in_the_order_of_their_latest_update():
    kept = kept_for(SnapshotSpec(by="s"))
    assert isinstance(kept, ByKey)
    for seq, m in enumerate([tick("A", 1), tick("B", 1), tick("A", 2), tick("C", 1)], 1):
        kept.keep(seq, m)
    assert [json.loads(p)["n"] for p in payloads(kept.entries())] == [1, 2, 1]
    assert [json.loads(p)["s"] for p in payloads(kept.entries())] == ["B", "A", "C"]
    assert len(kept) == 3 and kept.bytes == sum(len(e.data) for e in kept.entries())


@pytest.mark.parametrize(
    "text",
    ["not json", '{"t": 1}', '{"s": {"nested": 1}}', '{"s": [1, 2]}', "[1, 2]", '"s"'],
)
def test_a_message_without_a_scalar_key_is_not_kept_and_is_counted(text):
    kept = kept_for(SnapshotSpec(by="s"))
    kept.keep(1, msg(text))
    assert len(kept) == 0 and kept.unkept == 1 and kept.bytes == 0


def test_keys_of_different_json_types_are_different_keys():
    kept = kept_for(SnapshotSpec(by="s"))
    for seq, value in enumerate([1, 1.0, True, "1", None, False, 0], 1):
        kept.keep(seq, msg(json.dumps({"s": value})))
    assert len(kept) == 7


def test_a_nested_path_and_a_list_index():
    kept = kept_for(SnapshotSpec(by="data[0].sym"))
    kept.keep(1, msg('{"data": [{"sym": "X", "p": 1}]}'))
    kept.keep(2, msg('{"data": [{"sym": "X", "p": 2}]}'))
    kept.keep(3, msg('{"data": []}'))
    assert payloads(kept.entries()) == ['{"data": [{"sym": "X", "p": 2}]}'] and kept.unkept == 1


def test_max_keys_forgets_the_least_recently_updated_and_counts_it():
    kept = kept_for(SnapshotSpec(by="s", max_keys=2))
    kept.keep(1, tick("A", 1))
    kept.keep(2, tick("B", 1))
    kept.keep(3, tick("A", 2))  # A is now the most recent
    kept.keep(4, tick("C", 1))  # B goes
    assert [json.loads(p)["s"] for p in payloads(kept.entries())] == ["A", "C"]
    assert kept.evicted == 1 and kept.bytes == sum(len(e.data) for e in kept.entries())


def test_last_n_keeps_the_last_n_and_their_bytes():
    kept = kept_for(SnapshotSpec(last=3))
    assert isinstance(kept, LastN)
    for i in range(10):
        kept.keep(i, msg(f"m{i}"))
    assert payloads(kept.entries()) == ["m7", "m8", "m9"] and kept.bytes == 6


def test_a_snapshot_of_several_routes_is_in_the_order_messages_came_each_once():
    a, b = kept_for(SnapshotSpec(by="s")), kept_for(SnapshotSpec(last=10))
    m1, m2, m3 = tick("A", 1), tick("B", 1), msg("other")
    a.keep(1, m1)
    b.keep(1, m1)  # (one message, two routes: one seq)
    b.keep(2, m3)
    a.keep(3, m2)
    b.keep(3, m2)
    assert payloads(snapshot([a, b])) == [m1.data.decode(), "other", m2.data.decode()]
    assert payloads(snapshot([a])) == [m1.data.decode(), m2.data.decode()]


def test_adopting_what_a_route_kept_before_a_reload():
    old = kept_for(SnapshotSpec(by="s"))
    for i, s in enumerate("ABCDE"):
        old.keep(i, tick(s, i))
    smaller = kept_for(SnapshotSpec(by="s", max_keys=2))
    smaller.adopt(old)
    assert [json.loads(p)["s"] for p in payloads(smaller.entries())] == ["D", "E"] and smaller.evicted == 3
    other = kept_for(SnapshotSpec(by="n"))
    other.adopt(old)  # another key: what was kept means something else
    assert len(other) == 0
    lastn = kept_for(SnapshotSpec(last=2))
    lastn.adopt(old)  # by -> last: not the same thing either
    assert len(lastn) == 0
    tail = kept_for(SnapshotSpec(last=5))
    for i in range(5):
        tail.keep(i, msg(f"m{i}"))
    shorter = kept_for(SnapshotSpec(last=2))
    shorter.adopt(tail)
    assert payloads(shorter.entries()) == ["m3", "m4"] and shorter.bytes == 4


class Wire:
    """A wire that frames text with a prefix and cannot carry binary; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def frame(self, data: bytes, is_text: bool) -> bytes | None:
        self.calls += 1
        return b">" + data if is_text else None


def test_an_entry_is_framed_once_per_wire_however_many_clients_join():
    kept = kept_for(SnapshotSpec(last=2))
    kept.keep(1, msg("x"))
    kept.keep(2, Message(b"\x00", False))
    wire = Wire()
    for _ in range(5):
        assert [e.frame(wire) for e in kept.entries()] == [b">x", None]
    assert wire.calls == 2


@pytest.mark.parametrize(
    "raw, problem",
    [
        ({"by": "a..b"}, ("by",)),
        ({"by": "[0]"}, ("by",)),
        ({"last": 3, "max_keys": 5}, ("max_keys",)),
    ],
)
def test_settings_the_schema_cannot_judge_are_problems_at_their_key(raw, problem):
    _spec, problems = snapshot_from(raw)
    assert [p for p, _ in problems] == [problem]


def test_a_spec_says_what_it_keeps():
    assert SnapshotSpec(by="s").describe() == "the last message per s (at most 10,000 keys, 64MiB)"
    assert (
        SnapshotSpec(last=1, end="E").describe() == "the last 1 message (at most 64MiB), then an end marker"
    )
    assert SnapshotSpec(by="s") != SnapshotSpec(by="s", max_keys=5)


@pytest.mark.parametrize(
    "text, seconds",
    [("250ms", 0.25), ("2s", 2.0), (" 1.5 s ", 1.5), ("5m", 300.0), ("1h", 3600.0), (3, 3.0), (0.5, 0.5)],
)
def test_durations_in_the_units_people_write(text, seconds):
    from veylor.config.common import human_duration, parse_duration

    assert parse_duration(text) == seconds
    assert parse_duration(human_duration(seconds)) == seconds


@pytest.mark.parametrize(
    "raw, where",
    [
        ({"by": "s", "interval": "5ms"}, ("interval",)),
        ({"by": "s", "interval": "2h"}, ("interval",)),
        ({"by": "a..b", "interval": 1}, ("by",)),
    ],
)
def test_conflate_settings_the_schema_cannot_judge_are_problems_at_their_key(raw, where):
    from veylor.config.latestspec import conflate_from

    _spec, problems = conflate_from(raw)
    assert [p for p, _ in problems] == [where]


def test_a_conflate_spec_says_what_it_does_and_compares_by_value():
    from veylor.config.latestspec import ConflateSpec, conflate_from

    spec, problems = conflate_from({"by": "s", "interval": "250ms"})
    assert not problems and spec == ConflateSpec("s", 0.25)
    assert spec.describe() == "the latest per s every 250ms"
    assert spec.as_json() == {"by": "s", "interval": "250ms", "max_keys": 10000, "max_bytes": "64MiB"}
    assert spec != ConflateSpec("s", 0.5)


def seq_msg(n) -> Message:
    return msg(json.dumps({"seq": n}))


def test_a_history_keeps_increasing_numbers_within_its_bounds_and_says_what_is_lost():
    from veylor.config.latestspec import ResumeSpec
    from veylor.latest import History

    history = History(ResumeSpec(by="seq", size=3))
    for seq, n in enumerate([1, 2, 3, 4, 4, 2, 5], 1):  # 4 again and 2: not after the last
        history.keep(seq, seq_msg(n))
    history.keep(8, msg("not json"))
    history.keep(9, msg('{"seq": true}'))
    history.keep(10, msg('{"seq": NaN}'))
    assert list(history.values) == [3, 4, 5] and history.evicted == 2
    assert history.unordered == 2 and history.unkept == 3
    entries, lost = history.since(3)
    assert [json.loads(e.data)["seq"] for e in entries] == [4, 5] and not lost
    entries, lost = history.since(2)  # 3 is V + 1: nothing in between is missing
    assert [json.loads(e.data)["seq"] for e in entries] == [3, 4, 5] and not lost
    entries, lost = history.since(1)  # 2 is gone: it may be lost
    assert len(entries) == 3 and lost
    assert history.since(5) == ([], False) and history.since(99) == ([], False)
    assert history.since(3.5)[0][0].data == seq_msg(4).data  # (numbers, not only integers)


def test_a_history_bounded_by_bytes_keeps_the_newest_and_adopts_across_a_reload():
    from veylor.config.latestspec import ResumeSpec
    from veylor.latest import History

    history = History(ResumeSpec(by="seq", max_bytes=30))
    for n in range(10, 20):  # 11 bytes each: two fit
        history.keep(n, seq_msg(n))
    assert list(history.values) == [18, 19] and history.bytes == 22
    wider = History(ResumeSpec(by="seq", size=1))
    wider.adopt(history)
    assert list(wider.values) == [19]
    other = History(ResumeSpec(by="n"))
    other.adopt(history)  # another key: not the same numbers
    assert len(other) == 0


def test_kept_bytes_are_bounded_the_newest_always_stays():
    """A feed of large messages under many keys (or a hostile one: 16 MiB each) cannot
    make a route keep more than max_bytes: the least recently updated go first."""
    by_key = kept_for(SnapshotSpec(by="s", max_bytes=100))
    for i in range(10):
        by_key.keep(i, msg(json.dumps({"s": i, "pad": "x" * 30})))  # about 40 bytes each
    assert by_key.bytes <= 100 and len(by_key) == 2 and by_key.evicted == 8
    assert [json.loads(p)["s"] for p in payloads(by_key.entries())] == [8, 9]
    huge = kept_for(SnapshotSpec(by="s", max_bytes=10))
    huge.keep(1, msg(json.dumps({"s": 1, "pad": "x" * 100})))  # larger than the bound alone
    assert len(huge) == 1  # (the newest stays: a joiner gets the latest value)
    last = kept_for(SnapshotSpec(last=100, max_bytes=50))
    for i in range(10):
        last.keep(i, msg("y" * 20))
    assert len(last) == 2 and last.bytes == 40
