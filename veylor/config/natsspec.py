"""Settings of the NATS kinds (scale-out): an endpoint that publishes each message to a
subject, and a source that subscribes to one.

A core Veylor, holding the real upstream connection, routes it to a NATS endpoint;
edge Veylors on other machines have NATS sources and serve their own clients. The
wire between them is NATS's own (with headers): the payload bytes unchanged, and

- ``Veylor-Type``: ``text`` or ``binary`` (the frame type, restored at the edge);
- ``Veylor-Node``: the publishing connection's id (new at each connection);
- ``Veylor-Seq``: 1, 2, 3... per node and subject: an edge counts the gaps.

Client messages from edges go to the endpoint's *upstream subject* (by default
``_VEYLOR.up.`` + its subject), which the core's NATS endpoint subscribes to; they reach
the real upstream through the core's routes with ``upstream: true``.

Built through the kind registry (:mod:`veylor.config.kinds`); like every kind's specs,
on the shared helpers of :mod:`veylor.config.common` and the kind contract
(:mod:`veylor.config.contract`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from .access import Collected, SourceTLS, Subpath, read_source_tls, resolve_path, why_unreadable
from .common import (
    SKIP,
    Reconnect,
    base_dir,
    format_size,
    host_port_problem,
    parse_size,
    plain,
    redact_url,
    url_secrets,
)
from .problems import Location

UPSTREAM_PREFIX = "_VEYLOR.up."  # client messages from edges: this + the endpoint's subject
HEADER_TYPE = "Veylor-Type"
HEADER_NODE = "Veylor-Node"
HEADER_SEQ = "Veylor-Seq"


def subject_problem(subject: str, wildcards: bool) -> str | None:
    """What is wrong with a NATS subject, for people (None: nothing). ``wildcards``:
    whether ``*`` and a final ``>`` are allowed (a subscription) or not (a publisher)."""
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token:
            return f"{subject!r} has an empty token (two dots in a row, or a dot at an end)"
        if any(c.isspace() for c in token):
            return f"{subject!r} contains white space"
        if token in ("*", ">"):
            if not wildcards:
                return (
                    f"{subject!r} has a wildcard: an endpoint publishes to one exact subject "
                    "(wildcards are for sources)"
                )
            if token == ">" and i != len(tokens) - 1:
                return f"{subject!r}: '>' may only be the last token"
        elif "*" in token or ">" in token:
            return f"{subject!r}: '*' and '>' are wildcards only as whole tokens (a.*.c, a.>)"
    return None


def _userinfo(url: str) -> str | None:
    """What comes between ``://`` and the last ``@`` (a user and password, or a token),
    read the plain way: ``urlsplit`` stops at a ``/``, ``?`` or ``#`` in a password."""
    _, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return None
    return rest.rsplit("@", 1)[0]


def mask_url(url: str) -> str:
    """A NATS server URL fit for logs and screens: whatever is before the last ``@``
    (user, password, token) masked whole."""
    info = _userinfo(url)
    if info is None:
        if "://" not in url:
            return url
        shown = redact_url(url)
        # (a URL too broken to split, with no user information and no query, holds no
        # secret: shown as written, so that people see what is wrong with it)
        return url if shown == "<invalid URL>" and "?" not in url else shown
    scheme = url.partition("://")[0]
    return f"{scheme}://***@{url.partition('://')[2].rsplit('@', 1)[1]}"


def has_wildcard(subject: str) -> bool:
    return any(t in ("*", ">") for t in subject.split("."))


def _host_port_problem(url: str) -> str | None:
    """What is wrong with a NATS server URL's host and port (as for a source's ws:// URL,
    and a host and a port a server can listen on), for people."""
    fix = "write nats://HOST:PORT (or tls://HOST:PORT)"
    problem = host_port_problem(url, mask_url(url))
    if problem is not None:
        return f"{problem}: {fix}"
    parts = urlsplit(url)
    if not parts.hostname:
        return f"{mask_url(url)!r} names no host: {fix}"
    if parts.port == 0:
        return f"{mask_url(url)!r}: port 0 is not a port a server listens on: {fix}"
    return None


@dataclass(frozen=True, slots=True)
class NatsLink:
    """How to reach a NATS cluster: what a NATS endpoint and a NATS source share."""

    servers: tuple[str, ...]
    credentials: str | None = None  # a .creds file (JWT and NKey seed), read by the client library
    credentials_digest: str = ""  # its SHA-256: a changed file reconnects
    tls: SourceTLS | None = None
    stall_timeout: float = 10.0  # seconds without a message or a PONG that make the connection anew

    @classmethod
    def read(cls, raw: Mapping[str, Any], base: str, out: Collected) -> NatsLink:
        servers = raw["servers"]
        servers = (servers,) if isinstance(servers, str) else tuple(dict.fromkeys(servers))
        tls = read_source_tls(raw["tls"], base, out) if raw.get("tls") is not None else None
        creds, digest = raw.get("credentials"), ""
        if creds is not None:
            creds = resolve_path(creds, base)
            try:
                blob = out.read(creds)
            except OSError as exc:
                out.add(("credentials",), f"cannot read the credentials file: {why_unreadable(exc)}")
            else:
                digest = hashlib.sha256(blob).hexdigest()
                if b"-----BEGIN NATS USER JWT-----" not in blob:
                    out.add(
                        ("credentials",),
                        f"{creds} is not a NATS credentials file (it has no '-----BEGIN NATS USER JWT-----' "
                        "block): make one with `nsc generate creds`",
                    )
        return cls(servers, creds, digest, tls, float(raw.get("stall_timeout", 10.0)))

    @property
    def safe_servers(self) -> tuple[str, ...]:
        return tuple(mask_url(s) for s in self.servers)

    def check(self) -> list[tuple[Subpath, str]]:
        out: list[tuple[Subpath, str]] = []
        for i, url in enumerate(self.servers):
            where = ("servers", i) if len(self.servers) > 1 else ("servers",)
            scheme, sep, rest = url.partition("://")
            info = _userinfo(url)
            if not sep or scheme not in ("nats", "tls") or not rest.strip("/"):
                out.append(
                    (
                        where,
                        f"{mask_url(url)!r} is not a NATS server URL: write nats://HOST:PORT (or tls://HOST:PORT)",
                    )
                )
            elif info is not None and any(c in info for c in "/?#"):
                out.append(
                    (
                        where,
                        f"{mask_url(url)!r}: its user, password or token holds '/', '?' or '#', which end "
                        "that part of a URL: percent-encode them (%2F, %3F, %23)",
                    )
                )
            else:
                problem = _host_port_problem(url)
                if problem is not None:
                    out.append((where, problem))
        return out

    def secrets(self) -> frozenset[str]:
        out: set[str] = set()
        for url in self.servers:
            out.update(url_secrets(url))
            info = _userinfo(url)
            if info:
                out.add(info)
                password = info.partition(":")[2]
                out.update(p for p in (password, unquote(password), unquote(info)) if p)
        return frozenset(out)

    def describe(self) -> str:
        servers = self.safe_servers
        text = servers[0] + (f" (+{len(servers) - 1} more)" if len(servers) > 1 else "")
        if self.credentials:
            text += f", credentials {self.credentials}"
        if self.tls is not None:
            text += f", {self.tls.describe()}"
        return text

    def as_json(self) -> dict[str, Any]:
        return {
            "servers": list(self.safe_servers),
            "credentials": self.credentials,
            "tls": None if self.tls is None else {"ca_file": self.tls.ca_file, "verify": self.tls.verify},
            "stall_timeout": self.stall_timeout,
        }


@dataclass(frozen=True, slots=True)
class NatsListen:
    """A NATS endpoint: the subject it publishes to, the one it takes client messages
    from, and how to reach NATS. Its "listener" is its own connection to NATS."""

    kind: ClassVar[str] = "nats"
    link: NatsLink
    subject: str
    upstream_subject: str
    stream: str | None = None  # JetStream: publish with acknowledgements into this stream
    max_msgs_per_subject: int = 100_000  # the stream's limit, when Veylor creates it
    replicas: int = 1  # ... and its copies

    @classmethod
    def read(cls, raw: Mapping[str, Any], base: str, out: Collected) -> NatsListen:
        subject = raw["subject"]
        return cls(
            NatsLink.read(raw, base, out),
            subject,
            raw.get("upstream_subject") or UPSTREAM_PREFIX + subject,
            raw.get("stream"),
            int(raw["max_msgs_per_subject"]),
            int(raw["replicas"]),
        )

    @property
    def listener(self) -> tuple[Any, ...]:
        """One connection per NATS endpoint: any change to it reconnects."""
        return ("nats", self)

    @property
    def listener_text(self) -> str:
        return f"nats:{self.subject}"

    binds: ClassVar[tuple[Any, ...]] = ()  # (nothing in this system)

    @property
    def claim(self) -> tuple[Any, ...]:
        return ("nats", self.subject)

    def taken(self, other: str) -> tuple[Subpath, str]:
        return (
            ("subject",),
            f"subject {self.subject} is already published by {other}: two publishers on one subject "
            "would mix their sequence numbers; give each NATS endpoint its own subject",
        )

    group = None

    def clash(self, other: Any, who: str) -> tuple[Subpath, str] | None:
        return None

    def check(self) -> list[tuple[Subpath, str]]:
        out = self.link.check()
        for key, subject in (("subject", self.subject), ("upstream_subject", self.upstream_subject)):
            problem = subject_problem(subject, wildcards=False)
            if problem is not None:
                out.append(((key,), problem))
                break  # (a wrong subject makes a wrong default upstream subject: said once)
        if self.upstream_subject == self.subject:
            out.append(
                (
                    ("upstream_subject",),
                    "is the subject it publishes to: client messages would go to every edge",
                )
            )
        return out

    def secrets(self) -> frozenset[str]:
        return self.link.secrets()

    def exposure(self) -> str:
        return "nats"  # whoever the NATS servers let subscribe to the subject

    def describe_endpoint(self, spec: Any) -> str:
        """The endpoint's line: what of its settings applies to this kind."""
        return f"{self.describe()}; client_buffer {format_size(spec.client_buffer)} (waiting for NATS)"

    def access_summary(self) -> str:
        creds = "its credentials" if self.link.credentials else "no credentials"
        return (
            f"whoever the NATS servers let subscribe to {self.subject} receives the feed, and whoever they "
            f"let publish to {self.upstream_subject} sends as its clients ({creds}; NATS's own permissions decide)"
        )

    def describe(self) -> str:
        stream = (
            f"; JetStream stream {self.stream} (R{self.replicas}, {self.max_msgs_per_subject} messages)"
            if self.stream
            else ""
        )
        return (
            f"NATS subject {self.subject} on {self.link.describe()}{stream}; "
            f"client messages from {self.upstream_subject}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            **self.link.as_json(),
            "subject": self.subject,
            "upstream_subject": self.upstream_subject,
            "stream": self.stream,
            "max_msgs_per_subject": self.max_msgs_per_subject,
            "replicas": self.replicas,
        }

    def __str__(self) -> str:
        return f"nats:{self.subject}"


@dataclass(frozen=True, slots=True)
class NatsSourceSpec:
    """A subscription to a NATS subject (an edge's view of a core's endpoint)."""

    kind: ClassVar[str] = "nats"
    name: str
    link: NatsLink
    subject: str  # exact, or with wildcards
    queue: str | None  # a queue group: each message goes to one member of the group
    upstream_subject: str | None  # where client messages go (None: a wildcard subject, not set)
    reconnect: Reconnect
    upstream_queue: int
    on_disconnect: Literal["keep", "close_clients"]
    max_message_size: int
    stream: str | None = None  # JetStream: read the subject from this stream
    replay: str | int | tuple[str, int] = (
        "last"  # where it starts with no position: last, N, ("from_sequence", S)
    )
    position_file: str | None = None  # where the last stream sequence delivered is kept
    origin: Location = field(compare=False, default=Location(""))

    @property
    def safe_url(self) -> str:
        return f"{self.link.safe_servers[0]} {self.subject}"

    def upstream_problem(self) -> str | None:
        if self.upstream_subject is None:
            return (
                f"subscribes to {self.subject}, a wildcard subject: it cannot tell where client messages "
                "go; set its nats.upstream_subject"
            )
        return None

    def state_file(self) -> tuple[Subpath, str] | None:
        return (("nats", "position_file"), self.position_file) if self.position_file is not None else None

    def check(self) -> list[tuple[Subpath, str]]:
        out: list[tuple[Subpath, str]] = [(("nats", *sub), text) for sub, text in self.link.check()]
        problem = subject_problem(self.subject, wildcards=True)
        if problem is not None:
            out.append((("nats", "subject"), problem))
        if self.stream is not None and self.queue is not None:
            out.append(
                (
                    ("nats", "queue"),
                    "does not go with stream: a stream is read in order by each source; "
                    "use queue with core NATS only",
                )
            )
        if self.stream is None and self.position_file is not None:
            out.append(
                (
                    ("nats", "position_file"),
                    "applies with stream only: without JetStream there is nothing to resume from",
                )
            )
        if self.upstream_subject is not None:
            problem = subject_problem(self.upstream_subject, wildcards=False)
            if problem is not None:
                out.append((("nats", "upstream_subject"), problem))
        return out + self.reconnect.check()

    def secrets(self) -> frozenset[str]:
        return self.link.secrets()

    def describe(self) -> str:
        queue = f", queue group {self.queue}" if self.queue else ""
        if self.stream:
            replay = self.replay if not isinstance(self.replay, tuple) else f"from sequence {self.replay[1]}"
            kept = f", position kept in {self.position_file}" if self.position_file else ""
            queue += f", JetStream stream {self.stream} (replay {replay}{kept})"
        up = (
            f"; client messages to {self.upstream_subject}"
            if self.upstream_subject
            else "; client messages go nowhere (a wildcard subject: set nats.upstream_subject)"
        )
        return f"NATS subject {self.subject}{queue} on {self.link.describe()}{up}; on_disconnect {self.on_disconnect}"

    def as_json(self) -> dict[str, Any]:
        replay = {"from_sequence": self.replay[1]} if isinstance(self.replay, tuple) else self.replay
        nats = {
            **self.link.as_json(),
            "subject": self.subject,
            "queue": self.queue,
            "upstream_subject": self.upstream_subject,
            "stream": self.stream,
            "replay": replay,
            "position_file": self.position_file,
        }
        skip = dict.fromkeys(
            ("link", "subject", "queue", "upstream_subject", "stream", "replay", "position_file"), SKIP
        )
        return {"nats": nats, **plain(self, **skip)}


def nats_source(
    name: str, raw: Mapping[str, Any], origin: Location, collected: Collected | None = None
) -> NatsSourceSpec:
    """A :class:`NatsSourceSpec` from schema-valid data with defaults applied."""
    out = collected if collected is not None else Collected()
    nats = raw["nats"]
    subject = nats["subject"]
    up = nats.get("upstream_subject")
    if up is None and not has_wildcard(subject):
        up = UPSTREAM_PREFIX + subject
    mine = Collected()
    base = base_dir(origin)
    link = NatsLink.read(nats, base, mine)
    out.files.extend(mine.files)
    out.problems.extend(dataclasses.replace(p, subpath=("nats", *p.subpath)) for p in mine.problems)
    return NatsSourceSpec(
        name=name,
        link=link,
        subject=subject,
        queue=nats.get("queue"),
        upstream_subject=up,
        reconnect=Reconnect.from_raw(raw["reconnect"]),
        upstream_queue=int(raw["upstream_queue"]),
        on_disconnect=raw["on_disconnect"],
        max_message_size=parse_size(raw["max_message_size"]),
        stream=nats.get("stream"),
        replay=_replay(nats["replay"]),
        position_file=resolve_path(nats["position_file"], base) if nats.get("position_file") else None,
        origin=origin,
    )


def _replay(raw: Any) -> str | int | tuple[str, int]:
    return ("from_sequence", int(raw["from_sequence"])) if isinstance(raw, Mapping) else raw


__all__ = ["NatsLink", "NatsListen", "NatsSourceSpec", "nats_source", "subject_problem"]
