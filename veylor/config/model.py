"""The typed, frozen configuration model that the graph and the runtime read.

Instances are built only by :mod:`veylor.config.loader` from data that passed the
schema, with the schema's defaults filled in. Equality ignores ``origin`` (where a
component was defined), so two loads of the same settings compare equal.

Kinds of sources and endpoints are rows of the registry
(:mod:`veylor.config.kinds`): the YAML key that selects the kind, how its spec is
built, and the runtime module that runs it. A kind's spec checks, describes and
renders itself (``check``, ``describe``, ``as_json``); nothing outside it names the
kind. This module holds the specs of the WebSocket and Unix kinds and those every kind
shares; :mod:`veylor.config.common` the helpers below them.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from ..filters import CompiledFilter
from .access import (
    Collected,
    SourceTLS,
    Subpath,
    Tokens,
    UpstreamPolicy,
    read_source_tls,
    read_tokens,
    upstream_policy,
)
from .common import (
    REDACTED,
    SKIP,
    Reconnect,
    base_dir,
    format_size,
    host_exposure,
    parse_size,
    plain,
    redact_url,
    url_problem,
    url_secrets,
)
from .frozen import freeze, thaw
from .problems import Location, Problem

Shape = Literal["v1", "1.1", "1.0"]


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


_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "", "*"})
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, one of them the terminating NUL


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
        if other.host != self.host and (other.host in _WILDCARD_HOSTS or self.host in _WILDCARD_HOSTS):
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


@dataclass(frozen=True, slots=True)
class UnixListen:
    """A Unix domain socket endpoint address and its wire framing."""

    kind: ClassVar[str] = "unix"
    path: str
    mode: int
    framing: Literal["length-prefixed", "lines"]
    owner: str | int | None = None  # of the socket file (chown at bind), as written
    group: str | int | None = None
    # ... as numbers, looked up when the configuration is loaded (in the loader's thread:
    # a lookup may ask a directory service); -1: left as is; None: no such user or group
    uid: int | None = -1
    gid: int | None = -1

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], base: str = "", out: Any = None) -> UnixListen:
        owner, group = raw.get("owner"), raw.get("group")
        return cls(
            path=raw["path"],
            mode=int(raw["mode"], 8),
            framing=raw["framing"],
            owner=owner,
            group=group,
            uid=_uid(owner) if owner is not None else -1,
            gid=_gid(group) if group is not None else -1,
        )

    @property
    def listener(self) -> tuple[str, str]:
        return ("unix", os.path.normpath(self.path))  # ./a.sock and a.sock: one socket

    @property
    def listener_text(self) -> str:
        return f"unix:{self.path}"

    @property
    def binds(self) -> tuple[Any, ...]:
        return ("unix", os.path.normpath(self.path))

    @property
    def claim(self) -> tuple[Any, ...]:
        return ("unix", os.path.normpath(self.path))

    def taken(self, other: str) -> tuple[Subpath, str]:
        return (
            "path",
        ), f"Unix socket {self.path} is already used by {other}: each endpoint needs its own path"

    group = None

    def clash(self, other: UnixListen, who: str) -> tuple[Subpath, str] | None:
        return None

    def check(self) -> list[tuple[Subpath, str]]:
        n = len(os.fsencode(self.path))
        out: list[tuple[Subpath, str]] = []
        if n > _UNIX_PATH_MAX:
            out.append(
                (
                    ("path",),
                    f"is {n} bytes long; Unix socket paths may have at most {_UNIX_PATH_MAX}: "
                    "choose a shorter path",
                )
            )
        for key, value, number in (("owner", self.owner, self.uid), ("group", self.group, self.gid)):
            if number is None:
                what = "user" if key == "owner" else "group"
                out.append(
                    ((key,), f"{what} {value!r} does not exist here (a name, or a number up to {_ID_MAX})")
                )
        return out

    @property
    def ids(self) -> tuple[int, int]:
        """The socket file's owner and group as numbers (-1: leave as is)."""
        return (-1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid)

    def secrets(self) -> frozenset[str]:
        return frozenset()

    def exposure(self) -> str:
        return "local"

    def access_summary(self) -> str | None:
        return None  # (its access settings say it)

    def describe_endpoint(self, spec: Any) -> str | None:
        return None

    def describe(self) -> str:
        owner = f", owner {self.owner}" if self.owner is not None else ""
        group = f", group {self.group}" if self.group is not None else ""
        return f"{self} ({self.framing}, mode {self.mode:04o}{owner}{group})"

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "mode": f"{self.mode:04o}",
            "framing": self.framing,
            "owner": self.owner,
            "group": self.group,
        }

    def __str__(self) -> str:
        return f"unix:{self.path}"


_ID_MAX = 2**32 - 2  # (uid_t; -1 means "unchanged" to chown)


def _number(value: str | int) -> int | None:
    number = value if isinstance(value, int) else int(value) if value.isascii() and value.isdigit() else None
    return number if number is not None and 0 <= number <= _ID_MAX else None


def _uid(value: str | int) -> int | None:
    """A user's uid from its name or number (None: no such user, or not a uid)."""
    import pwd

    if isinstance(value, str):
        try:
            return pwd.getpwnam(value).pw_uid
        except KeyError:
            pass
    return _number(value)


def _gid(value: str | int) -> int | None:
    """A group's gid from its name or number (None: no such group, or not a gid)."""
    import grp

    if isinstance(value, str):
        try:
            return grp.getgrnam(value).gr_gid
        except KeyError:
            pass
    return _number(value)


class SourceKindSpec(Protocol):
    """A source of some kind, as the loader, the graph and ``veylor check`` read it: the
    kind contract of a source's spec (its kind's settings are its own)."""

    kind: ClassVar[str]
    name: str
    on_disconnect: Literal["keep", "close_clients"]
    origin: Location

    def check(self) -> list[tuple[Subpath, str]]:
        """What the schema cannot check: ``(subpath, message)`` per problem."""

    def secrets(self) -> frozenset[str]:
        """Values of its settings that must never reach a log line."""

    def upstream_problem(self) -> str | None:
        """Why clients' messages could not go to it (None: they can)."""

    def state_file(self) -> tuple[Subpath, str] | None:
        """The file it keeps its position in, and where its settings name it (None: it
        keeps none)."""

    def describe(self) -> str:
        """One line for people."""

    def as_json(self) -> dict[str, Any]:
        """The settings as plain data (secrets redacted)."""


class Listen(Protocol):
    """Where an endpoint of some kind takes its clients (the kind's part of its spec)."""

    kind: ClassVar[str]

    @property
    def listener(self) -> tuple[Any, ...]:
        """The key of the listener that serves it: endpoints with one key share it."""

    @property
    def listener_text(self) -> str:
        """The listener's address for people (``127.0.0.1:8765``, ``unix:/run/x.sock``)."""

    @property
    def binds(self) -> tuple[Any, ...]:
        """What it binds in the system, as ``AdminSpec.address`` says it: ``("tcp", host,
        port)``, ``("unix", path)``, or ``()`` for a kind that binds nothing."""

    @property
    def claim(self) -> tuple[Any, ...]:
        """What no two endpoints may both have (an address, a path)."""

    def taken(self, other: str) -> tuple[Subpath, str]:
        """Where and what to say when ``other`` (an endpoint, for people) has the claim."""

    @property
    def group(self) -> tuple[Any, ...] | None:
        """Endpoints of one group (not None) are checked pairwise with :meth:`clash`."""

    def clash(self, other: Any, who: str) -> tuple[Subpath, str] | None:
        """A conflict with another of the group that ``who`` defined, if any."""

    def check(self) -> list[tuple[Subpath, str]]:
        """What the schema cannot check: ``(subpath, message)`` per problem."""

    def secrets(self) -> frozenset[str]:
        """Values of its settings that must never reach a log line."""

    def exposure(self) -> str:
        """Who can reach it, in a word (``veylor check``): ``local``, ``loopback``,
        ``network``, or the kind's own (``nats``: whoever the NATS servers let in)."""

    def access_summary(self) -> str | None:
        """Who may connect, when the kind itself says it (None: its access settings do)."""

    def describe_endpoint(self, spec: Any) -> str | None:
        """The endpoint's line for people, when the kind has settings of its own (None:
        the usual line)."""

    def describe(self) -> str:
        """One line for people: the address and what matters about it."""

    def as_json(self) -> dict[str, Any]:
        """The settings as plain data."""


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """Where local clients connect."""

    name: str
    listen: Listen
    max_clients: int
    client_buffer: int
    slow_client: Literal["disconnect", "drop"]
    compression: bool
    max_message_size: int
    ping_interval: float | None = None
    ping_timeout: float | None = None
    socket_buffer: int | None = None  # SO_SNDBUF for each client; None: the kernel's own
    stall_timeout: float | None = None  # seconds a client may take nothing of what waits; None: any
    access: Any = None  # who may connect (veylor.config.access): WebSocketAccess, UnixAccess
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

    def describe(self) -> str:
        """One line for people."""
        own = self.listen.describe_endpoint(self)
        if own is not None:
            return own
        head = self.listen.describe() + (" compression on" if self.compression else "")
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
    _filter_key: str | None = field(compare=False, default=None, repr=False, init=False)

    def __post_init__(self) -> None:
        key = None if self.filter is None else json.dumps(thaw(self.filter), sort_keys=True)
        object.__setattr__(self, "_filter_key", key)

    def _key(self) -> tuple[Any, ...]:
        return (self.name, self.source, self.endpoints, self.filter_key, self.upstream, self.policy)

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
class AdminSpec:
    """Where the admin HTTP endpoint listens (``admin:`` in the main file): a TCP
    ``host:port`` or a Unix socket ``path`` with its ``mode``; and who may use it: the
    ``Host`` names it answers to besides its address and ``localhost``
    (``allowed_hosts``), the bearer tokens it asks for (``auth``), and whether it
    refuses what changes anything (``read_only``: reloads and taps)."""

    host: str | None = None
    port: int | None = None
    path: str | None = None
    mode: int = 0o660
    allowed_hosts: tuple[str, ...] = ()  # as written (host_key() of each is compared)
    auth: Tokens | None = None
    read_only: bool = False

    @classmethod
    def from_raw(
        cls, raw: Mapping[str, Any], base: str | None = None, out: Collected | None = None
    ) -> AdminSpec:
        """From schema-valid data with defaults applied. ``auth`` is read (its tokens
        file, relative to ``base``) only with ``out``, which collects its problems and
        the file read."""
        mode = int(raw["mode"], 8)
        common: dict[str, Any] = {
            "mode": mode,
            "allowed_hosts": tuple(str(h) for h in raw.get("allowed_hosts") or ()),
            "read_only": bool(raw.get("read_only", False)),
        }
        if raw.get("auth") is not None and out is not None:
            common["auth"] = read_tokens(raw["auth"], base if base is not None else os.getcwd(), out)
        if "unix" in raw:
            return cls(path=raw["unix"], **common)
        host, _, port = raw["listen"].rpartition(":")
        return cls(host=host.strip("[]"), port=int(port), **common)

    @property
    def address(self) -> tuple[Any, ...]:
        """What the listener binds: a new one is bound when this changes."""
        if self.path is not None:
            return ("unix", os.path.normpath(self.path))
        return ("tcp", self.host, self.port)

    def clashes(self, binds: tuple[Any, ...]) -> bool:
        """Whether an endpoint binding ``binds`` would take this address (or the port of a
        wildcard host, or be taken by it)."""
        if binds == self.address:
            return True
        if binds[:1] != ("tcp",) or self.port is None or binds[2] != self.port:
            return False
        return binds[1] in _WILDCARD_HOSTS or self.host in _WILDCARD_HOSTS

    def check(self) -> list[tuple[Subpath, str]]:
        if self.port is not None and not 1 <= self.port <= 65535:
            return [(("listen",), f"port {self.port} is not between 1 and 65535")]
        if self.path is not None and len(os.fsencode(self.path)) > _UNIX_PATH_MAX:
            return [(("unix",), f"is longer than {_UNIX_PATH_MAX} bytes: choose a shorter path")]
        out: list[tuple[Subpath, str]] = []
        for i, name in enumerate(self.allowed_hosts):
            if host_key(name) is None:
                out.append(
                    (
                        ("allowed_hosts", i),
                        f"{name!r} is not a host name or IP address: write the name alone, as a "
                        "browser puts it in the Host header (no scheme, port or path)",
                    )
                )
        return out

    def host_ok(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header (None: it has none) may be
        answered. A web page whose name an attacker points at 127.0.0.1 (DNS rebinding)
        sends its own name: only this endpoint's address (any IP address when it
        listens on every interface), ``localhost`` and ``allowed_hosts`` pass, with any
        port. On a Unix socket there is no name to check (no browser can connect to
        one; its file's mode says who may), nor without a Host (no browser omits it)."""
        if self.path is not None or header is None:
            return True
        key = _host_of(header)
        if key is None:
            return False
        if key == "localhost" or key == host_key(self.host or ""):
            return True
        if any(key == host_key(name) for name in self.allowed_hosts):
            return True
        return (self.host or "") in _WILDCARD_HOSTS and _is_ip(key)

    def secrets(self) -> frozenset[str]:
        """Its tokens: never in a log line."""
        return self.auth.values if self.auth is not None else frozenset()

    def hosts_summary(self) -> str:
        """The ``Host`` names it answers to (``veylor check``)."""
        if self.path is not None:
            return f"Host: any (a Unix socket: whoever its mode {self.mode:04o} lets in)"
        own = "any IP address" if (self.host or "") in _WILDCARD_HOSTS else (self.host or "")
        own = f"[{own}]" if ":" in own else own
        return "Host: " + ", ".join(dict.fromkeys([own, "localhost", *self.allowed_hosts]))

    def rules_summary(self) -> str:
        """What else it asks and allows (``veylor check``)."""
        auth = f"auth {self.auth.describe()}" if self.auth is not None else "auth OFF"
        mode = "read_only (no reload, no taps)" if self.read_only else "reloads and taps allowed"
        return f"web pages refused (Origin, Sec-Fetch-Site); {auth}; {mode}"

    def summary(self) -> str:
        """Who may use it, at a glance."""
        return f"{self.hosts_summary()}; {self.rules_summary()}"

    def changes(self, old: AdminSpec) -> str:
        """What a reload changes in place (same address), for the plan."""
        parts = []
        if self.mode != old.mode:
            parts.append(f"mode {self.mode:04o}")
        if self.allowed_hosts != old.allowed_hosts:
            parts.append("allowed_hosts " + (", ".join(self.allowed_hosts) or "none"))
        if self.auth != old.auth:
            parts.append(f"auth {self.auth.describe()}" if self.auth is not None else "auth off")
        if self.read_only != old.read_only:
            parts.append("read_only" if self.read_only else "read_only off")
        return ", ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """The settings as plain data (tokens never shown)."""
        return {
            "url": self.url,
            "mode": f"{self.mode:04o}" if self.path is not None else None,
            "allowed_hosts": list(self.allowed_hosts),
            "auth": None if self.auth is None else {"tokens": len(self.auth), "tokens_file": self.auth.file},
            "read_only": self.read_only,
        }

    @property
    def url(self) -> str:
        """How a client reaches it: ``http://127.0.0.1:9900`` or ``unix:/run/veylor/admin.sock``."""
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


_HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def host_key(name: str) -> str | None:
    """A host as a ``Host`` header compares it: lower case, without brackets or a final
    dot, an IP address in its canonical form (``[0:0::1]`` is ``::1``); None when it is
    neither a DNS name nor an IP address."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        ip = _canonical_ip(name[1:-1])
        return ip if ip is not None and ":" in ip else None  # (brackets are for IPv6)
    name = name[:-1] if name.endswith(".") else name
    ip = _canonical_ip(name)
    if ip is not None:
        return ip
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return name


def _canonical_ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _is_ip(key: str) -> bool:
    return _canonical_ip(key) is not None


def _host_of(header: str) -> str | None:
    """The host of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), as
    :func:`host_key` gives it; None when it is not one."""
    header = header.strip()
    if header.startswith("["):
        end = header.find("]")
        host, rest = header[: end + 1], header[end + 1 :]
        if end < 0 or _canonical_ip(host[1:-1]) is None:
            return None
    else:
        host, colon, port = header.partition(":")
        rest = colon + port
    if rest and not (rest[0] == ":" and (rest[1:] == "" or (rest[1:].isascii() and rest[1:].isdigit()))):
        return None
    return host_key(host)


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
    include: tuple[str, ...] = ()  # the main file's drop-in patterns (the schema has the default)
    limits: Limits = field(default_factory=Limits)
    admin: AdminSpec | None = None
    referenced: tuple[str, ...] = ()  # files its settings name (tokens files, certificates), read


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


def route_from(
    name: str,
    raw: Mapping[str, Any],
    origin: Location,
    compiled: CompiledFilter | None = None,
    collected: Collected | None = None,
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
    )
