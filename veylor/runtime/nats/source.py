"""The NATS source: subscribes to a subject (or reads a JetStream stream,
:mod:`.stream`) and hands each message to the fan-out, its frame type restored; follows
each publisher's sequence numbers (:mod:`.sequence`) to count what was lost on the way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from ...config.natsspec import HEADER_NODE, HEADER_SEQ, HEADER_TYPE, NatsSourceSpec
from ...report import plural
from ..frames import valid_utf8
from ..interfaces import Dispatch
from ..stats import SourceStats
from ..util import CountedLog, Throttled
from .connection import PENDING_BYTES, PENDING_MSGS, READ_LOOP, Connection, count_stall
from .outbox import BINARY, TEXT, Outbox
from .sequence import Seen, SequenceTracker
from .stream import StreamReader

log = logging.getLogger("veylor.nats")

MAX_SUBJECTS_TRACKED = 10_000  # subjects a source keeps sequence numbers for (wildcards)


class NatsSource:
    """Subscribes to a subject and hands each message to the fan-out, its frame type
    restored; counts the gaps in each publisher's sequence numbers. With a ``stream``,
    its :class:`~.stream.StreamReader` reads the stream instead of a subscription."""

    def __init__(
        self,
        spec: NatsSourceSpec,
        dispatch: Dispatch,
        on_disconnect: Callable[[Any], None] = lambda s: None,
        stats: SourceStats | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.stats = stats if stats is not None else SourceStats()
        self._dispatch = dispatch
        self._on_disconnect = on_disconnect
        self.conn: Connection | None = None
        self.subject_sub: Any = None  # the library's subscription to the subject (without a stream)
        self.outbox = Outbox(
            spec.upstream_subject or "",
            spec.upstream_queue,
            False,
            stats=self.stats,
            too_large=self._too_large,
        )
        self.sequences = SequenceTracker(time.monotonic, MAX_SUBJECTS_TRACKED)
        self.stream = StreamReader(self.name, spec, self.stats, self._message)
        self._gap_log = CountedLog(log)
        self._outlier_log = Throttled(log, interval=60.0)
        self._invalid_log = Throttled(log)
        self._drop_log = Throttled(log)
        self._publisher_log = Throttled(log, logging.INFO, 60.0)
        self.generation = 0  # of the connection's client that the subscription belongs to

    @property
    def state(self) -> str:
        conn = self.conn
        return "stopped" if conn is None else conn.state

    @property
    def sub(self) -> Any:
        """The library's subscription this source reads (the stream's, with a stream), or
        None while it is not subscribed."""
        return self.stream.sub if self.spec.stream else self.subject_sub

    @property
    def position(self) -> int:
        """The stream sequence of the last message delivered (0: none yet, or no stream)."""
        return self.stream.pos.position

    @property
    def resumed_from(self) -> int | None:
        """The stream sequence this run started reading at (None: not yet, or no stream)."""
        return self.stream.pos.resumed_from

    def status(self) -> dict[str, Any]:
        status = self.conn.status() if self.conn is not None else {"state": "stopped"}
        status["url"] = f"{status.get('url', '')} {self.spec.subject}"
        if self.spec.stream:
            if status["state"] == "connected" and self.stream.sub is None:
                status["state"] = "subscribing"  # (connected; the stream is not there yet)
            status.update(self.stream.status())
        return status

    def start(self) -> None:
        self.conn = Connection(
            self.spec.link,
            f"source {self.name}",
            f"veylor source {self.name}",
            self._up,
            self._down,
            received=lambda: self.stats.messages_in,
            on_stalled=self._stalled,
        )
        self.outbox.run(self.conn)
        self.conn.start()
        self.stats.attempts += 1

    async def restart(self, spec: NatsSourceSpec) -> None:
        await self.stop()
        self.stream.moved(spec)
        self.spec = spec
        self.outbox.limit = spec.upstream_queue
        self.outbox.subject = spec.upstream_subject or ""
        self.start()

    async def stop(self) -> None:
        conn, self.conn = self.conn, None
        self.subject_sub = None
        self.stream.stop()
        if conn is not None:
            lost = await self.outbox.close(conn)
            await conn.close()
            if lost:
                self.stats.queued_dropped += lost
                log.warning(
                    "source %s: %s not sent to NATS before it stopped",
                    self.name,
                    plural(lost, "client message"),
                )
        self._gap_log.flush()

    async def _up(self) -> None:
        conn = self.conn
        nc = conn.nc if conn is not None else None
        if conn is None or nc is None:  # (stopped meanwhile)
            return
        self.stats.connects += 1
        if self.generation != conn.generation:  # a new client (the last one stalled): subscribe again
            self.generation, self.subject_sub, self.stream.sub = conn.generation, None, None
        if self.spec.stream:
            self.stream.subscribe(conn)
        elif self.subject_sub is None:
            self.subject_sub = await nc.subscribe(
                self.spec.subject,
                queue=self.spec.queue or "",
                cb=self._message,
                pending_msgs_limit=PENDING_MSGS,
                pending_bytes_limit=PENDING_BYTES,
            )
        self.outbox.kick()

    def _down(self) -> None:
        self.stats.disconnects += 1
        self._on_disconnect(self)

    def _stalled(self, reason: str) -> None:
        """The connection stopped reading (it is made again): counted; reading a stream,
        the read loop's end may be a stored message the library cannot parse
        (:meth:`.StreamReader.read_loop_ended`)."""
        count_stall(self.stats, reason)
        if self.spec.stream and reason == READ_LOOP:
            self.stream.read_loop_ended()

    async def _message(self, msg: Msg) -> None:
        data = msg.data
        stats = self.stats
        stats.messages_in += 1
        stats.bytes_in += len(data)
        headers = msg.headers
        if headers:
            seq = headers.get(HEADER_SEQ)
            if seq is not None:
                self._sequence(msg.subject, headers.get(HEADER_NODE), seq)
            kind = headers.get(HEADER_TYPE)
            if kind != TEXT and kind != BINARY:  # (not a type Veylor writes: told by the bytes)
                kind = None
        else:
            kind = None
        if len(data) > self.spec.max_message_size:
            stats.oversize += 1
            self._drop_log(
                "source %s: dropped a message of %d bytes on %s: larger than max_message_size",
                self.name,
                len(data),
                msg.subject,
            )
            return
        if kind is None:
            is_text = valid_utf8(data)  # (not from Veylor: text if it reads as text)
        else:
            is_text = kind != BINARY
            if is_text and not valid_utf8(data):
                stats.invalid_utf8 += 1
                self._invalid_log(
                    "source %s: dropped a text message of %d bytes on %s that is not valid UTF-8",
                    self.name,
                    len(data),
                    msg.subject,
                )
                return
        self._dispatch(self.name, data, is_text)

    def _sequence(self, subject: str, node: str | None, seq_text: str) -> None:
        """Follow the publisher's sequence numbers on ``subject``
        (:class:`~.sequence.SequenceTracker`): a jump its rate explains is that
        many messages lost, counted and logged; one it does not explain, a message under
        another node id, and late ones are not followed (one forged message changes
        nothing), until several in a row agree on a new sequence (a restarted
        publisher: not a loss). Only plain decimal numbers count (``int()`` would take
        "1_000" and other scripts' digits)."""
        if not (seq_text.isascii() and seq_text.isdigit() and len(seq_text) <= 19):
            return
        verdict = self.sequences.observe(subject, node, int(seq_text))
        seen = verdict.seen
        if seen is Seen.NEXT or seen is Seen.FIRST:
            pass
        elif seen is Seen.LOSS:
            self.stats.gaps += verdict.n
            self._gap_log.add(
                verdict.n,
                "source %s: messages lost between the publisher and here (gaps in its sequence on %s)",
                self.name,
                subject,
            )
        elif seen is Seen.LATE:
            self.stats.out_of_order += 1
        elif seen is Seen.IMPLAUSIBLE:
            self._outlier_log(
                "source %s: a message on %s is %d ahead in its publisher's sequence, more than the "
                "publisher's rate can explain (forged?): not counted as missed; still following the "
                "publisher's sequence",
                self.name,
                subject,
                verdict.n,
            )
        elif seen is Seen.NEW:
            self.stats.publisher_changes += 1
            if verdict.new_id:
                self._publisher_log(
                    "source %s: a new publisher on %s (it restarted, or another took over)",
                    self.name,
                    subject,
                )
            else:
                self._publisher_log(
                    "source %s: the publisher's sequence on %s moved by %+d and the messages after it "
                    "agree (it restarted): following it, not counted as missed",
                    self.name,
                    subject,
                    verdict.n,
                )
        if verdict.dropped:
            self.stats.outliers += verdict.dropped
            self._outlier_log(
                "source %s: %s on %s did not fit the publisher's sequence and the messages after them "
                "did not follow them (forged, or another publisher's): delivered, not counted",
                self.name,
                plural(verdict.dropped, "message"),
                subject,
            )

    def _too_large(self, size: int) -> None:
        self.stats.queued_dropped += 1
        self._drop_log(
            "source %s: NATS refused a client message of %d bytes: larger than the server's max_payload",
            self.name,
            size,
        )

    def send(self, data: bytes, is_text: bool) -> None:
        """A client's message to the core's endpoint (its upstream subject), queued while
        disconnected (bounded by ``upstream_queue``)."""
        subject = self.spec.upstream_subject
        if subject is None:  # (the loader refuses routes that would send here)
            self.stats.queued_dropped += 1
            return
        if not self.outbox.add(data, is_text):
            self.stats.queued_dropped += 1
            self._drop_log(
                "source %s: %s client messages wait for NATS (upstream_queue): dropped one",
                self.name,
                self.spec.upstream_queue,
            )
            return
        self.outbox.kick()
