"""The state view's shape, as types (schema 1): what :func:`veylor.observe.state.snapshot`
makes and ``/graph``, ``/metrics``, ``veylor status``, ``veylor top`` and the TUI read.

One definition for the producer and every reader, checked by mypy on both sides, and
against a real snapshot by ``tests/integration/test_state_view.py`` (every key the
view holds is declared here; every declared counter is one the runtime keeps). The
view is JSON: a reader that got it over HTTP checks ``schema`` before it takes the
shape as given (:func:`is_state_view`).

Keys a kind adds beside the common ones (a NATS source's stream position, a NATS
endpoint's outbox) are declared too, not required. (No ``from __future__ import
annotations`` here: Python 3.11's TypedDict sees ``NotRequired`` only when it is
evaluated.)
"""

from typing import Any, NotRequired, TypedDict

SCHEMA = 1
EVERY = "*"  # clients=EVERY (?clients=*): every endpoint's clients, bounded in all (no name is "*")


class SourceCounters(TypedDict):
    """A source's counters (:class:`veylor.runtime.stats.SourceStats`)."""

    attempts: int
    bytes_in: int
    connects: int
    disconnects: int
    gaps: int
    invalid_utf8: int
    messages_in: int
    out_of_order: int
    outliers: int
    oversize: int
    publisher_changes: int
    queued_dropped: int
    sent_up: int
    stalled_no_pong: int
    stalled_read_loop: int


class SourceView(SourceCounters):
    """A source: its kind, its connection's state and its counters."""

    kind: str
    state: str  # "connected" when messages can flow; the kind's own words otherwise
    url: NotRequired[str]
    connected_since: NotRequired[float | None]  # wall clock
    next_attempt_at: NotRequired[float | None]  # wall clock
    ping_rtt: NotRequired[float | None]  # seconds (WebSocket)
    failures: NotRequired[int]  # failed attempts in a row
    last_error: NotRequired[str | None]  # secrets masked
    last_message_at: float | None
    # NATS with a JetStream stream
    stream: NotRequired[str | None]
    position: NotRequired[int]
    resumed_from: NotRequired[int | None]
    duplicates: NotRequired[int]


class RouteCounters(TypedDict):
    conflated: int
    filtered: int
    messages: int
    resumes_lost: int
    resumes_ok: int
    unkeyed: int


class KeptView(TypedDict):
    """What a route keeps for the clients that join later (``snapshot:``)."""

    setting: str  # the snapshot setting, in words
    messages: int  # kept now (keys, with by)
    bytes: int  # their payloads
    evicted: int  # keys forgotten for max_keys
    unkept: int  # messages delivered but not kept (not JSON, no such key)


class HistoryView(TypedDict):
    """What a route keeps for clients that come back (``resume:``)."""

    setting: str
    messages: int
    bytes: int
    evicted: int  # forgotten for size or max_bytes
    unkept: int  # without a number at by
    unordered: int  # a number not greater than the last kept
    first: float | None  # the oldest kept number
    last: float | None  # the newest


# "from" is a keyword: the functional syntax.
RouteView = TypedDict(
    "RouteView",
    {
        "from": str,
        "to": list[str],
        "filter": str | None,
        "upstream": Any,
        "filtered": int,
        "messages": int,
        "conflated": NotRequired[int],
        "unkeyed": NotRequired[int],
        "conflate": NotRequired[str],
        "kept": NotRequired[KeptView],
        "history": NotRequired[HistoryView],
        "resumes_ok": NotRequired[int],
        "resumes_lost": NotRequired[int],
    },
)


class EdgeView(TypedDict):
    """Messages one route delivered into one endpoint."""

    source: str
    route: str
    endpoint: str
    messages: int


class ClientView(TypedDict):
    """One client of an endpoint (``clients=True`` or the endpoint's name)."""

    client: str  # its address, or its pid/uid (Unix)
    connected_since: float
    messages: int  # written to it
    dropped: int  # not written: it was over client_buffer
    buffered: int  # bytes waiting for it


class EndpointCounters(TypedDict):
    """An endpoint's counters (:class:`veylor.runtime.stats.EndpointStats`)."""

    accepted: int
    bad_frames: int
    bytes_out: int
    caught_up: NotRequired[int]  # (these four: Veylor 2.x since slow_client: conflate)
    lag_closed: NotRequired[int]
    slow_conflating: NotRequired[int]
    superseded: NotRequired[int]
    compression_none: NotRequired[int]  # (these three: since compression: shared)
    compression_params: NotRequired[int]
    compression_shared: NotRequired[int]
    control_closed: int
    discarded: int
    dropped: int
    handshake_timeouts: int
    invalid_utf8: int
    keepalive_closed: int
    lost_slow: int
    memory_closed: int
    memory_limited: int
    messages: int
    messages_out: int
    pending_evicted: int
    rate_closed: int
    received: int
    refused: int
    refused_no_token: int
    refused_origin: int
    refused_path: int
    refused_peer: int
    refused_pending: int
    refused_since: int
    refused_token: int
    revoked: int
    slow_disconnects: int
    slow_dropping: int
    snapshot_messages: int
    snapshots: int
    stalled_closed: int
    stalled_no_pong: int
    stalled_read_loop: int
    tls_failed: int
    unframeable: int
    upstream_blocked: int
    upstream_denied: int
    upstream_limited: int
    write_failed: int


class EndpointView(EndpointCounters):
    """An endpoint: its kind, address, clients and counters."""

    kind: str
    address: str
    clients: int
    slow_clients: int  # behind now: Veylor holds bytes for them that their socket does not take
    client_buffer: NotRequired[int]  # bytes a client may have waiting (WebSocket, Unix)
    behind_keys: NotRequired[int]  # kept for its clients behind: keys (slow_client: conflate)
    behind_bytes: NotRequired[int]  # ... and their bytes
    client_list: NotRequired[list[ClientView]]
    clients_not_listed: NotRequired[int]
    # NATS: its connection and what waits to be published
    state: NotRequired[str]
    url: NotRequired[str | None]
    last_error: NotRequired[str | None]
    waiting: NotRequired[int]
    node: NotRequired[str]
    sequence: NotRequired[int]
    stream_ready: NotRequired[bool]
    acked: NotRequired[int]
    resent: NotRequired[int]
    last_failure: NotRequired[str | None]


class StepView(TypedDict):
    op: str
    name: str
    detail: list[str]


class ProblemView(TypedDict):
    """A problem a reload found (:meth:`veylor.config.problems.Problem.as_dict`)."""

    file: str | None
    line: int | None
    column: int | None
    path: str
    message: str
    severity: str  # "error" or "warning"


class ReloadView(TypedDict):
    """A reload's outcome (:class:`veylor.reload.Outcome`)."""

    reason: str
    ok: bool
    applied: bool
    generation: int
    digest: str
    changes: list[str]
    steps: list[StepView]
    problems: list[ProblemView]
    error: str | None
    at: float
    duration_ms: float


class ReloadsView(TypedDict):
    ok: int
    failed: int
    last: ReloadView | None  # the last reload, whatever it did
    last_change: ReloadView | None  # the last that changed something (a later check does not hide it)


class ConfigView(TypedDict):
    generation: int
    digest: str


class ListenersView(TypedDict):
    """The listeners the running configuration has, and how many are bound (what /readyz
    asks of Veylor itself)."""

    configured: int
    bound: int


class ProcessView(TypedDict):
    """The process, as Prometheus' client libraries export it (``process_*``)."""

    rss_bytes: int
    cpu_seconds: float  # user and system
    open_fds: int
    max_fds: int  # the soft limit (0: none)


class MemoryView(TypedDict):
    """``limits.buffered`` and what it did (:class:`veylor.runtime.budget.Budget`)."""

    limit: int
    laggard_bytes: int
    peak: int
    enforced: int
    stalled: int
    trims: int


class AdminCounters(TypedDict):
    """Requests the admin endpoint refused, by reason."""

    refused_form: int
    refused_host: int
    refused_no_token: int
    refused_origin: int
    refused_read_only: int
    refused_token: int


class TapView(TypedDict):
    """What a route's tap caught (``tap=ROUTE``), or why there is none."""

    route: str
    seen: NotRequired[int]
    messages: NotRequired[list[str]]
    error: NotRequired[str]


class StateView(TypedDict):
    """The whole view."""

    schema: int
    version: str
    pid: int
    time: float  # wall clock
    started: float
    uptime: float
    config: ConfigView
    listeners: ListenersView
    reloads: ReloadsView
    sources: dict[str, SourceView]
    routes: dict[str, RouteView]
    edges: list[EdgeView]
    endpoints: dict[str, EndpointView]
    memory: MemoryView
    process: ProcessView
    admin: AdminCounters
    tasks: int
    tap: NotRequired[TapView]


def undelivered(endpoint: EndpointView) -> int:
    """Deliveries an endpoint did not make (``veylor_endpoint_undelivered_total``, all
    reasons): over a slow client's buffer, its messages while it was being disconnected,
    messages its framing cannot carry, messages a later one of their key replaced for a
    client behind (``slow_client: conflate``; absent from an older Veylor's view)."""
    return (
        endpoint["dropped"] + endpoint["lost_slow"] + endpoint["unframeable"] + endpoint.get("superseded", 0)
    )


def is_state_view(data: object) -> bool:
    """Whether JSON from an admin endpoint is a state view this Veylor reads (its schema,
    and the parts every reader walks)."""
    return (
        isinstance(data, dict)
        and data.get("schema") == SCHEMA
        and all(isinstance(data.get(part), dict) for part in ("sources", "routes", "endpoints", "config"))
        and isinstance(data.get("edges"), list)
    )
