"""Veylor: a declarative WebSocket fan-out router."""

__version__ = "2.0.0.dev0"
