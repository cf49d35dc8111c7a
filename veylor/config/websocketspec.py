"""Settings of the WebSocket kinds: a source that connects to an upstream WebSocket feed
(``url:``), and an endpoint that serves local clients on a host, port and path
(``websocket:``).

Each spec checks, describes and renders itself (the kind contract,
:mod:`veylor.config.contract`); who may connect to an endpoint is in its access
(:class:`veylor.config.access.WebSocketAccess`). The kind registry
(:mod:`veylor.config.kinds`) builds them: :func:`source_from` and
:meth:`WebSocketListen.from_raw`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .access import Collected, SourceTLS, Subpath, read_source_tls
from .common import (
    REDACTED,
    WILDCARD_HOSTS,
    Reconnect,
    base_dir,
    host_exposure,
    parse_size,
    plain,
    redact_url,
    url_problem,
    url_secrets,
)
from .problems import Location


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """A message the relay sends on its own (``on_connect``): text or binary payload."""

    data: str | bytes

    @classmethod
    def from_config(cls, item: Any) -> OutboundMessage:
        if isinstance(item, str):
            return cls(item)
        return cls(json.dumps(item, separators=(",", ":"), ensure_ascii=False, allow_nan=False))


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """An upstream WebSocket feed."""

    kind: ClassVar[str] = "websocket"
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
    tls: SourceTLS | None = None
    origin: Location = field(compare=False, default=Location(""))

    @property
    def safe_url(self) -> str:
        """The URL fit for logs and screens (secrets redacted)."""
        return redact_url(self.url)

    # The kind contract of a source's spec, beside check, describe, secrets, as_json:

    def upstream_problem(self) -> str | None:
        """Why clients' messages could not go to this source (None: they can: to its
        connection)."""
        return None

    def state_file(self) -> tuple[Subpath, str] | None:
        """The file it keeps its position in, and where its settings name it (None: it
        keeps none). Two sources may not share one."""
        return None

    def check(self) -> list[tuple[Subpath, str]]:
        """What the schema cannot check: ``(subpath, message)`` per problem (the URL
        shown with its credentials masked)."""
        out: list[tuple[Subpath, str]] = self.reconnect.check()
        problem = url_problem(self.url)
        if problem is not None:
            out.append((("url",), problem))
        if self.tls is not None and not self.url.startswith("wss:"):
            out.append((("tls",), "applies to wss:// URLs only: this source's URL is ws:// (plain text)"))
        return out

    def secrets(self) -> frozenset[str]:
        """Every value that must never reach a log line: header values (and the token of
        ``Bearer TOKEN``), ``on_connect`` payloads, the URL's credentials."""
        return _source_secrets(self)

    def describe(self) -> str:
        """One line for people (header values never shown; secrets in the URL masked)."""
        r = self.reconnect
        tries = "forever" if r.max_attempts == 0 else f"up to {r.max_attempts} attempts"
        parts = [self.safe_url]
        if self.headers:
            parts.append("headers " + ", ".join(f"{k}={REDACTED}" for k, _ in self.headers))
        parts.append(
            f"reconnect {r.initial_delay:g}s..{r.max_delay:g}s x{r.multiplier:g} ±{r.jitter:.0%}, {tries}"
        )
        if self.on_connect:
            n = len(self.on_connect)
            parts.append(f"on_connect {n} message{'s' * (n != 1)}")
        parts.append(f"on_disconnect {self.on_disconnect}")
        if self.tls is not None:
            parts.append(self.tls.describe())
        return "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """Every setting as plain data: header values and ``on_connect`` payloads (which
        may carry credentials) are not shown, the URL has its secrets masked."""
        return plain(
            self,
            url=self.safe_url,
            headers={k: REDACTED for k, _ in self.headers},
            on_connect=len(self.on_connect),
        )


@functools.lru_cache(maxsize=8192)  # a reload of a thousand unchanged sources: no work
def _source_secrets(spec: SourceSpec) -> frozenset[str]:
    out: set[str] = set()
    for _, value in spec.headers:
        out.add(value)
        scheme, _, credentials = value.partition(" ")
        if credentials and scheme.isalpha():  # "Bearer TOKEN": the token alone is secret too
            out.add(credentials.strip())
    for message in spec.on_connect:
        data = message.data
        out.add(data if isinstance(data, str) else data.decode("utf-8", "replace"))
    out.update(url_secrets(spec.url))
    return frozenset(out)


def _on_connect(items: Any, out: Collected) -> tuple[OutboundMessage, ...]:
    """``on_connect`` messages; one JSON cannot carry (a YAML date or binary, NaN) is a
    problem, never shown (it may hold a credential)."""
    messages = []
    for i, item in enumerate(items):
        try:
            messages.append(OutboundMessage.from_config(item))
        except (TypeError, ValueError) as exc:
            what = "NaN or Infinity" if isinstance(exc, ValueError) else str(exc).split("Object of type ")[-1]
            out.add(
                ("on_connect", i),
                f"cannot be sent as JSON: it holds {what.replace(' is not JSON serializable', '')} "
                "(a YAML date, timestamp or !!binary, or .nan/.inf): quote that value to send it as text",
            )
    return tuple(messages)


def source_from(
    name: str, raw: Mapping[str, Any], origin: Location, collected: Collected | None = None
) -> SourceSpec:
    """A :class:`SourceSpec` from schema-valid data with defaults applied (files it refers
    to are read; their problems go to ``collected``)."""
    out = collected if collected is not None else Collected()
    tls = read_source_tls(raw["tls"], base_dir(origin), out) if raw.get("tls") is not None else None
    return SourceSpec(
        name=name,
        url=raw["url"],
        headers=tuple((str(k), str(v)) for k, v in raw["headers"].items()),
        subprotocols=tuple(raw["subprotocols"]),
        on_connect=_on_connect(raw["on_connect"], out),
        reconnect=Reconnect.from_raw(raw["reconnect"]),
        ping_interval=raw["ping_interval"],
        ping_timeout=raw["ping_timeout"],
        open_timeout=float(raw["open_timeout"]),
        max_message_size=parse_size(raw["max_message_size"]),
        upstream_queue=int(raw["upstream_queue"]),
        on_disconnect=raw["on_disconnect"],
        tls=tls,
        origin=origin,
    )


@dataclass(frozen=True, slots=True)
class WebSocketListen:
    """A WebSocket endpoint address: one listener per (host, port), dispatching by path."""

    kind: ClassVar[str] = "websocket"
    host: str
    port: int
    path: str  # "/..." or "*" (any path no other endpoint on this listener claims)
    secure: bool = False  # wss:// (tls: set; the certificate is in the endpoint's access)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], base: str = "", out: Any = None) -> WebSocketListen:
        return cls(
            host=raw["host"], port=int(raw["port"]), path=raw["path"], secure=raw.get("tls") is not None
        )

    @property
    def listener(self) -> tuple[Any, ...]:
        """The key of the listener that serves it (shared by the endpoints of one port);
        a wss:// listener is another listener than a ws:// one."""
        return (
            ("websocket", self.host, self.port, "tls") if self.secure else ("websocket", self.host, self.port)
        )

    @property
    def listener_text(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def binds(self) -> tuple[Any, ...]:
        return ("tcp", self.host, self.port)

    @property
    def claim(self) -> tuple[Any, ...]:
        """What no two endpoints may both have."""
        return ("websocket", self.host, self.port, self.path)

    def taken(self, other: str) -> tuple[Subpath, str]:
        return (
            (),
            f"{self} is already served by {other}: endpoints sharing a host and port need different paths",
        )

    @property
    def group(self) -> tuple[Any, ...]:
        """Endpoints of one group are checked pairwise with :meth:`clash`."""
        return ("websocket", self.port)

    def clash(self, other: WebSocketListen, who: str) -> tuple[Subpath, str] | None:
        if other.host != self.host and (other.host in WILDCARD_HOSTS or self.host in WILDCARD_HOSTS):
            return ("host",), (
                f"port {self.port} is bound on {other.host!r} by {who} and on {self.host!r} here: "
                "a wildcard address and another address cannot share a port; use the same host for both"
            )
        if other.host == self.host and other.secure != self.secure:
            return ("tls",), (
                f"port {self.port} serves {'wss' if other.secure else 'ws'}:// for {who} and "
                f"{'wss' if self.secure else 'ws'}:// here: endpoints sharing a port share its TLS; "
                "give both the same tls, or use another port"
            )
        return None

    def check(self) -> list[tuple[Subpath, str]]:
        return []

    def secrets(self) -> frozenset[str]:
        return frozenset()

    def exposure(self) -> str:
        return host_exposure(self.host)

    def access_summary(self) -> str | None:
        return None  # (its access settings say it)

    def describe_endpoint(self, spec: Any) -> str | None:
        return None

    def describe(self) -> str:
        return str(self)

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "path": self.path}

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://{host}:{self.port}{self.path if self.path != '*' else '/*'}"
