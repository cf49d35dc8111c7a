"""The kind registry: which kinds of sources and endpoints there are, how the
configuration names each, builds its spec, and which module of :mod:`veylor.runtime`
runs it. The top of the specs: it imports every kind's
(:mod:`veylor.config.websocketspec`, :mod:`veylor.config.unixspec`,
:mod:`veylor.config.natsspec`) and the model that holds them
(:mod:`veylor.config.model`), none of which imports another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .access import Collected, unix_access, websocket_access
from .common import base_dir, parse_size
from .contract import SourceKindSpec
from .model import EndpointSpec
from .natsspec import NatsListen, nats_source
from .problems import Location
from .unixspec import UnixListen
from .websocketspec import WebSocketListen, source_from


@dataclass(frozen=True)
class Kind:
    """One kind of component: how the configuration names it, builds its spec, and which
    module of :mod:`veylor.runtime` runs it (imported only when a runtime needs it).

    Adding a kind is: its schema, its spec module (on :mod:`veylor.config.common`) and a
    row in a table below, one runtime module, and its docs. The loader, graph, diff,
    supervisor and fan-out read kinds only through these tables, the kind contract
    (:mod:`veylor.config.contract`: ``Listen``, ``EndpointAccess``, ``SourceKindSpec``)
    and the interfaces of :mod:`veylor.runtime.interfaces`.
    """

    key: str  # the YAML key that selects the kind in a component's definition
    # Schema-valid data -> the kind's spec: an endpoint's listen from (its kind's mapping,
    # base directory, Collected); a whole source from (name, data, origin, Collected).
    spec: Any
    runtime: str  # the module that implements it
    access: Any = None  # (data, base directory, Collected) -> who may connect (endpoints)
    # The component's settings beside its kind's key that mean something to this kind
    # (None: all of them); another, written in a file, is a problem.
    settings: frozenset[str] | None = None


ENDPOINT_KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        "websocket": Kind(
            "websocket", WebSocketListen.from_raw, "veylor.runtime.websocket", websocket_access
        ),
        "unix": Kind("unix", UnixListen.from_raw, "veylor.runtime.unix", unix_access),
        "nats": Kind(
            "nats",
            NatsListen.read,
            "veylor.runtime.nats",
            settings=frozenset({"client_buffer", "max_message_size"}),
        ),
    }
)
SOURCE_KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        "websocket": Kind("url", source_from, "veylor.runtime.source"),
        "nats": Kind(
            "nats",
            nats_source,
            "veylor.runtime.nats",
            settings=frozenset({"reconnect", "upstream_queue", "on_disconnect", "max_message_size"}),
        ),
    },
)


def endpoint_from(
    name: str, raw: Mapping[str, Any], origin: Location, collected: Collected | None = None
) -> EndpointSpec:
    """An :class:`EndpointSpec` from schema-valid data with defaults applied (files its
    access refers to are read; their problems go to ``collected``)."""
    key = next(k for k in ENDPOINT_KINDS if k in raw)  # the schema lets exactly one through
    kind = ENDPOINT_KINDS[key]
    out = collected if collected is not None else Collected()
    base = base_dir(origin)
    access = kind.access(raw[key], base, out) if kind.access is not None else None
    return EndpointSpec(
        name=name,
        access=access,
        listen=kind.spec(raw[key], base, out),
        max_clients=int(raw["max_clients"]),
        client_buffer=parse_size(raw["client_buffer"]),
        slow_client=raw["slow_client"],
        compression=raw["compression"] is True,
        shared_compression=raw["compression"] == "shared",
        compression_min_size=parse_size(raw.get("compression_min_size", 256)),
        max_message_size=parse_size(raw["max_message_size"]),
        ping_interval=raw["ping_interval"],
        ping_timeout=raw["ping_timeout"],
        socket_buffer=parse_size(raw["socket_buffer"]) if raw["socket_buffer"] is not None else None,
        stall_timeout=float(raw["stall_timeout"]) if raw.get("stall_timeout") is not None else None,
        origin=origin,
    )


def build_source(
    name: str, raw: Mapping[str, Any], origin: Location, collected: Collected | None = None
) -> SourceKindSpec:
    """The spec of a source of whichever kind ``raw`` (schema-valid, with defaults) names."""
    kind = next(k for k in SOURCE_KINDS.values() if k.key in raw)
    return kind.spec(name, raw, origin, collected)  # type: ignore[no-any-return]
