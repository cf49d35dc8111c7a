"""A NATS source's JetStream side: an ordered consumer read from after the last message
delivered (its position, kept in ``position_file`` across restarts), and two guards of
its own against a consumer that stops delivering: :meth:`StreamReader._guard_resets`
(a consumer in a loop on one message) and :meth:`StreamReader._watch_stream` (silence
while the stream holds more). What each decides is in :mod:`.position`, pure; this
module does the I/O: the library's calls, the file, the log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg

from ...config.access import read_small
from ...config.natsspec import NatsSourceSpec
from .. import compat
from ..stats import SourceStats
from ..util import Throttled
from .connection import PENDING_BYTES, PENDING_MSGS, Connection, describe
from .position import PositionError, ResetGuard, StreamPosition, format_position, parse_position

log = logging.getLogger("veylor.nats")

STREAM_CHECK = 5.0  # seconds between two looks at whether a stream source is stuck
SAVE_EVERY = 1.0  # seconds between two writes of a source's position_file


def read_position(path: str, who: str, stream: str) -> int:
    """The sequence in ``stream`` a position file holds (0: none, another stream's, or
    unreadable: said so)."""
    try:
        text = read_small(path).decode("utf-8", "replace")  # (a regular file, size-capped)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("source %s: cannot read position_file %s: %s", who, path, exc.strerror or exc)
        return 0
    try:
        return parse_position(text, stream)
    except PositionError as exc:
        log.warning("source %s: position_file %s %s: starting as replay says", who, path, exc)
        return 0


class StreamReader:
    """Reads a source's JetStream stream through an ordered consumer (in order, no gap:
    the library recreates it after a failover), delivering each message once
    (``deliver``: the source's message path) and keeping its :class:`StreamPosition`."""

    def __init__(
        self,
        name: str,
        spec: NatsSourceSpec,
        stats: SourceStats,
        deliver: Callable[[Msg], Awaitable[None]],
    ) -> None:
        self.name = name
        self.spec = spec
        self.stats = stats
        self._deliver = deliver
        self.pos = StreamPosition()
        self.sub: Any = None  # the library's subscription, once subscribed
        self._subscriber: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._saver: asyncio.TimerHandle | None = None
        self._save_log = Throttled(log)
        self.load(spec)

    def load(self, spec: NatsSourceSpec) -> None:
        """The position kept in ``spec``'s position_file (0: none, or no stream)."""
        self.spec = spec
        position = 0
        if spec.stream and spec.position_file:
            position = read_position(spec.position_file, self.name, spec.stream)
        self.pos.load(position)

    def moved(self, spec: NatsSourceSpec) -> None:
        """A new spec (a reload): another stream starts from its own file; a position
        file that moved gets the position at once."""
        moved = spec.position_file != self.spec.position_file
        if spec.stream != self.spec.stream:  # another stream: its sequence numbers are its own
            self.load(spec)
        self.spec = spec
        if moved and spec.stream and spec.position_file:
            self.pos.saved = -1  # (the new file gets the position now, whatever the old one had)
            self.save()

    def status(self) -> dict[str, Any]:
        pos = self.pos
        return {
            "stream": self.spec.stream,
            "position": pos.position,
            "resumed_from": pos.resumed_from,
            "duplicates": pos.duplicates,
        }

    def subscribe(self, conn: Connection) -> None:
        """Subscribe (in a task: the stream may not be there yet) unless subscribed."""
        if self.sub is None and self._subscriber is None:
            self._subscriber = asyncio.get_running_loop().create_task(self._subscribe(conn))

    def stop(self) -> None:
        self.sub = None
        for task in (self._subscriber, self._watcher):
            if task is not None:
                task.cancel()
        self._subscriber = self._watcher = None
        if self._saver is not None:
            self._saver.cancel()
            self._saver = None
        self.save()
        self._save_log.cancel()

    async def _subscribe(self, conn: Connection) -> None:
        """An ordered consumer of the stream, from after the last message delivered;
        retried until the stream is there."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        spec = self.spec
        stream = spec.stream or ""
        warn = Throttled(log, interval=60.0)
        try:
            while self.sub is None:
                nc = conn.nc
                if nc is None or not conn.connected:
                    await asyncio.sleep(1.0)
                    continue
                js = nc.jetstream(timeout=5.0)
                try:
                    info = await js.stream_info(stream)
                    self._check_position(info.state.first_seq, info.state.last_seq)
                    self._skip_unreadable(info.state.last_seq)
                    start = self.pos.start(spec.replay, info.state.last_seq)
                    if start is None:
                        config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST)
                    else:
                        config = ConsumerConfig(
                            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
                        )
                    self.sub = await js.subscribe(
                        spec.subject,
                        stream=stream,
                        ordered_consumer=True,
                        idle_heartbeat=1.0,
                        config=config,
                        cb=self._message,
                        pending_msgs_limit=PENDING_MSGS,
                        pending_bytes_limit=PENDING_BYTES,
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    warn(
                        "source %s: cannot read JetStream stream %s yet: %s (retrying)",
                        self.name,
                        stream,
                        describe(exc),
                    )
                    await asyncio.sleep(1.0)
                    continue
                self.pos.resumed_from = start
                self._guard_resets(self.sub)
                log.info(
                    "source %s: reading JetStream stream %s from %s",
                    self.name,
                    stream,
                    f"sequence {start}" if start else "its last message",
                )
                if self._watcher is None:
                    self._watcher = asyncio.get_running_loop().create_task(self._watch_stream(conn))
        finally:
            warn.cancel()
            self._subscriber = None

    def _guard_resets(self, sub: Any) -> None:
        """Hook a :class:`ResetGuard` into the library's ordered consumer: a consumer in a
        loop on one stored message (one the library takes for a control message) goes
        past it, the message counted as missed. (This reaches into the library's
        subscription, through :mod:`..compat`. Should a release rename what it hooks,
        :meth:`_watch_stream` still notices the silence and reads the stream again, but
        cannot get past such a message.)"""
        jsi = compat.ordered_consumer(sub)
        if jsi is None:
            return
        guard = ResetGuard(time.monotonic)

        def reset_at(sseq: int | None) -> int | None:
            at = guard.reset_at(sseq)
            if sseq is not None and at != sseq:
                if self.pos.skip_to(sseq):
                    self.stats.gaps += 1
                log.warning(
                    "source %s: stream %s: message %d cannot be read (the client library takes it for "
                    "a control message): skipped, counted as missed",
                    self.name,
                    self.spec.stream,
                    sseq,
                )
            return at

        compat.guard_resets(jsi, reset_at)

    async def _watch_stream(self, conn: Connection) -> None:
        """Every ``STREAM_CHECK`` seconds: if the stream holds messages past the position
        and none came since the last look, read it again from after the position (a new
        consumer). Nothing is skipped here (a failover can take that long); a consumer in
        a loop on one message is :meth:`_guard_resets`'s."""
        pos = self.pos
        seen = pos.position
        while True:
            await asyncio.sleep(STREAM_CHECK)
            nc = conn.nc
            if pos.position != seen or self.sub is None or nc is None or not conn.connected:
                seen = pos.position
                continue
            try:
                info = await nc.jetstream(timeout=5.0).stream_info(self.spec.stream or "")
            except Exception:  # (the cluster is failing over: next time)
                continue
            if info.state.last_seq <= pos.position:
                continue
            log.warning(
                "source %s: stream %s holds messages past %d and none came for %.0fs: reading it again",
                self.name,
                self.spec.stream,
                pos.position,
                STREAM_CHECK,
            )
            sub, self.sub = self.sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            self.subscribe(conn)

    def _check_position(self, first: int, last: int) -> None:
        """Before resuming: a position past the stream's end (another stream of that name,
        or a damaged file) is forgotten, and messages the stream discarded (its limits)
        before this source read them are counted as missed."""
        resume = self.pos.resume(first, last)
        if resume.forgotten:
            log.warning(
                "source %s: its position (%d) is past the end of stream %s (%d): starting as replay says",
                self.name,
                resume.forgotten,
                self.spec.stream,
                last,
            )
        elif resume.missed:
            self.stats.gaps += resume.missed
            log.warning(
                "source %s: %d messages were discarded by stream %s (its limits) before they were read; "
                "resuming at %d",
                self.name,
                resume.missed,
                self.spec.stream,
                first,
            )

    def read_loop_ended(self) -> None:
        """The connection's read loop ended: a stored message it cannot parse, when it
        happens again and again at one position (:meth:`StreamPosition.read_loop_ended`)."""
        self.pos.read_loop_ended()

    def _skip_unreadable(self, last: int) -> None:
        skipped = self.pos.skip_unreadable(last)
        if skipped is None:
            return
        self.stats.gaps += 1
        log.warning(
            "source %s: stream %s: message %d stops the client library from reading (it cannot parse it): "
            "skipped, counted as missed",
            self.name,
            self.spec.stream,
            skipped,
        )

    async def _message(self, msg: Msg) -> None:
        if not self.pos.deliver(msg.metadata.sequence.stream):
            return
        if self.spec.position_file and self._saver is None:
            self._saver = asyncio.get_running_loop().call_later(SAVE_EVERY, self.save)
        await self._deliver(msg)

    def save(self) -> None:
        """Keep the position in ``position_file`` (a rename: never half written)."""
        self._saver = None
        path = self.spec.position_file
        pos = self.pos
        if not path or not self.spec.stream or pos.position == pos.saved:
            return
        try:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as fh:
                fh.write(format_position(self.spec.stream, pos.position))
            os.replace(tmp, path)
            pos.saved = pos.position
        except OSError as exc:
            self._save_log(
                "source %s: cannot write position_file %s: %s", self.name, path, exc.strerror or exc
            )
