"""Who may connect to an endpoint and what its clients may send upstream: the access part
of the configuration model, and the files it reads (tokens, TLS certificates).

Built by the loader, in its worker thread (files are read there, never on the event
loop). A spec here compares equal when the settings are equal, file contents included
(a ``tokens_file`` or a certificate that changed on disk is a changed setting: a reload
applies it in place). Token values are kept only to be masked in logs; handshakes look
up the SHA-256 digest of the presented token, so no comparison depends on how much of a
token an attacker guessed.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..filters import CompiledFilter, FilterError, compile_filter
from .frozen import freeze, thaw

MIN_TOKEN = 16  # characters a token needs at least (``openssl rand -hex 32`` gives 64)
MAX_REFERENCED_FILE = 1 * 2**20  # a tokens file or certificate larger than this is refused unread

Subpath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class FileProblem:
    """A problem found building an access spec: at ``subpath`` of the endpoint's kind key,
    or in another file (``file``, ``line``: a tokens file's line)."""

    subpath: Subpath
    message: str
    file: str | None = None
    line: int = 0
    warning: bool = False


@dataclass
class Collected:
    """What building specs found: problems, and every file the settings name (path,
    SHA-256 of its bytes, or a mark of why it could not be read), which makes part of
    the configuration's digest and of what the watcher watches.

    A file is recorded whether its read succeeded or not: a component whose file was
    missing or unreadable is then never kept from one load to the next (only
    components that name no file are), so a file that comes back applies at the next
    change or SIGHUP like any edit, and its path is watched while it is missing."""

    problems: list[FileProblem] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.problems.append(FileProblem(*args, **kwargs))

    def read(self, path: str) -> bytes:
        """``path``'s bytes (:func:`read_small`), recorded either way; an :class:`OSError`
        is raised again once recorded."""
        try:
            blob = read_small(path)
        except OSError as exc:
            self.files.append((path, _unread_mark(exc)))
            raise
        self.files.append((path, hashlib.sha256(blob).digest()))
        return blob


def _unread_mark(exc: OSError) -> bytes:
    """What a file that could not be read adds to the digest: why (missing, denied, not
    a regular file), so that a change of reason is a change, and never a SHA-256."""
    return b"unread:" + (errno.errorcode.get(exc.errno, "") if exc.errno else type(exc).__name__).encode()


def token_digest(token: str | bytes) -> bytes:
    """What a handshake looks up: the SHA-256 of the token."""
    return hashlib.sha256(
        token.encode("utf-8", "surrogateescape") if isinstance(token, str) else token
    ).digest()


@dataclass(frozen=True, slots=True)
class Tokens:
    """Bearer tokens a WebSocket endpoint accepts (``auth:``). Only their digests take
    part in comparisons and lookups; the tokens are kept to be masked in log lines."""

    digests: frozenset[bytes] = field(repr=False)
    file: str | None = None  # tokens_file, where they came from
    values: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.digests)

    def describe(self) -> str:
        n = len(self.digests)
        where = f" from {self.file}" if self.file else ""
        return f"{n} token{'s' * (n != 1)}{where}"


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """A WebSocket endpoint's certificate and key (wss://). ``digest`` is the SHA-256 of
    both files as read at load: a certificate renewed on disk is a changed setting, which
    a reload applies to new connections without closing any."""

    cert: str
    key: str
    digest: str = ""

    def context(self) -> ssl.SSLContext:
        """A server context with this certificate, TLS 1.2 at least."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


@dataclass(frozen=True, slots=True)
class SourceTLS:
    """How a source checks its upstream's certificate (``tls:`` of a wss:// source)."""

    ca_file: str | None = None
    verify: bool = True
    digest: str = ""  # SHA-256 of the CA file: a changed CA reconnects the source

    def context(self) -> ssl.SSLContext:
        """A client context: the system's CAs, or ``ca_file``'s; no verification at all
        when ``verify`` is false (the source logs a warning at every connect)."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def describe(self) -> str:
        if not self.verify:
            return "TLS verification OFF"
        return f"TLS CA {self.ca_file}" if self.ca_file else "TLS system CAs"


@dataclass(frozen=True, slots=True)
class WebSocketAccess:
    """Who may connect to a WebSocket endpoint, and how long a handshake may take."""

    auth: Tokens | None = None
    allowed_origins: tuple[str, ...] = ()  # empty: any Origin
    require_origin: bool = False
    tls: ServerTLS | None = None
    handshake_timeout: float = 10.0
    max_pending: int = 256
    max_pending_per_ip: int = 16  # from one IPv4 address, or one IPv6 /64

    @property
    def shared(self) -> tuple[str, str] | None:
        """What every endpoint of one listener (host and port) must have alike."""
        return (self.tls.cert, self.tls.key) if self.tls is not None else None

    @property
    def authenticated(self) -> bool:
        """Whether a client must present a token."""
        return self.auth is not None

    def origin_ok(self, origin: str | None) -> bool:
        """Whether a request with this ``Origin`` header (None: it has none) may connect."""
        if origin is None:
            return not self.require_origin
        if not self.allowed_origins:
            return True
        origin = origin.lower()
        return any(
            fnmatch.fnmatchcase(origin, pattern) if "*" in pattern else origin == pattern
            for pattern in self.allowed_origins
        )

    def secrets(self) -> frozenset[str]:
        return self.auth.values if self.auth is not None else frozenset()

    def summary(self) -> str:
        """What is open, at a glance (``veylor check``)."""
        auth = (
            f"auth {self.auth.describe()}" if self.auth is not None else "auth OFF (anyone who can connect)"
        )
        origins = "origins " + (", ".join(self.allowed_origins) if self.allowed_origins else "any")
        origins += " (Origin required)" if self.require_origin else " (requests without Origin allowed)"
        tls = f"TLS {self.tls.cert}" if self.tls is not None else "TLS off"
        return f"{auth}; {origins}; {tls}"

    def as_json(self) -> dict[str, Any]:
        return {
            "auth": None if self.auth is None else {"tokens": len(self.auth), "tokens_file": self.auth.file},
            "allowed_origins": list(self.allowed_origins),
            "require_origin": self.require_origin,
            "tls": None if self.tls is None else {"cert": self.tls.cert, "key": self.tls.key},
            "handshake_timeout": self.handshake_timeout,
            "max_pending": self.max_pending,
            "max_pending_per_ip": self.max_pending_per_ip,
        }


@dataclass(frozen=True, slots=True)
class UnixAccess:
    """Which local users may connect to a Unix endpoint (checked with ``SO_PEERCRED``):
    a peer whose uid is in ``allowed_uids`` or whose gid is in ``allowed_gids``; both
    empty: anyone the socket file's mode lets in."""

    allowed_uids: frozenset[int] = frozenset()
    allowed_gids: frozenset[int] = frozenset()

    shared = None  # (no two Unix endpoints share a socket)

    @property
    def authenticated(self) -> bool:
        """Whether a peer's uid or gid is checked (not only the socket file's mode)."""
        return bool(self.allowed_uids or self.allowed_gids)

    def admits(self, uid: int, gid: int) -> bool:
        if not self.authenticated:
            return True
        return uid in self.allowed_uids or gid in self.allowed_gids

    def secrets(self) -> frozenset[str]:
        return frozenset()

    def summary(self) -> str:
        if not self.allowed_uids and not self.allowed_gids:
            return "peers: anyone the mode lets in"
        parts = []
        if self.allowed_uids:
            parts.append("uids " + ",".join(map(str, sorted(self.allowed_uids))))
        if self.allowed_gids:
            parts.append("gids " + ",".join(map(str, sorted(self.allowed_gids))))
        return "peers: " + " or ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {"allowed_uids": sorted(self.allowed_uids), "allowed_gids": sorted(self.allowed_gids)}


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    """What a route lets its endpoints' clients send to its source (``upstream: {...}``):
    only messages an ``allow`` filter passes (None: all), at most ``rate`` a second per
    client with bursts of ``burst`` (None: no limit). Over the rate, messages are dropped
    (``over_rate: drop``), or the client is closed (1008) once it has stayed over it
    for ``CLOSE_AFTER`` seconds (``over_rate: close``)."""

    allow: tuple[Any, ...] | None = None  # the filters as written (frozen)
    rate: float | None = None
    burst: int = 1
    over_rate: Literal["drop", "close"] = "drop"
    compiled: CompiledFilter | None = field(default=None, compare=False, repr=False)

    CLOSE_AFTER = 5.0

    def __hash__(self) -> int:
        return hash((json.dumps(thaw(self.allow), sort_keys=True), self.rate, self.burst, self.over_rate))

    def describe(self) -> str:
        parts = []
        if self.allow is not None:
            parts.append(f"allow {len(self.allow)} filter{'s' * (len(self.allow) != 1)}")
        if self.rate is not None:
            parts.append(f"rate {self.rate:g}/s burst {self.burst}, over it: {self.over_rate}")
        return ", ".join(parts) or "all"

    def as_json(self) -> dict[str, Any]:
        return {
            "allow": thaw(self.allow),
            "rate": self.rate,
            "burst": self.burst,
            "over_rate": self.over_rate,
        }


# ---------------------------------------------------------------- building (the loader's thread)


def resolve_path(path: str, base: str) -> str:
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def read_small(path: str) -> bytes:
    """A referenced file's bytes: non-blocking open, regular files only, size-capped
    (:class:`OSError` with a message for people otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        blob = fh.read(MAX_REFERENCED_FILE + 1)
    if len(blob) > MAX_REFERENCED_FILE:
        raise OSError(f"{path} is larger than {MAX_REFERENCED_FILE // 2**20} MiB")
    return blob


def why_unreadable(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename or 'the file'} does not exist"
    if isinstance(exc, PermissionError):
        return f"{exc.filename or 'the file'}: permission denied (uid {os.geteuid()} must be able to read it)"
    return exc.strerror or str(exc)


def _check_token(token: str) -> str | None:
    if len(token) < MIN_TOKEN:
        return (
            f"a token has {len(token)} characters; use at least {MIN_TOKEN} "
            "(e.g. the output of `openssl rand -hex 32`)"
        )
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token):
        return "a token contains whitespace or a control character"
    return None


def read_tokens(raw: Mapping[str, Any], base: str, out: Collected) -> Tokens | None:
    """``auth: {tokens: [...]}`` or ``{tokens_file: PATH}`` (one token per line; blank
    lines and ``#`` comments ignored). Problems never show a token."""
    if "tokens" in raw:
        tokens = [str(t) for t in raw["tokens"]]
        for i, token in enumerate(tokens):
            problem = _check_token(token)
            if problem is not None:
                out.add(("auth", "tokens", i), problem + " (the token is not shown)")
        return Tokens(frozenset(map(token_digest, tokens)), None, frozenset(tokens))
    path = resolve_path(raw["tokens_file"], base)
    try:
        blob = out.read(path)
        st = os.stat(path)
    except OSError as exc:
        out.add(("auth", "tokens_file"), f"cannot read the tokens file: {why_unreadable(exc)}")
        return None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        out.add(("auth", "tokens_file"), f"{path} is not UTF-8 text")
        return None
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        problem = _check_token(token)
        if problem is not None:
            out.add((), problem + " (the token is not shown)", file=path, line=number)
            continue
        tokens.append(token)
    if not tokens and not any(p.file == path for p in out.problems):
        out.add(
            ("auth", "tokens_file"),
            f"{path} has no tokens: no client could connect (one token per line; "
            "to let every client in, remove auth)",
        )
    if st.st_mode & 0o004:
        out.add(
            ("auth", "tokens_file"),
            f"{path} is readable by every user: `chmod 600` it (or 640 with Veylor's group)",
            warning=True,
        )
    return Tokens(frozenset(map(token_digest, tokens)), path, frozenset(tokens))


def read_server_tls(raw: Mapping[str, Any], base: str, out: Collected) -> ServerTLS | None:
    """``tls: {cert, key}`` of a WebSocket endpoint, loaded once here to refuse what
    would fail at bind time (a wrong key, a file that is not PEM)."""
    cert, key = resolve_path(raw["cert"], base), resolve_path(raw["key"], base)
    digest = hashlib.sha256()
    unread = False
    for name, path in (("cert", cert), ("key", key)):
        try:  # both, whatever the first gives: each is recorded (and watched)
            digest.update(out.read(path) + b"\0")
        except OSError as exc:
            out.add(("tls", name), f"cannot read it: {why_unreadable(exc)}")
            unread = True
    if unread:
        return None
    spec = ServerTLS(cert, key, digest.hexdigest())
    try:
        spec.context()
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).replace("_", " ").lower()
        out.add(
            ("tls",),
            f"cannot use {cert} with {key}: {reason} (both must be PEM, and the key the "
            "certificate's; put intermediate certificates after it in the cert file)",
        )
        return None
    except OSError as exc:
        out.add(("tls",), f"cannot load the certificate: {why_unreadable(exc)}")
        return None
    return spec


def read_source_tls(raw: Mapping[str, Any], base: str, out: Collected) -> SourceTLS:
    """``tls: {ca_file, verify}`` of a source."""
    verify = bool(raw.get("verify", True))
    ca = raw.get("ca_file")
    if ca is None:
        return SourceTLS(None, verify)
    path = resolve_path(ca, base)
    try:
        blob = out.read(path)
        SourceTLS(path, verify).context()
    except OSError as exc:  # (ssl.SSLError is an OSError)
        reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else why_unreadable(exc)
        out.add(("tls", "ca_file"), f"cannot use it as a CA file: {reason}")
        return SourceTLS(path, verify)
    return SourceTLS(path, verify, hashlib.sha256(blob).hexdigest())


def websocket_access(raw: Mapping[str, Any], base: str, out: Collected) -> WebSocketAccess:
    """The access part of a ``websocket:`` endpoint (schema-valid, defaults applied)."""
    auth = read_tokens(raw["auth"], base, out) if raw.get("auth") is not None else None
    tls = read_server_tls(raw["tls"], base, out) if raw.get("tls") is not None else None
    origins = tuple(o.lower().rstrip("/") for o in raw.get("allowed_origins") or ())
    return WebSocketAccess(
        auth=auth,
        allowed_origins=origins,
        require_origin=bool(raw["require_origin"]),
        tls=tls,
        handshake_timeout=float(raw["handshake_timeout"]),
        max_pending=int(raw["max_pending"]),
        max_pending_per_ip=int(raw["max_pending_per_ip"]),
    )


def unix_access(raw: Mapping[str, Any], base: str, out: Collected) -> UnixAccess:
    """The access part of a ``unix:`` endpoint."""
    return UnixAccess(
        frozenset(int(u) for u in raw.get("allowed_uids") or ()),
        frozenset(int(g) for g in raw.get("allowed_gids") or ()),
    )


def upstream_policy(raw: Any, out: Collected) -> UpstreamPolicy | None:
    """``upstream: {allow, rate, burst, over_rate}`` (None for true or false)."""
    if not isinstance(raw, Mapping):
        return None
    allow = raw.get("allow")
    compiled = None
    if allow is not None:
        try:
            compiled = compile_filter({"any": list(allow)})
        except FilterError as exc:
            sub: Subpath = (
                ("upstream", "allow", *exc.path[1:]) if exc.path[:1] == ("any",) else ("upstream", "allow")
            )
            out.add(sub, exc.message)
    rate = raw.get("rate")
    burst = raw.get("burst")
    if burst is None:
        burst = max(1, int(rate)) if rate is not None else 1
    return UpstreamPolicy(
        allow=freeze(list(allow)) if allow is not None else None,
        rate=float(rate) if rate is not None else None,
        burst=int(burst),
        over_rate=raw.get("over_rate", "drop"),
        compiled=compiled,
    )
