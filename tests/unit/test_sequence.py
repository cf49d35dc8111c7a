"""The sequence tracker (veylor.runtime.nats.sequence) as a pure object with a clock of its own: real
losses are counted exactly, whatever forged, duplicated, late or foreign messages come
between; restarted publishers are followed without counting a loss."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pytest
from helpers import Clock

from veylor.runtime.nats.sequence import CONFIRM, MAX_GAP, Seen, SequenceTracker


class Edge:
    """A tracker and the counters an edge keeps from its verdicts."""

    def __init__(self, max_keys: int = 10_000) -> None:
        self.clock = Clock(1000.0)
        self.tracker = SequenceTracker(self.clock, max_keys)
        self.missed = 0
        self.outliers = 0
        self.counts: Counter[Seen] = Counter()

    def feed(
        self, messages: Iterable[tuple[str | None, int]], every: float = 0.001, key: str = "s"
    ) -> list[Seen]:
        seen = []
        for node, seq in messages:
            self.clock.now += every
            v = self.tracker.observe(key, node, seq)
            self.counts[v.seen] += 1
            self.outliers += v.dropped
            if v.seen is Seen.LOSS:
                self.missed += v.n
            seen.append(v.seen)
        return seen


def run(node: str | None, first: int, last: int) -> list[tuple[str | None, int]]:
    return [(node, s) for s in range(first, last + 1)]


def test_in_sequence_and_real_losses_are_counted_exactly() -> None:
    e = Edge()
    e.feed(run("A", 1, 100))
    e.feed(run("A", 151, 200))  # 101..150 lost
    e.feed(run("A", 202, 300))  # 201 lost
    assert e.missed == 51 and e.outliers == 0
    assert e.counts[Seen.LOSS] == 2 and e.counts[Seen.NEW] == 0


def test_one_forged_jump_up_is_not_counted_and_a_real_loss_after_it_is() -> None:
    """The issue's attack: a copied node id with a number just under the old threshold."""
    e = Edge()
    e.feed(run("A", 1, 100))
    assert e.feed([("A", 100 + MAX_GAP)]) == [Seen.IMPLAUSIBLE]
    e.feed(run("A", 101, 120))  # the real sequence goes on: followed
    e.feed(run("A", 171, 200))  # a real loss of 50
    assert e.missed == 50
    assert e.outliers == 1 and e.counts[Seen.NEXT] == 99 + 20 + 29 and e.counts[Seen.LATE] == 0


@pytest.mark.parametrize("forged", [10**18, 10**9 + 5, 50_000, 2**63 - 1])
def test_forged_jumps_up_of_any_size_never_poison_the_count(forged: int) -> None:
    e = Edge()
    for i in range(20):  # a forged message between every 50 real ones
        e.feed(run("A", 50 * i + 1, 50 * i + 50))
        e.feed([("A", forged + i)])
    assert e.missed == 0 and e.outliers == 19  # (the last one is still a candidate)
    e.feed(run("A", 1001, 1010))
    e.feed(run("A", 1061, 1070))
    assert e.missed == 50


def test_forged_jumps_down_and_duplicates_are_late_and_change_nothing() -> None:
    e = Edge()
    e.feed(run("A", 1, 100))
    seen = e.feed([("A", 1), ("A", 0), ("A", 50), ("A", 100), ("A", 100)])
    assert seen == [Seen.LATE] * 5
    e.feed(run("A", 101, 110))
    e.feed(run("A", 161, 170))
    assert e.missed == 50 and e.outliers == 0 and e.counts[Seen.NEW] == 0


def test_a_duplicate_is_late_and_the_next_one_is_in_sequence() -> None:
    e = Edge()
    assert e.feed([("A", 1), ("A", 2), ("A", 3), ("A", 3), ("A", 4)]) == [
        Seen.FIRST,
        Seen.NEXT,
        Seen.NEXT,
        Seen.LATE,
        Seen.NEXT,
    ]
    assert e.missed == 0


def test_a_reordered_message_counts_as_a_loss_then_a_late_one() -> None:
    """NATS keeps one publisher's order; were it broken, the count says so and goes on."""
    e = Edge()
    seen = e.feed([("A", 1), ("A", 2), ("A", 4), ("A", 3), ("A", 5), ("A", 6)])
    assert seen == [Seen.FIRST, Seen.NEXT, Seen.LOSS, Seen.LATE, Seen.NEXT, Seen.NEXT]
    assert e.missed == 1


def test_a_restarted_publisher_is_followed_after_it_confirms_without_a_loss() -> None:
    e = Edge()
    e.feed(run("A", 1, 500))
    seen = e.feed(run("B", 1, 10))  # a core restarted: a new node id, from 1
    assert seen[: CONFIRM - 1] == [Seen.FOREIGN] * (CONFIRM - 1)
    assert seen[CONFIRM - 1] is Seen.NEW and seen[CONFIRM:] == [Seen.NEXT] * (10 - CONFIRM)
    e.feed(run("B", 61, 70))
    assert e.missed == 50 and e.outliers == 0 and e.counts[Seen.NEW] == 1


def test_a_publisher_without_node_id_restarting_from_1_is_followed() -> None:
    e = Edge()
    e.feed(run(None, 1, 500))
    seen = e.feed(run(None, 1, 10))
    assert seen[: CONFIRM - 1] == [Seen.LATE] * (CONFIRM - 1) and seen[CONFIRM - 1] is Seen.NEW
    e.feed(run(None, 21, 30))
    assert e.missed == 10


def test_one_forged_message_under_another_node_id_changes_nothing() -> None:
    e = Edge()
    e.feed(run("A", 1, 100))
    assert e.feed([("X", 1)]) == [Seen.FOREIGN]
    e.feed(run("A", 101, 110))
    e.feed(run("A", 161, 170))
    assert e.missed == 50 and e.outliers == 1 and e.counts[Seen.NEW] == 0


def test_two_publishers_taking_turns_are_never_followed_in_turn() -> None:
    """Node ids alternating at every message (an attacker, or two cores on one subject):
    neither takes the other's place; the first one stays followed."""
    e = Edge()
    e.feed([("AB"[i % 2], i // 2 + 1) for i in range(2000)])
    assert e.counts[Seen.NEW] == 0 and e.missed == 0 and e.counts[Seen.NEXT] == 999
    assert e.outliers == 999  # each of B's, cut short by A's next (the last still a candidate)


def test_forged_messages_in_a_row_that_agree_are_a_new_sequence_and_the_real_one_comes_back() -> None:
    """An attacker who sends CONFIRM consecutive numbers in a row is followed (nothing
    tells them from a restart), and is not counted as a loss; CONFIRM real messages in a
    row bring the tracker back, and a loss after that is counted exactly."""
    e = Edge()
    e.feed(run("A", 1, 100))
    e.feed(run("A", 10**12, 10**12 + CONFIRM - 1))
    assert e.missed == 0 and e.counts[Seen.NEW] == 1
    e.feed(run("A", 101, 120))
    assert e.counts[Seen.NEW] == 2
    e.feed(run("A", 171, 180))
    assert e.missed == 50


def test_a_plausible_forged_jump_is_counted_once_and_the_real_sequence_is_followed_again() -> None:
    """A jump small enough to be a loss cannot be told from one: counted; the real
    messages after it are behind, and CONFIRM of them bring the tracker back."""
    e = Edge()
    e.feed(run("A", 1, 100))
    e.feed([("A", 300)])  # forged: 199 "lost"
    assert e.missed == 199
    e.feed(run("A", 101, 120))
    e.feed(run("A", 171, 180))
    assert e.missed == 199 + 50


def test_what_is_plausible_grows_with_the_rate_and_the_silence() -> None:
    e = Edge()
    e.feed(run("A", 1, 20_000), every=0.0001)  # 10,000 messages a second
    e.clock.now += 30  # the edge was away for 30 s: 300,000 published meanwhile
    assert e.feed([("A", 320_001)]) == [Seen.LOSS]
    assert e.missed == 300_000
    e.feed(run("A", 320_002, 320_010), every=0.0001)
    assert e.feed([("A", 10**8)]) == [Seen.IMPLAUSIBLE]  # not right after a message


def test_a_slow_publisher_s_loss_is_still_counted() -> None:
    e = Edge()
    e.feed(run("A", 1, 10), every=60.0)  # one message a minute
    e.feed([("A", 500)], every=60.0)
    assert e.missed == 489


def test_a_huge_real_loss_confirmed_by_the_messages_after_it_is_a_new_sequence_not_a_count() -> None:
    """A jump no rate explains, followed by messages that continue it: the tracker
    follows it (without counting a loss nobody can vouch for)."""
    e = Edge()
    e.feed(run("A", 1, 100))
    seen = e.feed(run("A", 10**9, 10**9 + 5))
    assert seen[: CONFIRM - 1] == [Seen.IMPLAUSIBLE] * (CONFIRM - 1) and seen[CONFIRM - 1] is Seen.NEW
    assert seen[CONFIRM:] == [Seen.NEXT] * (6 - CONFIRM) and e.missed == 0


def test_keys_are_independent_and_bounded() -> None:
    e = Edge(max_keys=100)
    e.feed(run("A", 1, 10), key="a")
    e.feed(run("A", 1, 10), key="b")
    e.feed([("A", 20)], key="a")
    assert e.missed == 9
    for i in range(1000):
        e.feed([("N", 1)], key=f"k{i}")
    assert len(e.tracker) == 100
