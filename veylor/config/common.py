"""What every kind's configuration shares: sizes, URLs and their secrets, addresses, a
spec as plain data, the reconnection policy, and where a component's relative paths
start.

The bottom of :mod:`veylor.config`: each kind's specs (:mod:`veylor.config.websocketspec`,
:mod:`veylor.config.unixspec`, :mod:`veylor.config.natsspec`), the admin endpoint's and
the model (:mod:`veylor.config.model`) build on it, and the kind registry
(:mod:`veylor.config.kinds`) on them.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

from .frozen import thaw
from .problems import Location

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGkmg]?)(i?)([Bb]?)\s*$")
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


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


def parse_duration(value: float | str) -> float:
    """Seconds from ``250ms``, ``2s``, ``1.5s``, ``5m``, ``1h`` or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"not a duration: {value!r}")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def human_duration(seconds: float) -> str:
    """A duration for people: ``250ms``, ``2s``, ``1.5s``, ``5m``, ``1h``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


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


@functools.lru_cache(maxsize=4096)  # the state view asks for every source's URL at each scrape
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
        f"{k}=***" if secret_query_key(unquote_plus(k)) else (f"{k}={v}" if sep else k)
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def host_port_problem(url: str, shown: str) -> str | None:
    """What is wrong with the host and port of ``url`` (``shown``: the URL as people may
    see it, its secrets masked), if anything: a port that is not a number up to 65535,
    an IPv6 address with no closing bracket. The check WebSocket and NATS URLs share."""
    try:
        urlsplit(url).port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"{shown!r} is not a valid URL: {exc}"
    return None


def url_problem(url: str) -> str | None:
    """What the schema's pattern cannot see in a source URL, if anything."""
    problem = host_port_problem(url, redact_url(url))
    if problem is not None:
        return problem
    parts = urlsplit(url)
    if parts.fragment or url.endswith("#"):
        return f"{redact_url(url)!r} has a #fragment, which a WebSocket URL cannot have: remove it"
    try:
        unquote(parts.netloc.rpartition("@")[0], errors="strict")
    except UnicodeDecodeError:
        return (
            f"{redact_url(url)!r}: the user information is not percent-encoded UTF-8 "
            "(encode each byte of a non-ASCII character, e.g. %C3%A9 for é)"
        )
    return None


REDACTED = "<redacted>"
SKIP = object()


def plain(spec: Any, **shown: Any) -> dict[str, Any]:
    """A spec's fields as plain data (all of them: a field added to the model shows up),
    ``name`` left out, ``origin`` as text, ``shown`` replacing (or, with ``SKIP``,
    leaving out) the values of the named fields."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        if f.name == "name" or not f.init:
            continue
        value = shown.get(f.name, getattr(spec, f.name))
        if value is SKIP or f.name == "compiled":
            continue
        if f.name == "origin":
            value = str(value)
        elif dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)  # type: ignore[arg-type]
        out[f.name] = thaw(value)
    return out


def url_secrets(url: str) -> set[str]:
    """The credentials of ``url``: the password (and the Basic credential websockets
    makes of it), a user name that stands alone (a token used as the user), and the
    secret-looking query values, both as written and decoded."""
    out: set[str] = set()
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        if password:
            out.add(password)
            out.add(unquote(password))
            plain = f"{unquote(user or '')}:{unquote(password)}".encode("utf-8", "surrogateescape")
            out.add(base64.b64encode(plain).decode())
        elif user:
            out.add(user)
            out.add(unquote(user))
        if userinfo:
            out.add(userinfo)
        for item in parts.query.split("&"):
            key, _, value = item.partition("=")
            if value and secret_query_key(unquote(key)):
                out.add(value)
                out.add(unquote_plus(value))
    except ValueError:
        pass
    return out


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Backoff policy of a source."""

    initial_delay: float
    max_delay: float
    multiplier: float
    jitter: float
    max_attempts: int

    @classmethod
    def from_raw(cls, r: Mapping[str, Any]) -> Reconnect:
        return cls(
            initial_delay=float(r["initial_delay"]),
            max_delay=float(r["max_delay"]),
            multiplier=float(r["multiplier"]),
            jitter=float(r["jitter"]),
            max_attempts=int(r["max_attempts"]),
        )

    def check(self) -> list[tuple[tuple[str | int, ...], str]]:
        if self.max_delay < self.initial_delay:
            return [
                (
                    ("reconnect", "max_delay"),
                    f"max_delay ({self.max_delay:g}) is less than initial_delay ({self.initial_delay:g})",
                )
            ]
        return []


def base_dir(origin: Location) -> str:
    """The directory relative paths in a component's settings are relative to: that of
    the file that defines it."""
    return (
        os.path.dirname(os.path.abspath(origin.file)) if origin is not None and origin.file else os.getcwd()
    )


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "", "*"})  # a listener on every interface
UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, one of them the terminating NUL


def host_exposure(host: str | None) -> str:
    """Who can reach an address, in a word: ``local`` (no host: a Unix socket),
    ``loopback`` (a loopback address, or ``localhost``), or ``network`` (any other address
    or name: whatever it resolves to)."""
    if host is None:
        return "local"
    if host.lower() in ("localhost", "localhost."):
        return "loopback"
    try:
        return "loopback" if ipaddress.ip_address(host.strip("[]")).is_loopback else "network"
    except ValueError:
        return "network"
