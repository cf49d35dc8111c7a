"""The runtime: I/O only. Sources, endpoints, fan-out, lifecycle."""

from .endpoints import StartupError
from .supervisor import Runtime

__all__ = ["Runtime", "StartupError"]
