"""The typed, frozen configuration model that the graph and the runtime read.

Instances are built only by :mod:`veylor.config.loader` from data that passed the
schema, with the schema's defaults filled in. Equality ignores ``origin`` (where a
component was defined), so two loads of the same settings compare equal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ..filters import CompiledFilter
from .problems import Location, Problem

Shape = Literal["v1", "1.1", "1.0"]

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGkmg]?)(i?)([Bb]?)\s*$")
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3}


def parse_size(value: int | str) -> int:
    """Bytes from ``16MiB``, ``512KiB``, ``1GB``, ``2M`` (binary unless written KB/MB/GB) or an int."""
    if isinstance(value, int):
        return value
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"not a size: {value!r}")
    number, unit, binary, byte = m.groups()
    power = _UNITS[unit.lower()]
    # "16MiB", "16M" and "16m" are binary; "16MB" is decimal (what the unit says).
    base = 1000 if (unit and byte and not binary) else 1024
    return int(float(number) * base**power)


def human_size(n: float) -> str:
    """A size for people, rounded: ``268500264`` -> ``256.1 MiB``."""
    for unit, power in (("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if n >= 1024**power:
            return f"{n / 1024**power:.1f} {unit}"
    return f"{int(n)} B"


def format_size(n: int) -> str:
    """Inverse of :func:`parse_size` for display: ``4194304`` -> ``4MiB``."""
    for unit, power in (("GiB", 3), ("MiB", 2), ("KiB", 1)):
        if n >= 1024**power and n % 1024**power == 0:
            return f"{n // 1024**power}{unit}"
    return f"{n}B"


_SECRET_QUERY = re.compile(r"(?i)(token|key|secret|pass|auth|sig|session|credential)")


def secret_query_key(key: str) -> bool:
    """Whether a URL query parameter of this name probably carries a secret."""
    return _SECRET_QUERY.search(key) is not None


def redact_url(url: str) -> str:
    """The URL with its user information (user and password) and secret-looking query
    values replaced by ``***``. Never raises: a URL too broken to split is shown as
    ``<invalid URL>``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{k}=***" if secret_query_key(k) else (f"{k}={v}" if sep else k)
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists from a frozen value (for JSON output)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Backoff policy of a source."""

    initial_delay: float
    max_delay: float
    multiplier: float
    jitter: float
    max_attempts: int


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A message the relay sends on its own (``on_connect``): text or binary payload."""

    data: str | bytes

    @classmethod
    def from_config(cls, item: Any) -> OutboundMessage:
        if isinstance(item, str):
            return cls(item)
        return cls(json.dumps(item, separators=(",", ":"), ensure_ascii=False))


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """An upstream WebSocket feed."""

    name: str
    url: str
    headers: tuple[tuple[str, str], ...]
    subprotocols: tuple[str, ...]
    on_connect: tuple[OutboundMessage, ...]
    reconnect: Reconnect
    ping_interval: float | None
    ping_timeout: float | None
    open_timeout: float
    max_message_size: int
    upstream_queue: int
    on_disconnect: Literal["keep", "close_clients"]
    origin: Location = field(compare=False, default=Location(""))

    @property
    def safe_url(self) -> str:
        """The URL fit for logs and screens (secrets redacted)."""
        return redact_url(self.url)


@dataclass(frozen=True, slots=True)
class WebSocketListen:
    """A WebSocket endpoint address: one listener per (host, port), dispatching by path."""

    host: str
    port: int
    path: str  # "/..." or "*" (any path no other endpoint on this listener claims)

    @property
    def listener(self) -> tuple[str, str, int]:
        return ("websocket", self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{self.path if self.path != '*' else '/*'}"


@dataclass(frozen=True, slots=True)
class UnixListen:
    """A Unix domain socket endpoint address and its wire framing."""

    path: str
    mode: int
    framing: Literal["length-prefixed", "lines"]

    @property
    def listener(self) -> tuple[str, str]:
        return ("unix", self.path)

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """Where local clients connect."""

    name: str
    listen: WebSocketListen | UnixListen
    max_clients: int
    client_buffer: int
    slow_client: Literal["disconnect", "drop"]
    compression: bool
    max_message_size: int
    ping_interval: float | None = None
    ping_timeout: float | None = None
    socket_buffer: int | None = None  # SO_SNDBUF for each client; None: the kernel's own
    origin: Location = field(compare=False, default=Location(""))

    @property
    def kind(self) -> str:
        return "websocket" if isinstance(self.listen, WebSocketListen) else "unix"


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
    _filter_key: str | None = field(compare=False, default=None, repr=False, init=False)

    def __post_init__(self) -> None:
        key = None if self.filter is None else json.dumps(thaw(self.filter), sort_keys=True)
        object.__setattr__(self, "_filter_key", key)

    def __hash__(self) -> int:
        return hash((self.name, self.source, self.endpoints, self.filter_key, self.upstream))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RouteSpec):
            return NotImplemented
        return (self.name, self.source, self.endpoints, self.filter_key, self.upstream) == (
            other.name,
            other.source,
            other.endpoints,
            other.filter_key,
            other.upstream,
        )

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

    sources: Mapping[str, SourceSpec]
    endpoints: Mapping[str, EndpointSpec]
    routes: Mapping[str, RouteSpec]
    shape: Shape = "v1"
    main_file: str = ""
    files: tuple[str, ...] = ()
    warnings: tuple[Problem, ...] = ()
    digest: str = ""  # sha256 of every file read, in order: identifies a configuration generation
    include: tuple[str, ...] = ("routes.d/*.yaml",)  # the main file's drop-in patterns
    limits: Limits = field(default_factory=Limits)


def source_from(name: str, raw: Mapping[str, Any], origin: Location) -> SourceSpec:
    """A :class:`SourceSpec` from schema-valid data with defaults applied."""
    r = raw["reconnect"]
    return SourceSpec(
        name=name,
        url=raw["url"],
        headers=tuple((str(k), str(v)) for k, v in raw["headers"].items()),
        subprotocols=tuple(raw["subprotocols"]),
        on_connect=tuple(OutboundMessage.from_config(m) for m in raw["on_connect"]),
        reconnect=Reconnect(
            initial_delay=float(r["initial_delay"]),
            max_delay=float(r["max_delay"]),
            multiplier=float(r["multiplier"]),
            jitter=float(r["jitter"]),
            max_attempts=int(r["max_attempts"]),
        ),
        ping_interval=raw["ping_interval"],
        ping_timeout=raw["ping_timeout"],
        open_timeout=float(raw["open_timeout"]),
        max_message_size=parse_size(raw["max_message_size"]),
        upstream_queue=int(raw["upstream_queue"]),
        on_disconnect=raw["on_disconnect"],
        origin=origin,
    )


def endpoint_from(name: str, raw: Mapping[str, Any], origin: Location) -> EndpointSpec:
    """An :class:`EndpointSpec` from schema-valid data with defaults applied."""
    listen: WebSocketListen | UnixListen
    if "websocket" in raw:
        ws = raw["websocket"]
        listen = WebSocketListen(host=ws["host"], port=int(ws["port"]), path=ws["path"])
    else:
        ux = raw["unix"]
        listen = UnixListen(path=ux["path"], mode=int(ux["mode"], 8), framing=ux["framing"])
    return EndpointSpec(
        name=name,
        listen=listen,
        max_clients=int(raw["max_clients"]),
        client_buffer=parse_size(raw["client_buffer"]),
        slow_client=raw["slow_client"],
        compression=bool(raw["compression"]),
        max_message_size=parse_size(raw["max_message_size"]),
        ping_interval=raw["ping_interval"],
        ping_timeout=raw["ping_timeout"],
        socket_buffer=parse_size(raw["socket_buffer"]) if raw["socket_buffer"] is not None else None,
        origin=origin,
    )


def route_from(
    name: str, raw: Mapping[str, Any], origin: Location, compiled: CompiledFilter | None = None
) -> RouteSpec:
    """A :class:`RouteSpec` from schema-valid data with defaults applied (and its filter,
    compiled by the loader while checking it)."""
    to = raw["to"]
    targets = (to,) if isinstance(to, str) else tuple(dict.fromkeys(to))
    filt = raw.get("filter")
    return RouteSpec(
        name=name,
        source=raw["from"],
        endpoints=targets,
        filter=_frozen(filt) if filt is not None else None,
        upstream=bool(raw["upstream"]),
        origin=origin,
        compiled=compiled,
    )
