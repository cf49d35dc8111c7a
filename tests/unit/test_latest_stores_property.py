"""Property tests (hypothesis) of what routes keep (veylor.latest): whatever the
interleaving of updates, joins and clients that come back, a client's snapshot then
live stream holds no message twice and misses none it should get, and a client that
comes back gets exactly what it missed, or is told some may be lost.

Each property is checked against a model written independently of the stores: the
snapshot of a ``by`` route is the latest message of each of the ``max_keys`` most
recently updated keys, oldest update first; a history is the newest ``size`` numbered
messages."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from veylor.config.latestspec import ResumeSpec, SnapshotSpec
from veylor.latest import History, kept_for, snapshot
from veylor.message import Message

KEYS = st.sampled_from(["A", "B", "C", "D", "E", None])  # None: a message without the key
# An op: a message (its key), or a client joins (a snapshot is cut here).
OPS = st.lists(st.one_of(st.tuples(st.just("msg"), KEYS), st.just(("join",))), max_size=80)


def message(seq: int, key: str | None) -> Message:
    doc = {"n": seq} if key is None else {"s": key, "n": seq}
    return Message(json.dumps(doc).encode(), True)


def model_snapshot(sent: list[tuple[int, str | None]], max_keys: int) -> list[int]:
    """The numbers a joiner's snapshot holds: the latest of each of the max_keys most
    recently updated keys, oldest update first."""
    latest: dict[str, int] = {}
    for seq, key in sent:
        if key is not None:
            latest[key] = seq
    newest = sorted(latest.values(), reverse=True)[:max_keys]
    return sorted(newest)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, max_keys=st.integers(1, 6))
def test_a_joiner_gets_the_latest_of_each_key_then_every_later_message_once(ops, max_keys):
    kept = kept_for(SnapshotSpec(by="s", max_keys=max_keys))
    sent: list[tuple[int, str | None]] = []
    clients: list[list[int]] = []  # what each joined client received, in order
    cuts: list[int] = []  # how many messages were sent when each joined
    for op in ops:
        if op[0] == "msg":
            seq = len(sent) + 1
            sent.append((seq, op[1]))
            kept.keep(seq, message(seq, op[1]))
            for got in clients:  # live: every client there gets it
                got.append(seq)
        else:
            clients.append([e.seq for e in snapshot([kept])])
            cuts.append(len(sent))
    for got, cut in zip(clients, cuts, strict=True):
        snap = model_snapshot(sent[:cut], max_keys)
        assert got == snap + list(range(cut + 1, len(sent) + 1))
        assert len(set(got)) == len(got)  # nothing twice
    assert kept.bytes == sum(len(e.data) for e in kept.entries())


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["A", "B", "C", None]), st.booleans(), st.booleans()), max_size=60
    ),
    last=st.integers(1, 8),
)
def test_several_routes_into_one_endpoint_merge_in_order_each_message_once(ops, last):
    """Two routes keep what their filters pass (a message may pass both): the joiner's
    snapshot is their union, in the order sent, each message once."""
    by_key = kept_for(SnapshotSpec(by="s", max_keys=10))
    last_n = kept_for(SnapshotSpec(last=last))
    into_a: list[tuple[int, str | None]] = []
    into_b: list[int] = []
    for seq, (key, a, b) in enumerate(ops, 1):
        m = message(seq, key)
        if a:
            by_key.keep(seq, m)
            into_a.append((seq, key))
        if b:
            last_n.keep(seq, m)
            into_b.append(seq)
    want = sorted(set(model_snapshot(into_a, 10)) | set(into_b[-last:]))
    assert [e.seq for e in snapshot([by_key, last_n])] == want


NUMBERED = st.lists(
    st.tuples(st.integers(1, 3), st.booleans()),  # (how far the number moves on, numbered at all)
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(stream=NUMBERED, size=st.integers(1, 20), away=st.data())
def test_a_client_that_comes_back_gets_exactly_what_it_missed_or_is_told(stream, size, away):
    """A client read the numbered messages up to some point, went away, and comes back
    with ``since`` the last number it read: it gets every kept message after it, in
    order, none it had; and unless it is told some may be lost, none is missing."""
    history = History(ResumeSpec(by="n", size=size))
    numbers: list[int] = []
    value = 0
    for seq, (step, numbered) in enumerate(stream, 1):
        if numbered:
            value += step
            numbers.append(value)
            history.keep(seq, Message(json.dumps({"n": value}).encode(), True))
        else:
            history.keep(seq, Message(b'{"other": 1}', True))
    read = away.draw(st.integers(0, len(numbers)), label="messages it read before it went")
    since = numbers[read - 1] if read else 0
    entries, lost = history.since(since)
    got = [json.loads(e.data)["n"] for e in entries]
    missed = numbers[read:]
    assert got == missed[-size:] if missed else got == []  # the newest it missed that are kept
    assert all(n > since for n in got)  # nothing it had
    kept = numbers[-size:]
    assert lost == (bool(kept) and kept[0] > since + 1)
    if not lost:
        assert got == missed  # nothing missing


@settings(max_examples=200, deadline=None)
@given(count=st.integers(0, 60), room=st.integers(0, 400), since=st.integers(0, 70))
def test_a_client_coming_back_from_far_gets_the_newest_that_fit(count, room, since):
    """Bounded by the room it has (client_buffer): the newest missed that fit, in order,
    and the seq of the newest that did not, if any."""
    history = History(ResumeSpec(by="n", size=1000))
    for n in range(1, count + 1):
        history.keep(n, Message(json.dumps({"n": n, "pad": "x" * (n % 7)}).encode(), True))
    entries, _, cut = history.newest_since(since, room)
    got = [e.seq for e in entries]
    missed = list(range(since + 1, count + 1))
    assert got == missed[len(missed) - len(got) :]  # a suffix: the newest
    assert sum(len(e.data) for e in entries) <= room
    if len(got) < len(missed):
        assert cut == missed[len(missed) - len(got) - 1]
    else:
        assert cut is None
