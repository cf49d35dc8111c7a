"""The NATS endpoint: publishes each message routed to it to its subject (into a
JetStream stream with ``stream``), and takes client messages from edges on its upstream
subject. Its connection is what a listener is to the other kinds
(:class:`NatsLinkListener`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets as _random
from collections.abc import Sequence
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from ...config.common import format_size
from ...config.model import EndpointSpec
from ...config.natsspec import HEADER_TYPE, NatsLink, NatsListen
from ...report import plural
from ..budget import Budget
from ..endpoints import ClientState, Endpoint
from ..frames import valid_utf8
from ..interfaces import ListenerKey
from ..stats import EndpointStats
from ..util import CountedLog, Throttled
from ..wire import Wire
from .connection import PENDING_BYTES, PENDING_MSGS, Connection, count_stall, describe
from .outbox import BINARY, TEXT, Outbox, StreamOutbox

log = logging.getLogger("veylor.nats")

# The fan-out frames once per wire: a NATS endpoint takes the payload as it is.
NATS_WIRE = Wire("nats", lambda payload, _is_text: payload)


async def _stream_problem(nc: NatsClient, listen: NatsListen, name: str) -> str | None:
    """Create the endpoint's stream ``name``; None once it exists and captures the
    subject, else what is wrong, for people."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import BadRequestError, NoStreamResponseError, ServiceUnavailableError

    js = nc.jetstream(timeout=5.0)
    config = StreamConfig(
        name=name,
        subjects=[listen.subject],
        max_msgs_per_subject=listen.max_msgs_per_subject,
        num_replicas=listen.replicas,
        storage=StorageType.FILE,
        duplicate_window=120.0,
    )
    try:
        await js.add_stream(config)
        return None
    except BadRequestError as exc:
        if exc.err_code != 10058:  # (not "the name is in use": a setting the server refuses)
            return f"cannot create it: {exc.description}"
    except (NoStreamResponseError, ServiceUnavailableError, nats.errors.NoRespondersError):
        return "JetStream is not enabled on the NATS servers (nats-server -js)"
    except Exception as exc:  # (a timeout while the cluster elects a leader, a lost connection)
        return f"cannot create it yet: {describe(exc)}"
    try:
        info = await js.stream_info(name)
    except Exception as exc:
        return f"cannot read it: {describe(exc)}"
    subjects = info.config.subjects or []
    if listen.subject not in subjects:
        return (
            f"it exists and does not capture {listen.subject} (it captures {', '.join(subjects) or 'nothing'}): "
            "name another stream, or delete this one"
        )
    return None


def _node_id() -> str:
    """A publishing connection's id: new for each, so an edge tells a restarted core
    (new id, sequence from 1) from lost messages."""
    return _random.token_hex(8)


class _Edges(ClientState):
    """The clients of a NATS endpoint seen as one: every edge's client messages arrive on
    its upstream subject (each edge applies its own routes' limits to its clients)."""

    def __init__(self, subject: str) -> None:
        self.label = f"NATS {subject}"
        self.transport = None


class NatsEndpoint(Endpoint):
    """Publishes each message routed to it to its subject, once, with the frame type, its
    node id and a sequence number in headers; takes client messages from edges on its
    upstream subject. It has no clients of its own."""

    wire = NATS_WIRE

    def __init__(
        self, spec: EndpointSpec, stats: EndpointStats | None = None, budget: Budget | None = None
    ) -> None:
        super().__init__(spec, stats, budget)
        listen = spec.listen
        if not isinstance(listen, NatsListen):
            raise TypeError(f"endpoint {spec.name} is not a NATS endpoint")
        self.subject = listen.subject
        self.node = _node_id()
        self.seq = 0
        self.outbox: Outbox
        if listen.stream:
            self.outbox = StreamOutbox(self.subject, spec.client_buffer, self.node, self._too_large)
        else:
            self.outbox = Outbox(self.subject, spec.client_buffer, True, self.node, too_large=self._too_large)
        self.link: NatsLinkListener | None = None
        self.edges = _Edges(listen.upstream_subject)
        self._full_log = CountedLog(log)

    def update(self, spec: EndpointSpec) -> None:
        super().update(spec)
        self.outbox.limit = spec.client_buffer

    def enqueue(self, frame: bytes | None, data: bytes, is_text: bool) -> bool:
        self.seq += 1
        stats = self.stats
        if not self.outbox.add(data, is_text, self.seq):
            stats.dropped += 1
            self._full_log.add(
                1,
                "endpoint %s: more than %s waiting to be published to NATS (client_buffer): messages dropped",
                self.name,
                format_size(self.spec.client_buffer),
            )
            return False
        stats.messages += 1
        stats.messages_out += 1
        stats.bytes_out += len(data)
        if self.scheduled:
            return False
        self.scheduled = True
        return True

    def flush(self) -> None:
        self.outbox.kick()

    def _too_large(self, size: int) -> None:
        self.stats.dropped += 1
        self._bad_log(
            "endpoint %s: NATS refused a message of %d bytes: larger than the server's max_payload "
            "(raise max_payload in nats-server's configuration)",
            self.name,
            size,
        )

    def status(self) -> dict[str, Any]:
        link = self.link.status() if self.link is not None else {"state": "connecting"}
        return {
            "state": link["state"],
            "url": link.get("url"),
            "last_error": link.get("last_error"),
            "waiting": len(self.outbox.items),
            "node": self.node,
            "sequence": self.seq,
            **self._stream_status(),
        }

    def _stream_status(self) -> dict[str, Any]:
        box = self.outbox
        if not isinstance(box, StreamOutbox):
            return {}
        return {
            "stream_ready": box.ready.is_set(),
            "acked": box.acked,
            "resent": box.resent,
            "last_failure": box.last_failure,
        }

    def stop(self) -> None:
        self._full_log.flush()

    async def from_edges(self, msg: Msg) -> None:
        """A client message from an edge (its upstream subject): to the sources of this
        endpoint's routes with ``upstream: true``, as from one client."""
        data = msg.data
        if len(data) > self.spec.max_message_size:
            self.malformed(
                self.edges.label, ValueError(f"a message of {len(data)} bytes exceeds max_message_size")
            )
            return
        kind = (msg.headers or {}).get(HEADER_TYPE)
        is_text = kind == TEXT if kind in (TEXT, BINARY) else valid_utf8(data)
        if is_text and not valid_utf8(data):
            self.stats.invalid_utf8 += 1
            self._bad_log(
                "endpoint %s: a text message from %s is not UTF-8: not forwarded", self.name, self.edges.label
            )
            return
        self.from_client(self.edges, data, is_text)


class NatsLinkListener:
    """A NATS endpoint's connection (what a listener is to the other kinds): publishes
    its endpoint's outbox and subscribes to its upstream subject."""

    def __init__(self, key: ListenerKey) -> None:
        self.key = key
        _, listen = key
        self.listen: NatsListen = listen
        self.link: NatsLink = listen.link
        self.subject: str = listen.subject
        self.upstream_subject: str = listen.upstream_subject
        self.endpoint: NatsEndpoint | None = None
        self.conn: Connection | None = None
        self.sub: Any = None
        self.accepting = True
        self.stream_task: asyncio.Task[None] | None = None
        self.generation = 0  # of the connection's client that self.sub belongs to

    def attach(self, endpoints: Sequence[Endpoint]) -> None:
        (endpoint,) = endpoints  # (one endpoint per subject: the loader sees to it)
        if not isinstance(endpoint, NatsEndpoint):
            raise TypeError(f"endpoint {endpoint.name} is not a NATS endpoint")
        old, self.endpoint = self.endpoint, endpoint
        endpoint.link = self
        if self.conn is not None and old is not endpoint:
            endpoint.outbox.run(self.conn)

    async def start(self) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            raise RuntimeError(f"{self.describe()}: started before an endpoint was attached")
        self.conn = Connection(
            self.link,
            f"endpoint {endpoint.name}",
            f"veylor endpoint {endpoint.name}",
            self._up,
            lambda: None,
            received=lambda: self.endpoint.stats.received if self.endpoint is not None else 0,
            on_stalled=self._stalled,
        )
        endpoint.outbox.run(self.conn)
        self.conn.start()

    def _stalled(self, reason: str) -> None:
        if self.endpoint is not None:
            count_stall(self.endpoint.stats, reason)

    async def _up(self) -> None:
        conn = self.conn
        nc = conn.nc if conn is not None else None
        if conn is None or nc is None:  # (closed meanwhile)
            return
        if self.generation != conn.generation:  # a new client (the last one stalled): subscribe again
            self.generation, self.sub = conn.generation, None
        box = self.endpoint.outbox if self.endpoint is not None else None
        if isinstance(box, StreamOutbox):
            box.stream_lost = lambda: self._ensure(conn, box)
            self._ensure(conn, box)
        if self.sub is None and self.accepting:
            self.sub = await nc.subscribe(
                self.upstream_subject,
                cb=self._from_edges,
                pending_msgs_limit=PENDING_MSGS,
                pending_bytes_limit=PENDING_BYTES,
            )
        if self.endpoint is not None:
            self.endpoint.outbox.kick()

    def _ensure(self, conn: Connection, box: StreamOutbox) -> None:
        if not box.ready.is_set() and self.stream_task is None and self.accepting:
            self.stream_task = asyncio.get_running_loop().create_task(self._ensure_stream(conn, box))

    async def _ensure_stream(self, conn: Connection, box: StreamOutbox) -> None:
        """Create the stream (or find it, capturing the subject), retrying until it is there:
        until then the messages wait in the outbox."""
        listen = self.listen
        stream = listen.stream
        if stream is None:
            return
        warn = Throttled(log, interval=60.0)
        who = self.endpoint.name if self.endpoint is not None else listen.subject
        try:
            while True:
                nc = conn.nc
                if nc is not None and conn.connected:
                    problem = await _stream_problem(nc, listen, stream)
                    if problem is None:
                        log.info("endpoint %s: publishing into JetStream stream %s", who, listen.stream)
                        box.ready.set()
                        box.wake.set()
                        return
                    box.last_failure = problem
                    warn(
                        "endpoint %s: JetStream stream %s: %s (messages wait meanwhile)",
                        who,
                        listen.stream,
                        problem,
                    )
                await asyncio.sleep(1.0)
        finally:
            warn.cancel()
            self.stream_task = None

    async def _from_edges(self, msg: Msg) -> None:
        if self.endpoint is not None and self.accepting:
            await self.endpoint.from_edges(msg)

    def stop_accepting(self) -> None:
        self.accepting = False

    async def close(self) -> None:
        self.accepting = False
        if self.stream_task is not None:
            self.stream_task.cancel()
        conn = self.conn
        if conn is None:
            return
        ep = self.endpoint
        if ep is not None:
            lost = await ep.outbox.close(conn)
            if lost:
                ep.stats.dropped += lost
                log.warning(
                    "endpoint %s: %s not published to NATS before it closed", ep.name, plural(lost, "message")
                )
        await conn.close()

    def status(self) -> dict[str, Any]:
        return self.conn.status() if self.conn is not None else {"state": "connecting"}

    def describe(self) -> str:
        who = f" for {self.endpoint.name}" if self.endpoint is not None else ""
        return f"NATS subject {self.subject} at {', '.join(self.link.safe_servers)}{who}"
