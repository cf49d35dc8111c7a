"""What a NATS component publishes, waiting for its connection: publishing never blocks
the fan-out. Messages wait in an :class:`Outbox` (bounded; beyond it, messages are
dropped and counted), drained by one task per connection while it is connected, never
by a task per message. With a JetStream stream, a :class:`StreamOutbox` publishes with
acknowledgements: in order, exactly once into the stream.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable
from typing import Any

import nats

from ...config.natsspec import HEADER_NODE, HEADER_SEQ, HEADER_TYPE
from ..stats import SourceStats
from .connection import CLOSE_TIMEOUT, Connection, describe

YIELD_EVERY = 256  # messages published from a backlog between two turns of the event loop (about 2 ms)
ITEM_COST = 100  # bytes a message waiting to be published costs beside its payload
TEXT, BINARY = "text", "binary"


class Outbox:
    """Messages waiting to be published to one subject, in order, bounded (``limit``:
    bytes, each message counted with ``ITEM_COST`` more, or messages), drained by one
    task while the connection is up. :meth:`add` says False when a message does not fit
    (the caller counts it). Headers are made as each message goes: the frame type, and
    with a ``node``, the node id and the message's sequence number."""

    def __init__(
        self,
        subject: str,
        limit: int,
        by_bytes: bool,
        node: str | None = None,
        stats: SourceStats | None = None,
        too_large: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.subject = subject
        self.node = node
        self.stats = stats  # a source's: ``sent_up`` counts what went out
        self.too_large = too_large  # a message the server refused as larger than its max_payload
        self.items: collections.deque[tuple[bytes, bool, int]] = collections.deque()
        self.size = 0
        self.limit = limit
        self.by_bytes = by_bytes
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def cost(self, data: bytes) -> int:
        """What one waiting message counts against ``limit``."""
        return len(data) + ITEM_COST if self.by_bytes else 1

    def add(self, data: bytes, is_text: bool, seq: int = 0) -> bool:
        cost = self.cost(data)
        if self.size + cost > self.limit and self.items:
            return False
        self.items.append((data, is_text, seq))
        self.size += cost
        return True

    def kick(self) -> None:
        if self.items and not self.wake.is_set():
            self.wake.set()

    def run(self, conn: Connection) -> None:
        """Start draining into ``conn`` (once connected)."""
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self._drain(conn), name=f"veylor-nats-out-{conn.who}"
            )

    async def _drain(self, conn: Connection) -> None:
        items = self.items
        node = self.node
        sent = 0
        while True:
            await self.wake.wait()
            self.wake.clear()
            while items and conn.connected:
                sent += 1
                if sent % YIELD_EVERY == 0:  # a backlog (NATS was away): the loop serves clients between
                    await asyncio.sleep(0)
                    continue
                data, is_text, seq = items[0]
                nc = conn.nc
                if nc is None:  # (not while connected)
                    break
                headers = {HEADER_TYPE: TEXT if is_text else BINARY}
                if node is not None:
                    headers[HEADER_NODE] = node
                    headers[HEADER_SEQ] = str(seq)
                try:
                    await nc.publish(self.subject, data, headers=headers)
                except (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionReconnectingError):
                    break  # disconnected meanwhile: it waits here, bounded, for the reconnection
                except nats.errors.MaxPayloadError:
                    self.too_large(len(data))  # larger than the server takes: never will be
                except nats.errors.ConnectionClosedError:
                    return
                else:
                    if self.stats is not None:
                        self.stats.sent_up += 1
                items.popleft()
                self.size -= self.cost(data)

    async def close(self, conn: Connection) -> int:
        """Publish what waits (bounded in time), then stop: the number of messages left
        unpublished (the caller counts them)."""
        task, self.task = self.task, None
        if task is None:
            return self._discard()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                while self.items and conn.connected:
                    self.wake.set()
                    await asyncio.sleep(0.01)
                if conn.nc is not None and conn.connected:
                    await conn.nc.flush(timeout=math.ceil(CLOSE_TIMEOUT))
        except Exception:  # (timed out, or the connection went: what is left is lost)
            pass
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return self._discard()

    def _discard(self) -> int:
        n = len(self.items)
        self.items.clear()
        self.size = 0
        return n


class StreamOutbox(Outbox):
    """An outbox that publishes into a JetStream stream with acknowledgements: in order,
    exactly once, nothing lost while the core runs.

    Up to ``WINDOW`` messages are in flight. Each carries ``Nats-Msg-Id`` (node and
    sequence number: the stream drops a second copy) and ``Nats-Expected-Last-Msg-Id``
    (the one before it: the stream refuses a message whose predecessor did not land,
    so a loss can never reorder the stream). A message leaves the outbox when the stream
    acknowledges it; a refusal, a missing acknowledgement or a reconnection sends every
    message in flight again, in order, after the last acknowledged one."""

    WINDOW = 256
    ACK_TIMEOUT = 5.0  # seconds for the oldest message in flight to be acknowledged
    RETRY = 0.2  # seconds between a failure and sending again

    def __init__(self, subject: str, limit: int, node: str, too_large: Callable[[int], None]) -> None:
        super().__init__(subject, limit, True, node, too_large=too_large)
        self.stream_node = node  # (every message carries it: its id in the stream)
        self.acked = 0
        self.resent = 0  # messages sent again after a failure
        self.last_failure: str | None = None
        self.ready = asyncio.Event()  # the stream exists (set by the listener)
        self.stream_lost: Callable[[], None] = lambda: None  # (the listener makes it again)

    async def _drain(self, conn: Connection) -> None:
        items = self.items
        node = self.stream_node
        inflight: collections.deque[asyncio.Future[Any]] = collections.deque()
        while True:
            if not inflight:
                await self.wake.wait()
                self.wake.clear()
                if not items:
                    continue
            nc = conn.nc
            if nc is None or not conn.connected or not self.ready.is_set():
                await asyncio.sleep(self.RETRY)
                self.wake.set()
                continue
            js = nc.jetstream()
            # The first message in flight follows one the stream acknowledged: it expects
            # nothing (a message someone else put in the stream must not block it for
            # good); each one after it expects the one before it.
            previous = msg_id(node, items[len(inflight) - 1][2]) if inflight else None
            try:
                while len(inflight) < min(len(items), self.WINDOW):
                    index = len(inflight)
                    data, is_text, seq = items[index]
                    this_id = msg_id(node, seq)
                    headers = {
                        HEADER_TYPE: TEXT if is_text else BINARY,
                        HEADER_NODE: node,
                        HEADER_SEQ: str(seq),
                        "Nats-Msg-Id": this_id,
                    }
                    if previous is not None:
                        headers["Nats-Expected-Last-Msg-Id"] = previous
                    try:
                        fut = await js.publish_async(self.subject, data, headers=headers)
                    except nats.errors.MaxPayloadError:  # larger than the server takes: never will be
                        del items[index]
                        self.size -= self.cost(data)
                        self.too_large(len(data))
                        continue
                    inflight.append(fut)
                    previous = this_id
                if not inflight:
                    continue
                # (asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result
                # when the acknowledgement lands as a cancellation arrives, and the
                # cancellation is lost: a shutdown under load waited for this loop for ever.)
                async with asyncio.timeout(self.ACK_TIMEOUT):
                    await asyncio.shield(inflight[0])
            except Exception as exc:  # refused, not acknowledged in time, disconnected
                self.last_failure = describe(exc)
                self.resent += len(inflight)
                for fut in inflight:
                    fut.cancel()
                inflight.clear()
                if stream_gone(exc):  # deleted, or not there yet: made again before anything goes
                    self.ready.clear()
                    self.stream_lost()
                await asyncio.sleep(self.RETRY)
                self.wake.set()
                continue
            inflight.popleft()
            data, _, seq = items.popleft()
            self.size -= self.cost(data)
            self.acked += 1
            if items:
                self.wake.set()


def stream_gone(exc: BaseException) -> bool:
    """Whether a publish failed because no stream took it (deleted, or its leader not
    elected yet)."""
    from nats.js.errors import APIError, NoStreamResponseError

    if isinstance(exc, NoStreamResponseError | nats.errors.NoRespondersError):
        return True
    return isinstance(exc, APIError) and exc.err_code == 10059  # stream not found


def msg_id(node: str, seq: int) -> str:
    return f"{node}-{seq}"
