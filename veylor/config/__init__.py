"""Configuration: files -> validated, typed, frozen :class:`Config` (pure, no I/O but reading)."""

from .loader import load_config
from .model import (
    Config,
    EndpointSpec,
    Limits,
    OutboundMessage,
    Reconnect,
    RouteSpec,
    SourceSpec,
    UnixListen,
    WebSocketListen,
    format_size,
    parse_size,
)
from .problems import ConfigError, Location, Problem, format_path
from .schema import schema, schema_path

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
