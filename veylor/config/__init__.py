"""Configuration: files -> validated, typed, frozen :class:`Config` (pure, no I/O but reading).

Its names are imported on first use (PEP 562): ``veylor.config.model`` alone, which logging
and the CLI's clients need, does not pull in the loader and jsonschema (90 ms at start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .common import Reconnect, format_size, parse_size
    from .loader import load_config
    from .model import Config, EndpointSpec, Limits, RouteSpec
    from .problems import ConfigError, Location, Problem, format_path
    from .schema import schema, schema_path
    from .unixspec import UnixListen
    from .websocketspec import OutboundMessage, SourceSpec, WebSocketListen

_WHERE = {
    "load_config": "loader",
    **dict.fromkeys(("Config", "EndpointSpec", "Limits", "RouteSpec"), "model"),
    **dict.fromkeys(("OutboundMessage", "SourceSpec", "WebSocketListen"), "websocketspec"),
    "UnixListen": "unixspec",
    **dict.fromkeys(("Reconnect", "format_size", "parse_size"), "common"),
    **dict.fromkeys(("ConfigError", "Location", "Problem", "format_path"), "problems"),
    **dict.fromkeys(("schema", "schema_path"), "schema"),
}

__all__ = [
    "Config",
    "ConfigError",
    "EndpointSpec",
    "Limits",
    "Location",
    "OutboundMessage",
    "Problem",
    "Reconnect",
    "RouteSpec",
    "SourceSpec",
    "UnixListen",
    "WebSocketListen",
    "format_path",
    "format_size",
    "load_config",
    "parse_size",
    "schema",
    "schema_path",
]
if sorted(__all__) != sorted(_WHERE):
    raise RuntimeError("invariant broken: sorted(__all__) == sorted(_WHERE)")


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
