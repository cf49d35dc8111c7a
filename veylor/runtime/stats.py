"""Counters that outlive the objects that increment them: the seed of the metrics registry.

Each source, endpoint and route has a small stats object, held here by name and handed
to the component that increments it (plain integer attributes: an increment on the hot
path is one ``STORE_ATTR``, no lock, no label lookup). A source restarted by a reload,
or an endpoint rebound to a new address, gets the same object back: its totals go on.
A component removed from the configuration takes its stats with it.

:meth:`Stats.snapshot` is the one reader: a JSON-able view of every counter (rates are
for readers to compute from two snapshots).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from operator import attrgetter
from typing import Any


class _Counters:
    """Integer counters: the fields of a slotted dataclass, all starting at 0 (typed, so
    that a counter misspelt is an error mypy finds; slotted, so that an increment is one
    ``STORE_ATTR`` and a misspelt one at run time an ``AttributeError``)."""

    __slots__: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        names = self.__slots__
        return dict(zip(names, attrgetter(*names)(self), strict=True))


@dataclass(slots=True, eq=False)
class SourceStats(_Counters):
    """Counters of one source (any kind)."""

    attempts: int = 0  # connection attempts
    bytes_in: int = 0
    connects: int = 0  # attempts that connected
    disconnects: int = 0  # connections that ended (any way) after connecting
    gaps: int = 0  # messages lost before they reached it: gaps in a publisher's sequence (NATS)
    invalid_utf8: int = 0  # text messages from the upstream that were not UTF-8 (dropped)
    messages_in: int = 0  # messages from the upstream
    out_of_order: int = 0  # messages whose sequence number was not above the last one (NATS)
    outliers: int = 0  # messages whose sequence number fitted no publisher's, never confirmed (NATS)
    oversize: int = 0  # messages larger than max_message_size (dropped; NATS)
    publisher_changes: int = 0  # a new publisher (or sequence) took over a subject: not a gap (NATS)
    queued_dropped: int = 0  # client messages dropped: the upstream was down or not reading
    sent_up: int = 0  # client messages sent to the upstream
    stalled_no_pong: int = 0  # connections made again: no message, no PONG for stall_timeout (NATS)
    stalled_read_loop: int = 0  # ... the client library's read loop had ended (NATS)


class SourceClock:
    """When a source's last message came, to the second, at no cost per message: the
    runtime's tick compares ``messages_in`` with what it saw a second before."""

    __slots__ = ("last_message_at", "seen")

    def __init__(self) -> None:
        self.last_message_at: float | None = None  # wall clock
        self.seen = 0


@dataclass(slots=True, eq=False)
class EndpointStats(_Counters):
    """Counters of one endpoint (any kind). Deliveries are a message times a client."""

    accepted: int = 0  # clients accepted
    bad_frames: int = 0  # clients closed for breaking their framing
    bytes_out: int = 0
    caught_up: int = 0  # clients behind that were given the latest of each key (slow_client: conflate)
    compression_none: int = 0  # clients of a compression: shared endpoint that offered no deflate
    compression_params: int = 0  # ... that asked for a smaller window: the plain frame for them
    compression_shared: int = 0  # ... that take the shared compressed frame
    control_closed: int = 0  # clients closed for flooding pings (or not reading the pongs)
    discarded: int = 0  # messages from clients with no upstream route
    dropped: int = 0  # deliveries not made: the client was over client_buffer (slow_client: drop)
    handshake_timeouts: int = 0  # connections dropped for not completing their handshake in time
    invalid_utf8: int = 0  # clients closed for sending text that is not UTF-8
    keepalive_closed: int = 0  # clients closed for answering no ping
    lag_closed: int = 0  # clients disconnected for being behind on more keys than configured (conflate)
    lost_slow: int = 0  # deliveries not made: the client was being disconnected for being slow
    memory_closed: int = 0  # ... of which disconnected (slow_client: disconnect)
    memory_limited: int = 0  # clients given their policy for the process-wide limits.buffered
    messages: int = 0  # messages the endpoint wrote to its clients, each counted once
    messages_out: int = 0  # deliveries made
    pending_evicted: int = 0  # pending handshakes closed to make room for a new connection (max_pending)
    rate_closed: int = 0  # clients closed for staying over their upstream rate (over_rate: close)
    received: int = 0  # messages from clients
    refused: int = 0  # clients refused: max_clients reached
    refused_no_token: int = 0  # ... no token where auth is on (401)
    refused_origin: int = 0  # ... an Origin not allowed (403), or none where one is required
    refused_path: int = 0  # ... no endpoint at the path asked for (404; counted on the port's first endpoint)
    refused_peer: int = 0  # ... a Unix peer whose uid and gid are not allowed
    refused_since: int = 0  # ... a ?since= (Veylor-Since) that is not a number (400)
    refused_pending: int = 0  # ... max_pending handshakes in progress, max_pending_per_ip from its source
    refused_token: int = 0  # ... a wrong token (401)
    revoked: int = 0  # clients closed because their token (or uid) is no longer allowed (1008)
    slow_disconnects: int = 0  # clients disconnected for being slow
    snapshot_messages: int = 0  # messages sent in snapshots (latest-value delivery)
    snapshots: int = 0  # clients that joined and got a snapshot
    slow_dropping: int = 0  # clients for which messages were dropped for being slow
    slow_conflating: int = 0  # clients that fell behind and were given the latest per key (conflate)
    # clients aborted for taking nothing of what waited (stall_timeout, limits.buffered)
    stalled_closed: int = 0
    stalled_no_pong: int = 0  # its connection made again: no message, no PONG for stall_timeout (NATS)
    stalled_read_loop: int = 0  # ... the client library's read loop had ended (NATS)
    superseded: int = 0  # deliveries not made: replaced by a later message of their key (conflate)
    tls_failed: int = 0  # connections whose TLS handshake failed (wss:// endpoints)
    unframeable: int = 0  # deliveries not made: the framing cannot carry the message (lines)
    upstream_blocked: int = 0  # client messages that went to no source: every route's policy stopped it
    upstream_denied: int = 0  # client messages no allow filter of the route passed (not forwarded)
    upstream_limited: int = 0  # client messages over the client's upstream rate (not forwarded)
    write_failed: int = 0  # clients aborted because a write to them raised

    def undelivered(self) -> dict[str, int]:
        """Deliveries not made, by reason."""
        return {
            "slow_client_drop": self.dropped,
            "slow_client_disconnect": self.lost_slow,
            "framing": self.unframeable,
            "slow_client_conflate": self.superseded,
        }


@dataclass(slots=True, eq=False)
class RouteStats(_Counters):
    """Counters of one route edge."""

    conflated: int = 0  # messages replaced by a later one of their key before they were sent (conflate)
    filtered: int = 0  # messages its filter refused
    messages: int = 0  # ... and passed (conflate: those it sent)
    resumes_lost: int = 0  # clients that came back (?since=) past what its history kept
    resumes_ok: int = 0  # clients that came back and got all they missed
    unkeyed: int = 0  # messages sent at once for want of the conflate key


@dataclass(slots=True, eq=False)
class ProcessStats(_Counters):
    """Counters of the process: configuration generations and reloads."""

    generation: int = 0
    reloads_failed: int = 0
    reloads_ok: int = 0


@dataclass(slots=True, eq=False)
class AdminStats(_Counters):
    """Requests the admin endpoint refused, by reason (it may move to another address:
    these stay)."""

    refused_form: int = 0  # POST /reload without X-Veylor-Reload or a JSON Content-Type (403)
    refused_host: int = 0  # a Host that is not its address, localhost or allowed_hosts (421)
    refused_no_token: int = 0  # no token where admin.auth is on (401)
    refused_origin: int = 0  # from a web page: an Origin header, Sec-Fetch-Site cross-site or same-site (403)
    refused_read_only: int = 0  # a reload or a tap where admin.read_only is on (403)
    refused_token: int = 0  # a wrong token (401)


class Stats:
    """Every counter of a running Veylor, by component name.

    An edge (source -> route -> endpoint) costs nothing per message: every message that
    passes a route goes to each of its endpoints, so an edge's count is its route's
    since the edge appeared (``edges`` holds the route's count at that moment).
    """

    def __init__(self) -> None:
        self.sources: dict[str, SourceStats] = {}
        self.endpoints: dict[str, EndpointStats] = {}
        self.routes: dict[str, RouteStats] = {}
        self.edges: dict[tuple[str, str, str], int] = {}  # (source, route, endpoint) -> route's count then
        self.clocks: dict[str, SourceClock] = {}
        self.process = ProcessStats()
        self.admin = AdminStats()
        self.started = time.time()

    def source(self, name: str) -> SourceStats:
        return self.sources.get(name) or self.sources.setdefault(name, SourceStats())

    def endpoint(self, name: str) -> EndpointStats:
        return self.endpoints.get(name) or self.endpoints.setdefault(name, EndpointStats())

    def route(self, name: str) -> RouteStats:
        return self.routes.get(name) or self.routes.setdefault(name, RouteStats())

    def edge(self, source: str, route: str, endpoint: str) -> int:
        """Messages that passed ``route`` from ``source`` to ``endpoint`` since that edge
        appeared (a route moved to another source starts a new edge)."""
        base = self.edges.get((source, route, endpoint))
        return 0 if base is None else self.routes[route].messages - base

    def retain(self, graph: Any) -> None:
        """Match the running graph: forget the stats of components no longer configured,
        start the edges that appeared (a route's count so far is not theirs)."""
        for table, names in (
            (self.sources, graph.sources),
            (self.clocks, graph.sources),
            (self.endpoints, graph.endpoints),
            (self.routes, graph.routes),
        ):
            for name in [n for n in table if n not in names]:
                del table[name]
        edges = {}
        for name, route in graph.routes.items():
            messages = self.route(name).messages
            for endpoint in route.endpoints:
                key = (route.source, name, endpoint)
                edges[key] = self.edges.get(key, messages)
        self.edges = edges

    def tick(self, now: float) -> None:
        """Once a second: note which sources received messages since the last tick."""
        for name, stats in self.sources.items():
            clock = self.clocks.get(name)
            if clock is None:
                clock = self.clocks[name] = SourceClock()
            if stats.messages_in != clock.seen:
                clock.seen = stats.messages_in
                clock.last_message_at = now

    def snapshot(self) -> dict[str, Any]:
        """Every counter as plain data."""
        return {
            "process": {**self.process.as_dict(), "started": self.started},
            "admin": self.admin.as_dict(),
            "sources": {n: s.as_dict() for n, s in self.sources.items()},
            "endpoints": {n: s.as_dict() for n, s in self.endpoints.items()},
            "routes": {n: s.as_dict() for n, s in self.routes.items()},
        }
