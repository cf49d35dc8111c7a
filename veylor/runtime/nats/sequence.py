"""Following publishers' sequence numbers, to count what was lost on the way (pure: no
I/O; the clock is injected).

A publisher numbers its messages 1, 2, 3... per key (a NATS subject), under an id of its
own (a core's node id, new at each start). A receiver that sees 5 after 2 lost 3 and 4.
But anyone allowed to publish on the key can also send one message with a copied id
and any number: taken at its word, one message would count a billion losses, and make
every real message after it look old, so that a real loss is never counted again.

So :class:`SequenceTracker` follows one sequence per key, and a message only moves it
where a real publisher could have:

- the expected number: in sequence;
- ahead by no more than the publisher's rate and the time since its last message can
  explain (:meth:`Publisher.plausible`): that many lost, counted, followed from there;
- ahead by more, behind (a duplicate, a late message), or under another id: not
  followed. The tracker keeps expecting the number it expected; the message is a
  *candidate* for a new sequence;
- ``CONFIRM`` candidates in a row that agree with each other (same id, consecutive
  numbers, no message in sequence between them) are a new sequence: a restarted or new
  publisher, followed from there, not counted as a loss.

One forged message therefore changes nothing: the next real message is the expected one
and the candidate is dropped (an *outlier*, counted). A forged jump small enough to be
plausible is counted, and the real messages after it (behind the new expectation)
bring the tracker back after ``CONFIRM`` of them. The rate is measured from messages
received in sequence only, so forged jumps cannot raise what counts as plausible.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import NamedTuple

CONFIRM = 3  # candidates in a row that make a new sequence (a restarted or new publisher)
MAX_GAP = 10**9  # no jump over this is ever a loss, however long the silence before it
SLACK = 1_000  # messages a jump may exceed the rate's explanation by and still be a loss
FACTOR = 10.0  # how much faster than measured a publisher may have been while messages were lost
BURST = 1.0  # seconds added to the time since the last message (messages travel in batches)
RATE_FLOOR = 100.0  # messages per second assumed of a publisher, at the least
RATE_WINDOW = 1.0  # seconds over which the rate is measured


class Seen(Enum):
    """What one message was, to the publisher's sequence."""

    FIRST = "first"  # the first message of its key: followed from here
    NEXT = "next"  # the expected one
    LOSS = "loss"  # ahead by ``n`` that the rate explains: ``n`` lost, followed from here
    LATE = "late"  # behind the expected number: a duplicate or a late message
    IMPLAUSIBLE = "implausible"  # ahead by ``n``, more than the rate explains: not followed
    FOREIGN = "foreign"  # under another publisher id: not followed (yet)
    NEW = "new"  # the last of ``CONFIRM`` candidates that agree: a new sequence, followed


class Verdict(NamedTuple):
    """One message's verdict: what it was (``seen``), the jump (``n``: ahead by this many
    for LOSS and IMPLAUSIBLE, from the expected number to this one for NEW), and how many
    earlier candidates it showed to be outliers (``dropped``: they never got confirmed)."""

    seen: Seen
    n: int = 0
    dropped: int = 0
    new_id: bool = False  # NEW: under another publisher id (not one sequence restarted)


_FIRST = Verdict(Seen.FIRST)
_NEXT = Verdict(Seen.NEXT)


class Publisher:
    """The sequence followed on one key, and the candidates for a new one."""

    __slots__ = (
        "count",
        "expected",
        "last_at",
        "node",
        "rate",
        "run",
        "run_next",
        "run_node",
        "run_outliers",
        "window_at",
    )

    def __init__(self, node: str | None, seq: int, now: float) -> None:
        self.node = node
        self.expected = seq + 1
        self.last_at = now  # when the last message followed came
        self.rate = 0.0  # messages per second received in sequence (the highest lately)
        self.window_at = now
        self.count = 0  # messages in sequence since window_at
        self.run = 0  # candidates in a row that agree
        self.run_node: str | None = None
        self.run_next = 0  # the number that continues them
        self.run_outliers = 0  # of which ahead or foreign (late ones are counted as late)

    def plausible(self, now: float) -> int:
        """The largest jump that the publisher's rate and the time since its last message
        can explain."""
        rate = max(self.rate, RATE_FLOOR)
        return int(min(MAX_GAP, SLACK + FACTOR * rate * (now - self.last_at + BURST)))

    def follow(self, seq: int, now: float, in_sequence: bool) -> int:
        """Follow ``seq``; the candidates it shows to be outliers."""
        self.expected = seq + 1
        self.last_at = now
        if in_sequence:
            self.count += 1
            span = now - self.window_at
            if span >= RATE_WINDOW:
                self.rate = max(self.count / span, self.rate / 2)  # (a quiet spell halves it)
                self.window_at, self.count = now, 0
        dropped = self.run_outliers
        self.run = self.run_outliers = 0
        return dropped

    def candidate(self, node: str | None, seq: int, now: float, outlier: bool) -> tuple[bool, int]:
        """A message not followed: whether it makes a new sequence (``CONFIRM`` in a row
        agree: followed from here), and how many earlier candidates it cut short."""
        dropped = 0
        if self.run and node == self.run_node and seq == self.run_next:
            self.run += 1
        else:
            dropped = self.run_outliers
            self.run, self.run_node, self.run_outliers = 1, node, 0
        self.run_next = seq + 1
        self.run_outliers += outlier
        if self.run < CONFIRM:
            return False, dropped
        self.node = node
        self.follow(seq, now, False)
        self.window_at, self.count = now, 0
        return True, dropped


class SequenceTracker:
    """Sequence numbers per key (at most ``max_keys``: the oldest key is forgotten
    first), one :class:`Publisher` each. ``observe`` is called for each message."""

    def __init__(self, clock: Callable[[], float], max_keys: int = 10_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self.keys: dict[str, Publisher] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def observe(self, key: str, node: str | None, seq: int) -> Verdict:
        now = self.clock()
        p = self.keys.get(key)
        if p is None:
            if len(self.keys) >= self.max_keys:
                del self.keys[next(iter(self.keys))]
            self.keys[key] = Publisher(node, seq, now)
            return _FIRST
        expected = p.expected
        if node == p.node:
            if seq == expected:
                dropped = p.follow(seq, now, True)
                return Verdict(Seen.NEXT, 0, dropped) if dropped else _NEXT
            if seq > expected:
                jump = seq - expected
                if jump <= p.plausible(now):
                    return Verdict(Seen.LOSS, jump, p.follow(seq, now, False))
                seen = Seen.IMPLAUSIBLE
            else:
                seen, jump = Seen.LATE, 0
        else:
            seen, jump = Seen.FOREIGN, 0
        new, dropped = p.candidate(node, seq, now, seen is not Seen.LATE)
        if new:
            return Verdict(Seen.NEW, seq - expected, dropped, seen is Seen.FOREIGN)
        return Verdict(seen, jump, dropped)


__all__ = ["CONFIRM", "MAX_GAP", "Publisher", "Seen", "SequenceTracker", "Verdict"]
