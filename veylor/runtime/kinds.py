"""The registry that finds a kind's implementation in the runtime; what the supervisor
and the fan-out need of each kind of source, endpoint and listener is in
:mod:`veylor.runtime.interfaces`.

The configuration model names every kind and the module that implements it
(:data:`veylor.config.kinds.ENDPOINT_KINDS`, :data:`~veylor.config.kinds.SOURCE_KINDS`);
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config.contract import SourceKindSpec
from ..config.kinds import ENDPOINT_KINDS, SOURCE_KINDS, Kind
from ..config.model import EndpointSpec
from .interfaces import Dispatch, Listener, ListenerKey, SourceKind

if TYPE_CHECKING:
    from .budget import Budget
    from .endpoints import Endpoint
    from .stats import EndpointStats, SourceStats


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
    if cls is None:
        raise RuntimeError(f"endpoint kind {spec.kind} has no endpoint class")
    return cls(spec, stats, budget)


def make_listener(key: ListenerKey) -> Listener:
    """A new, unbound listener for ``key`` (its first item is the endpoint kind)."""
    factory = _implementation(ENDPOINT_KINDS, key[0]).listener
    if factory is None:
        raise RuntimeError(f"endpoint kind {key[0]} has no listener")
    return factory(key)


def make_source(
    spec: SourceKindSpec, dispatch: Dispatch, dropped: Callable[[Any], None], stats: SourceStats
) -> SourceKind:
    """A new, not yet started source for ``spec``."""
    factory = _implementation(SOURCE_KINDS, spec.kind).source
    if factory is None:
        raise RuntimeError(f"source kind {spec.kind} has no source class")
    return factory(spec, dispatch, dropped, stats)
