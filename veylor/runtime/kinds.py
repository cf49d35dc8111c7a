"""The seams of the runtime: what the supervisor and the fan-out need of each kind of
source, endpoint and listener, and the registry that finds a kind's implementation.

The configuration model names every kind and the module that implements it
(:data:`veylor.config.model.ENDPOINT_KINDS`, :data:`~veylor.config.model.SOURCE_KINDS`);
that module defines ``KIND``, a :class:`RuntimeKind`. Nothing else in the runtime
names a concrete kind: the supervisor makes components with :func:`make_source`,
:func:`make_endpoint` and :func:`make_listener` and drives them through the
interfaces below; the fan-out frames each message with the endpoint's
:class:`~veylor.runtime.wire.Wire` and hands it to :meth:`Endpoint.enqueue`.

A listener is whatever takes new clients for endpoints: a WebSocket server on a
host:port that dispatches by path to several endpoints, a Unix socket for one. Its
key (``spec.listen.listener``) says which endpoints share it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..config.model import ENDPOINT_KINDS, SOURCE_KINDS, EndpointSpec, Kind, SourceSpec

if TYPE_CHECKING:
    from .budget import Budget
    from .endpoints import Endpoint
    from .stats import EndpointStats, SourceStats

ListenerKey = tuple[Any, ...]  # (kind, address...), e.g. ("websocket", host, port), ("unix", path)
Dispatch = Callable[[str, bytes, bool], None]


class SourceKind(Protocol):
    """A running source: keeps its upstream connection and hands each message to the
    fan-out's ``dispatch(name, payload, is_text)``."""

    name: str
    spec: Any
    stats: SourceStats
    state: str  # "connected" when messages can flow; the kind's own words otherwise

    def start(self) -> None:
        """Begin connecting (in a task of its own)."""

    async def restart(self, spec: Any) -> None:
        """Reconnect with new settings; counters and queued client messages are kept."""

    async def stop(self) -> None:
        """Stop connecting and close the connection, bounded in time."""

    def send(self, data: bytes, is_text: bool) -> None:
        """A client's message to the upstream (sent now, or queued, bounded)."""

    def status(self) -> dict[str, Any]:
        """Its state as plain data: ``state`` and what the kind knows beside."""


class Listener(Protocol):
    """Takes new clients for the endpoints attached to it."""

    key: ListenerKey

    def attach(self, endpoints: Sequence[Endpoint]) -> None:
        """Serve these endpoint objects from now on (before :meth:`start`, and again at
        each reload that changes them: new clients go to the new objects)."""

    async def start(self) -> None:
        """Bind; :class:`~veylor.runtime.endpoints.StartupError` naming the endpoints and
        the address if it cannot."""

    def stop_accepting(self) -> None:
        """No new clients from now on."""

    async def close(self) -> None:
        """Stop accepting and release what it holds (wait for the server to close,
        remove a socket file)."""

    def describe(self) -> str:
        """``ws://127.0.0.1:8765 for ticker (/ticker)``: for the startup log."""


@dataclass(frozen=True)
class RuntimeKind:
    """What a kind's module provides (as ``KIND``); a kind has sources, or endpoints
    and their listeners, or both."""

    endpoint: type[Endpoint] | None = None
    listener: Callable[[ListenerKey], Listener] | None = None
    source: Callable[[Any, Dispatch, Callable[[Any], None], SourceStats], SourceKind] | None = None


def _implementation(table: Mapping[str, Kind], kind: str) -> RuntimeKind:
    module = importlib.import_module(table[kind].runtime)
    return module.KIND  # type: ignore[no-any-return]


def make_endpoint(
    spec: EndpointSpec, stats: EndpointStats | None = None, budget: Budget | None = None
) -> Endpoint:
    """A new endpoint object for ``spec`` (serving nothing until a listener attaches it)."""
    cls = _implementation(ENDPOINT_KINDS, spec.kind).endpoint
    assert cls is not None, f"endpoint kind {spec.kind} has no endpoint class"
    return cls(spec, stats, budget)


def make_listener(key: ListenerKey) -> Listener:
    """A new, unbound listener for ``key`` (its first item is the endpoint kind)."""
    factory = _implementation(ENDPOINT_KINDS, key[0]).listener
    assert factory is not None, f"endpoint kind {key[0]} has no listener"
    return factory(key)


def make_source(
    spec: SourceSpec, dispatch: Dispatch, dropped: Callable[[Any], None], stats: SourceStats
) -> SourceKind:
    """A new, not yet started source for ``spec``."""
    factory = _implementation(SOURCE_KINDS, spec.kind).source
    assert factory is not None, f"source kind {spec.kind} has no source class"
    return factory(spec, dispatch, dropped, stats)
