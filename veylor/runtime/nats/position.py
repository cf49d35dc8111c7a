"""Where a source is in a JetStream stream, and its two guards against a consumer that
stops delivering (pure: no I/O; the clock is injected).

A source reading a stream delivers each message once, in order, across restarts and
failovers: its *position* is the stream sequence of the last message it delivered, and
it resumes after it. What can go wrong is decided here, where it can be tested
without a cluster:

- a message at or below the position is a duplicate (a consumer recreated after a
  failover sends again what it sent): not delivered, counted (:meth:`StreamPosition.deliver`);
- a position past the stream's end (another stream of that name, a damaged file) is
  forgotten; messages the stream discarded before they were read are missed, counted
  (:meth:`StreamPosition.resume`);
- a stored message that the client library cannot parse ends its read loop, on every
  new connection: after ``STALLS_TO_SKIP`` ends in a row at one position it is skipped,
  counted as missed (:meth:`StreamPosition.read_loop_ended`,
  :meth:`StreamPosition.skip_unreadable`);
- a stored message that the client library takes for a control message makes its
  ordered consumer reset at that message again and again: after ``RESETS_TO_SKIP``
  resets at one sequence within ``RESETS_WITHIN`` seconds the reset goes past it
  (:class:`ResetGuard`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

STALLS_TO_SKIP = 3  # read loop ends in a row at one stream position that skip the message after it
# A stream consumer reset at one message this many times within RESETS_WITHIN seconds is
# in a loop on that message (which is then skipped); the library's own recovery from a
# failover resets every 2 s at most.
RESETS_TO_SKIP = 10
RESETS_WITHIN = 1.0
MAX_DIGITS = 19  # a position is a plain decimal number below 10**19 (a uint64 stream sequence)


class PositionError(ValueError):
    """A position file's text that does not hold a position for the stream (the reason,
    for people)."""


def parse_position(text: str, stream: str) -> int:
    """The position a position file's ``text`` holds for ``stream`` ("<stream> <sequence>").
    Only plain decimal digits count (``int()`` would take "1_000" and other scripts'
    digits); raises :class:`PositionError` otherwise, or for another stream's file."""
    try:
        name, number = text.split()
    except ValueError:
        raise PositionError("does not hold a position") from None
    if not (number.isascii() and number.isdigit() and len(number) <= MAX_DIGITS):
        raise PositionError("does not hold a position")
    if name != stream:
        raise PositionError(f"is for stream {name}, not {stream}")
    return int(number)


def format_position(stream: str, position: int) -> str:
    """A position file's text (what :func:`parse_position` reads)."""
    return f"{stream} {position}\n"


@dataclass(frozen=True)
class Resume:
    """What :meth:`StreamPosition.resume` found: ``forgotten``, the position that was past
    the stream's end (0: none); ``missed``, messages the stream discarded before they
    were read."""

    forgotten: int = 0
    missed: int = 0


Replay = int | str | tuple[str, int]  # NatsSourceSpec.replay: a count, "last", or ("from", sequence)


class StreamPosition:
    """A source's place in its stream: ``position`` (the stream sequence of the last
    message delivered), ``saved`` (as last written to its position file),
    ``resumed_from`` (where this run started reading, for /graph) and ``duplicates``
    (messages at or below the position, not delivered again)."""

    def __init__(self, position: int = 0, stalls_to_skip: int = STALLS_TO_SKIP) -> None:
        self.position = self.saved = max(0, position)
        self.resumed_from: int | None = None
        self.duplicates = 0
        self.stalls_to_skip = stalls_to_skip
        self._stalled_at = -1  # the position at the last end of the read loop
        self._stalled_here = 0  # ... and how many in a row there
        self._skip_next = False  # skip the message after the position (it ends the read loop)

    def load(self, position: int) -> None:
        """Start again from ``position`` (as read from a file: already saved there)."""
        self.position = self.saved = max(0, position)

    def deliver(self, seq: int) -> bool:
        """A message at stream sequence ``seq`` arrived: whether to deliver it (it moves
        the position). One at or below the position is a duplicate, counted."""
        if seq <= self.position:
            self.duplicates += 1
            return False
        if self.resumed_from is None:
            self.resumed_from = seq
        self.position = seq
        return True

    def resume(self, first: int, last: int) -> Resume:
        """Before reading a stream that holds ``first``..``last``: a position past its
        end is forgotten (0); one before ``first`` moves to just before it, the messages
        in between missed."""
        if self.position > last:
            forgotten, self.position = self.position, 0
            return Resume(forgotten=forgotten)
        if self.position and first > self.position + 1:
            missed = first - self.position - 1
            self.position = first - 1
            return Resume(missed=missed)
        return Resume()

    def start(self, replay: Replay, last: int) -> int | None:
        """The stream sequence to read from: after the position, else as ``replay`` says
        (its last ``n`` messages, ``("from", sequence)``); None: from the stream's last
        message (``replay: last``)."""
        if self.position:
            return self.position + 1
        if replay == "last":
            return None
        if isinstance(replay, tuple):
            return replay[1]
        return max(1, last - int(replay) + 1)

    def read_loop_ended(self) -> bool:
        """The client library's read loop ended (its connection is made again). Ending
        ``stalls_to_skip`` times in a row at one position is a stored message it cannot
        parse, which every new connection would get first: True when the message after
        the position is to be skipped (:meth:`skip_unreadable`, once the stream is seen
        to hold it)."""
        if self.position != self._stalled_at:
            self._stalled_at, self._stalled_here = self.position, 0
        self._stalled_here += 1
        if self._stalled_here >= self.stalls_to_skip:
            self._stalled_here = 0
            self._skip_next = True
        return self._skip_next

    def skip_unreadable(self, last: int) -> int | None:
        """After :meth:`read_loop_ended` said so: the message after the position, skipped
        if the stream (``last``: its last sequence) holds it; its sequence, or None."""
        if not self._skip_next:
            return None
        self._skip_next = False
        if last <= self.position:
            return None
        self.position += 1
        self._stalled_at = self.position
        return self.position

    def skip_to(self, seq: int) -> bool:
        """Past message ``seq`` (:class:`ResetGuard` skipped it): whether the position
        moved (the message is missed, to be counted)."""
        if seq > self.position:
            self.position = seq
            return True
        return False


class ResetGuard:
    """Counts the client library's resets of an ordered consumer and says where each
    reset is to go (:meth:`reset_at`). nats-py's ordered consumer takes a stored message
    with a status line in its headers (``NATS/1.0 100 ...``: anyone allowed to publish on
    the subject can store one) for a control message, and recreates the consumer at that
    same message, again and again, thousands of consumers a second. After
    ``resets_to_skip`` resets at one sequence within ``within`` seconds, the reset goes
    past it."""

    def __init__(
        self,
        clock: Callable[[], float],
        resets_to_skip: int = RESETS_TO_SKIP,
        within: float = RESETS_WITHIN,
    ) -> None:
        self._clock = clock
        self.resets_to_skip = resets_to_skip
        self.within = within
        self._at = 0  # the sequence of the last resets
        self._count = 0  # ... how many in a row
        self._since = 0.0  # ... since when

    def reset_at(self, sseq: int | None) -> int | None:
        """Where a reset asked for at ``sseq`` is to go: ``sseq``, or ``sseq + 1`` when
        the consumer is in a loop on it (the message at ``sseq`` is then skipped)."""
        now = self._clock()
        if sseq is not None and sseq == self._at and now - self._since < self.within:
            self._count += 1
            if self._count >= self.resets_to_skip:
                self._at, self._count = sseq + 1, 0
                return sseq + 1
        else:
            self._at, self._count, self._since = sseq or 0, 1, now
        return sseq
