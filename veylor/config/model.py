"""The typed, frozen configuration model that the graph and the runtime read: a whole
:class:`Config`, and what every endpoint and route has whatever its kind.

Instances are built only by the loader (:func:`veylor.config.loader.load_config`) from
data that passed the schema, with the schema's defaults filled in. Equality ignores ``origin``
(where a component was defined), so two loads of the same settings compare equal.

Kinds of sources and endpoints are rows of the registry (:mod:`veylor.config.kinds`).
This module names none: a source is any spec that meets the kind contract
(:class:`~veylor.config.contract.SourceKindSpec`), an endpoint holds its kind's part
(:class:`~veylor.config.contract.Listen`, and who may connect,
:class:`~veylor.config.contract.EndpointAccess`). Each kind's specs are in its own
module (:mod:`veylor.config.websocketspec`, :mod:`veylor.config.unixspec`,
:mod:`veylor.config.natsspec`); the admin endpoint's in :mod:`veylor.config.adminspec`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..filters import CompiledFilter
from .access import Collected, UpstreamPolicy, upstream_policy
from .adminspec import AdminSpec
from .common import SKIP, format_size, plain
from .contract import EndpointAccess, Listen, SourceKindSpec
from .frozen import freeze, thaw
from .latestspec import ConflateSpec, ResumeSpec, SnapshotSpec
from .problems import Location, Problem

Shape = Literal["v1", "1.1", "1.0"]


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """Where local clients connect."""

    name: str
    listen: Listen
    max_clients: int
    client_buffer: int
    slow_client: Literal["disconnect", "drop", "conflate"]
    compression: bool  # permessage-deflate per client (compression: true)
    max_message_size: int
    ping_interval: float | None = None
    ping_timeout: float | None = None
    socket_buffer: int | None = None  # SO_SNDBUF for each client; None: the kernel's own
    stall_timeout: float | None = None  # seconds a client may take nothing of what waits; None: any
    shared_compression: bool = False  # compression: shared (each message compressed once for all)
    compression_min_size: int = 256  # ... messages smaller go uncompressed
    # Who may connect: an EndpointAccess (WebSocketAccess, UnixAccess), or None for a kind
    # without clients. Any: each kind's runtime reads its own kind's class.
    access: Any = None
    origin: Location = field(compare=False, default=Location(""))

    @property
    def kind(self) -> str:
        return self.listen.kind

    def secrets(self) -> frozenset[str]:
        """Values that must never reach a log line (its kind's, its tokens)."""
        mine = self.access.secrets() if self.access is not None else frozenset()
        return self.listen.secrets() | mine

    def access_summary(self) -> str:
        """Who may connect, at a glance (``veylor check``)."""
        if self.access is not None:
            return str(self.access.summary())
        own = self.listen.access_summary()
        return own if own is not None else "open to anyone who can connect"

    def open_to_network(self) -> bool:
        """Whether the network reaches it and a client need not show who it is: anyone
        who reaches its port may connect (``veylor check`` flags it)."""
        access: EndpointAccess | None = self.access
        return self.listen.exposure() == "network" and access is not None and not access.authenticated

    def describe(self) -> str:
        """One line for people."""
        own = self.listen.describe_endpoint(self)
        if own is not None:
            return own
        head = self.listen.describe() + (
            " compression on"
            if self.compression
            else " compression shared"
            if self.shared_compression
            else ""
        )
        return (
            f"{head}; max_clients {self.max_clients}, client_buffer {format_size(self.client_buffer)}, "
            f"slow_client {self.slow_client}"
        )

    def as_json(self) -> dict[str, Any]:
        """Every setting as plain data, the kind's own under its key (tokens never shown)."""
        listen = self.listen.as_json()
        if self.access is not None:
            listen.update(self.access.as_json())
        return {self.kind: listen, **plain(self, listen=SKIP, access=SKIP)}


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """An edge from a source to endpoints, with an optional filter (its declarative spec)."""

    name: str
    source: str
    endpoints: tuple[str, ...]
    filter: Mapping[str, Any] | None
    upstream: bool
    origin: Location = field(compare=False, default=Location(""))
    compiled: CompiledFilter | None = field(compare=False, default=None, repr=False)  # compiled at load
    policy: UpstreamPolicy | None = None  # upstream: {allow, rate, ...}; None: all or nothing
    snapshot: SnapshotSpec | None = None  # what it keeps for clients that join later
    conflate: ConflateSpec | None = None  # at most one message per key per interval
    resume: ResumeSpec | None = None  # what it keeps for clients that come back (?since=)
    _filter_key: str | None = field(compare=False, default=None, repr=False, init=False)

    def __post_init__(self) -> None:
        key = None if self.filter is None else json.dumps(thaw(self.filter), sort_keys=True)
        object.__setattr__(self, "_filter_key", key)

    def _key(self) -> tuple[Any, ...]:
        return (
            self.name,
            self.source,
            self.endpoints,
            self.filter_key,
            self.upstream,
            self.policy,
            self.snapshot,
        )

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RouteSpec):
            return NotImplemented
        return self._key() == other._key()

    @property
    def filter_key(self) -> str | None:
        """A canonical text of the filter, for comparisons (computed once)."""
        return self._filter_key


@dataclass(frozen=True, slots=True)
class Limits:
    """Process-wide limits (``limits:`` in the main file)."""

    buffered: int = 256 * 2**20  # bytes queued for all clients together


@dataclass(frozen=True)
class Config:
    """A whole validated configuration: what every later stage reads."""

    sources: Mapping[str, SourceKindSpec]
    endpoints: Mapping[str, EndpointSpec]
    routes: Mapping[str, RouteSpec]
    shape: Shape = "v1"
    main_file: str = ""
    files: tuple[str, ...] = ()
    warnings: tuple[Problem, ...] = ()
    digest: str = ""  # sha256 of every file read, in order: identifies a configuration generation
    include: tuple[str, ...] = ()  # the main file's drop-in patterns (the schema has the default)
    limits: Limits = field(default_factory=Limits)
    admin: AdminSpec | None = None
    referenced: tuple[str, ...] = ()  # files its settings name (tokens files, certificates), read


def route_from(
    name: str,
    raw: Mapping[str, Any],
    origin: Location,
    compiled: CompiledFilter | None = None,
    collected: Collected | None = None,
    snapshot: SnapshotSpec | None = None,
    conflate: ConflateSpec | None = None,
    resume: ResumeSpec | None = None,
) -> RouteSpec:
    """A :class:`RouteSpec` from schema-valid data with defaults applied (and its filter,
    compiled by the loader while checking it)."""
    up = raw["upstream"]
    policy = upstream_policy(up, collected if collected is not None else Collected())
    to = raw["to"]
    targets = (to,) if isinstance(to, str) else tuple(dict.fromkeys(to))
    filt = raw.get("filter")
    return RouteSpec(
        name=name,
        source=raw["from"],
        endpoints=targets,
        filter=freeze(filt) if filt is not None else None,
        upstream=bool(up),  # (a policy mapping: true, with limits)
        origin=origin,
        compiled=compiled,
        policy=policy,
        snapshot=snapshot,
        conflate=conflate,
        resume=resume,
    )
