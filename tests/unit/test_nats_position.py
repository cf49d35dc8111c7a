"""A NATS source's place in its JetStream stream and its guards, as pure objects
(veylor.runtime.nats.position): duplicates, gaps the stream made, restarts from a
position file, forged file contents, a message that ends the client library's read loop,
and a consumer in a reset loop. What needed a 3-node cluster to see, in microseconds."""

from __future__ import annotations

import pytest

from veylor.runtime.nats.position import (
    RESETS_TO_SKIP,
    RESETS_WITHIN,
    STALLS_TO_SKIP,
    PositionError,
    ResetGuard,
    Resume,
    StreamPosition,
    format_position,
    parse_position,
)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- delivery: in order, duplicates, gaps ------------------------------------------------


def test_each_message_is_delivered_once_and_moves_the_position():
    pos = StreamPosition()
    assert [pos.deliver(seq) for seq in (1, 2, 3)] == [True, True, True]
    assert pos.position == 3
    assert pos.resumed_from == 1
    assert pos.duplicates == 0


def test_a_redelivered_message_is_a_duplicate_not_delivered_again():
    """A consumer recreated after a failover sends again what it sent: at or below the
    position, counted, never delivered twice."""
    pos = StreamPosition()
    for seq in (1, 2, 3):
        pos.deliver(seq)
    assert [pos.deliver(seq) for seq in (2, 3, 1)] == [False, False, False]
    assert pos.duplicates == 3
    assert pos.position == 3
    assert pos.deliver(4) is True


def test_a_reordered_older_message_does_not_move_the_position_back():
    pos = StreamPosition()
    pos.deliver(5)
    assert pos.deliver(4) is False
    assert pos.position == 5


def test_resumed_from_is_the_first_message_of_this_run():
    pos = StreamPosition(41)
    pos.deliver(41)  # (a duplicate: at the position read from the file)
    pos.deliver(42)
    pos.deliver(43)
    assert pos.resumed_from == 42
    assert pos.duplicates == 1


# -- resuming: restarts, a stream that moved on -----------------------------------------


def test_a_restart_resumes_after_the_position():
    pos = StreamPosition(100)
    assert pos.resume(first=1, last=500) == Resume()
    assert pos.start(replay=0, last=500) == 101
    assert pos.start(replay="last", last=500) == 101  # (a position wins over replay)


def test_messages_the_stream_discarded_before_they_were_read_are_missed():
    pos = StreamPosition(100)
    assert pos.resume(first=151, last=500) == Resume(missed=50)
    assert pos.position == 150
    assert pos.start(replay=0, last=500) == 151


def test_the_next_message_being_the_streams_first_is_no_gap():
    pos = StreamPosition(100)
    assert pos.resume(first=101, last=500) == Resume()
    assert pos.position == 100


def test_a_position_past_the_streams_end_is_forgotten():
    """Another stream of that name, or a damaged file: starting as replay says."""
    pos = StreamPosition(9_000)
    assert pos.resume(first=1, last=500) == Resume(forgotten=9_000)
    assert pos.position == 0
    assert pos.start(replay=10, last=500) == 491


@pytest.mark.parametrize(
    ("replay", "last", "start"),
    [
        (0, 500, 501),  # only new messages
        (10, 500, 491),  # the last ten
        (1_000, 500, 1),  # more than the stream holds: from its first
        ("last", 500, None),  # the stream's last message
        (("from", 42), 500, 42),  # from a sequence
        (0, 0, 1),  # an empty stream
    ],
)
def test_without_a_position_replay_says_where_to_start(replay, last, start):
    assert StreamPosition().start(replay=replay, last=last) == start


def test_a_negative_position_is_none():
    assert StreamPosition(-5).position == 0


# -- a stored message that ends the library's read loop ---------------------------------


def test_read_loop_ends_in_a_row_at_one_position_skip_the_next_message():
    pos = StreamPosition(7)
    assert [pos.read_loop_ended() for _ in range(STALLS_TO_SKIP)] == [False] * (STALLS_TO_SKIP - 1) + [True]
    assert pos.skip_unreadable(last=20) == 8
    assert pos.position == 8
    assert pos.skip_unreadable(last=20) is None  # (once)


def test_read_loop_ends_at_different_positions_skip_nothing():
    """A connection that stalls now and then while messages flow is not a poisoned message."""
    pos = StreamPosition(7)
    for seq in range(8, 8 + 3 * STALLS_TO_SKIP):
        pos.deliver(seq)
        assert pos.read_loop_ended() is False
    assert pos.skip_unreadable(last=100) is None


def test_a_skip_waits_until_the_stream_is_seen_to_hold_the_message():
    """The read loop ended with nothing after the position (a stall at the live end): no
    message is invented, and none is skipped later."""
    pos = StreamPosition(7)
    for _ in range(STALLS_TO_SKIP):
        pos.read_loop_ended()
    assert pos.skip_unreadable(last=7) is None
    assert pos.position == 7
    assert pos.skip_unreadable(last=20) is None


def test_after_a_skip_the_count_starts_again_at_the_new_position():
    pos = StreamPosition(7)
    for _ in range(STALLS_TO_SKIP):
        pos.read_loop_ended()
    pos.skip_unreadable(last=20)
    assert pos.read_loop_ended() is False
    for _ in range(STALLS_TO_SKIP - 1):
        pos.read_loop_ended()
    assert pos.skip_unreadable(last=20) == 9


# -- the ordered consumer's reset loop ---------------------------------------------------


def test_a_consumer_in_a_reset_loop_goes_past_the_message():
    clock = Clock()
    guard = ResetGuard(clock)
    answers = []
    for _ in range(RESETS_TO_SKIP):
        answers.append(guard.reset_at(42))
        clock.now += 0.001
    assert answers[:-1] == [42] * (RESETS_TO_SKIP - 1)
    assert answers[-1] == 43
    assert guard.reset_at(43) == 43  # (a reset after it is not a loop yet)


def test_resets_spread_over_time_are_a_failover_not_a_loop():
    """The library's own recovery resets every 2 s at most."""
    clock = Clock()
    guard = ResetGuard(clock)
    for _ in range(3 * RESETS_TO_SKIP):
        assert guard.reset_at(42) == 42
        clock.now += RESETS_WITHIN
    assert guard.reset_at(42) == 42


def test_resets_at_moving_sequences_are_not_a_loop():
    clock = Clock()
    guard = ResetGuard(clock)
    for seq in range(1, 3 * RESETS_TO_SKIP):
        assert guard.reset_at(seq) == seq
        assert guard.reset_at(seq) == seq


def test_a_reset_without_a_sequence_is_passed_through():
    guard = ResetGuard(Clock())
    assert [guard.reset_at(None) for _ in range(2 * RESETS_TO_SKIP)] == [None] * (2 * RESETS_TO_SKIP)


def test_a_skip_moves_the_position_only_forward():
    pos = StreamPosition(50)
    assert pos.skip_to(42) is False  # (already past it: not missed)
    assert pos.position == 50
    assert pos.skip_to(51) is True
    assert pos.position == 51


# -- the position file's text: forged and damaged values --------------------------------


def test_a_position_file_round_trips():
    assert parse_position(format_position("ticks", 123456), "ticks") == 123456


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ticks",
        "ticks 12 13",
        "ticks -5",
        "ticks 1_000",  # (int() takes it)
        "ticks ١٢٣",  # Arabic-Indic digits (int() takes them)
        "ticks ¹²",  # superscripts (isdigit() says yes)
        "ticks 12345678901234567890",  # over 19 digits: past a uint64 sequence
        "ticks 0x10",
        "ticks 1e9",
    ],
)
def test_a_position_file_that_does_not_hold_a_position_is_refused(text):
    with pytest.raises(PositionError, match="does not hold a position"):
        parse_position(text, "ticks")


def test_another_streams_position_file_is_refused():
    with pytest.raises(PositionError, match="is for stream orders, not ticks"):
        parse_position("orders 12\n", "ticks")


def test_the_largest_sequence_is_taken():
    assert parse_position("ticks 9999999999999999999", "ticks") == 9_999_999_999_999_999_999
