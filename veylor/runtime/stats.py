"""Counters that outlive the objects that increment them: the seed of the metrics registry.

Each source, endpoint and route has a small stats object, held here by name and handed
to the component that increments it (plain integer attributes: an increment on the hot
path is one ``STORE_ATTR``, no lock, no label lookup). A source restarted by a reload,
or an endpoint rebound to a new address, gets the same object back: its totals go on.
A component removed from the configuration takes its stats with it.

:meth:`Stats.snapshot` is the one reader: a JSON-able view of every counter (rates are
for readers to compute from two snapshots).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any


class _Counters:
    """Integer counters named by ``__slots__``, all starting at 0."""

    __slots__: tuple[str, ...] = ()

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class SourceStats(_Counters):
    """Counters of one source (any kind)."""

    __slots__ = (
        "attempts",  # connection attempts
        "bytes_in",
        "connects",  # attempts that connected
        "invalid_utf8",  # text messages from the upstream that were not UTF-8 (dropped)
        "messages_in",  # messages from the upstream
        "queued_dropped",  # client messages dropped: the upstream was down or not reading
        "sent_up",  # client messages sent to the upstream
    )


class EndpointStats(_Counters):
    """Counters of one endpoint (any kind). Deliveries are a message times a client."""

    __slots__ = (
        "accepted",  # clients accepted
        "bad_frames",  # clients closed for breaking their framing
        "bytes_out",
        "control_closed",  # clients closed for flooding pings (or not reading the pongs)
        "discarded",  # messages from clients with no upstream route
        "dropped",  # deliveries not made: the client was over client_buffer (slow_client: drop)
        "invalid_utf8",  # clients closed for sending text that is not UTF-8
        "keepalive_closed",  # clients closed for answering no ping
        "lost_slow",  # deliveries not made: the client was being disconnected for being slow
        "memory_limited",  # clients given their policy for the process-wide limits.buffered
        "messages_out",  # deliveries made
        "received",  # messages from clients
        "refused",  # clients refused (max_clients)
        "slow_disconnects",  # clients disconnected for being slow
        "unframeable",  # deliveries not made: the framing cannot carry the message (lines)
    )

    def undelivered(self) -> dict[str, int]:
        """Deliveries not made, by reason."""
        return {
            "slow_client_drop": self.dropped,
            "slow_client_disconnect": self.lost_slow,
            "framing": self.unframeable,
        }


class RouteStats(_Counters):
    """Counters of one route edge."""

    __slots__ = ("messages",)  # messages that passed its filter


class ProcessStats(_Counters):
    """Counters of the process: configuration generations and reloads."""

    __slots__ = ("generation", "reloads_failed", "reloads_ok")


class Stats:
    """Every counter of a running Veylor, by component name."""

    def __init__(self) -> None:
        self.sources: dict[str, SourceStats] = {}
        self.endpoints: dict[str, EndpointStats] = {}
        self.routes: dict[str, RouteStats] = {}
        self.process = ProcessStats()
        self.started = time.time()

    def source(self, name: str) -> SourceStats:
        return self.sources.get(name) or self.sources.setdefault(name, SourceStats())

    def endpoint(self, name: str) -> EndpointStats:
        return self.endpoints.get(name) or self.endpoints.setdefault(name, EndpointStats())

    def route(self, name: str) -> RouteStats:
        return self.routes.get(name) or self.routes.setdefault(name, RouteStats())

    def retain(self, sources: Iterable[str], endpoints: Iterable[str], routes: Iterable[str]) -> None:
        """Forget the stats of components no longer configured."""
        for table, names in ((self.sources, sources), (self.endpoints, endpoints), (self.routes, routes)):
            keep = set(names)
            for name in [n for n in table if n not in keep]:
                del table[name]

    def snapshot(self) -> dict[str, Any]:
        """Every counter as plain data."""
        return {
            "process": {**self.process.as_dict(), "started": self.started},
            "sources": {n: s.as_dict() for n, s in self.sources.items()},
            "endpoints": {n: s.as_dict() for n, s in self.endpoints.items()},
            "routes": {n: s.as_dict() for n, s in self.routes.items()},
        }
