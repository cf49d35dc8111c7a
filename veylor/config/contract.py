"""The kind contract: what the loader, the graph, ``veylor check`` and the TUI read of a
source's or an endpoint's spec, whatever its kind.

Each kind's spec module (:mod:`veylor.config.websocketspec`,
:mod:`veylor.config.unixspec`, :mod:`veylor.config.natsspec`) implements these
protocols, and shared code calls their hooks: it never names a kind, nor looks for a
hook with ``getattr`` (``tests/unit/test_kind_contract.py`` fails until every
registered kind implements every member).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Protocol

from .access import Subpath
from .problems import Location


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


class EndpointAccess(Protocol):
    """Who may connect to an endpoint of some kind (:mod:`veylor.config.access`:
    ``WebSocketAccess``, ``UnixAccess``); a kind whose endpoint takes no clients (NATS)
    has none."""

    @property
    def shared(self) -> tuple[str, ...] | None:
        """What every endpoint of one listener must have alike (a port's TLS certificate
        and key), compared by the loader (None: nothing)."""

    @property
    def authenticated(self) -> bool:
        """Whether a client must show who it is (a token, its uid) to connect: an endpoint
        that the network reaches without it is open to anyone (``veylor check`` says so)."""

    def secrets(self) -> frozenset[str]:
        """Values of its settings that must never reach a log line (its tokens)."""

    def summary(self) -> str:
        """Who may connect, at a glance (``veylor check``)."""

    def as_json(self) -> dict[str, Any]:
        """The settings as plain data (tokens never shown)."""
