"""Settings of the admin endpoint (``admin:`` in the main file): where it listens, the
``Host`` names it answers to, its tokens, and whether it refuses what changes anything.

The admin endpoint is no kind of endpoint (it carries no routes): the admin server
(:mod:`veylor.observe.admin`) and its clients (``veylor reload``, ``status``, ``top``)
read this spec, and the loader checks that no endpoint takes its address.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .access import Collected, Subpath, Tokens, read_tokens
from .common import UNIX_PATH_MAX, WILDCARD_HOSTS


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
    # What /readyz waits for beside Veylor itself: these sources connected, or "all":
    # every source and every NATS endpoint's connection (none: only Veylor's listeners).
    ready_requires: tuple[str, ...] | Literal["all"] = ()

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
            "ready_requires": _ready_requires(raw.get("ready_requires")),
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
        return binds[1] in WILDCARD_HOSTS or self.host in WILDCARD_HOSTS

    def check(self) -> list[tuple[Subpath, str]]:
        if self.port is not None and not 1 <= self.port <= 65535:
            return [(("listen",), f"port {self.port} is not between 1 and 65535")]
        if self.path is not None and len(os.fsencode(self.path)) > UNIX_PATH_MAX:
            return [(("unix",), f"is longer than {UNIX_PATH_MAX} bytes: choose a shorter path")]
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
        return (self.host or "") in WILDCARD_HOSTS and _is_ip(key)

    def secrets(self) -> frozenset[str]:
        """Its tokens: never in a log line."""
        return self.auth.values if self.auth is not None else frozenset()

    def hosts_summary(self) -> str:
        """The ``Host`` names it answers to (``veylor check``)."""
        if self.path is not None:
            return f"Host: any (a Unix socket: whoever its mode {self.mode:04o} lets in)"
        own = "any IP address" if (self.host or "") in WILDCARD_HOSTS else (self.host or "")
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
        if self.ready_requires != old.ready_requires:
            parts.append(f"ready_requires {self.requires_text()}")
        return ", ".join(parts)

    def requires_text(self) -> str:
        """What /readyz waits for beside Veylor itself, for people."""
        if self.ready_requires == "all":
            return "all"
        return ", ".join(self.ready_requires) or "none"

    def as_json(self) -> dict[str, Any]:
        """The settings as plain data (tokens never shown)."""
        return {
            "url": self.url,
            "mode": f"{self.mode:04o}" if self.path is not None else None,
            "allowed_hosts": list(self.allowed_hosts),
            "auth": None if self.auth is None else {"tokens": len(self.auth), "tokens_file": self.auth.file},
            "read_only": self.read_only,
            "ready_requires": self.ready_requires
            if self.ready_requires == "all"
            else list(self.ready_requires),
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


def _ready_requires(raw: Any) -> tuple[str, ...] | Literal["all"]:
    if raw == "all":
        return "all"
    return tuple(str(name) for name in raw or ())


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
