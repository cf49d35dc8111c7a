"""The one state view of a running Veylor: what ``/graph``, ``/metrics``, ``veylor
status``, ``veylor top`` and the TUI all read.

:func:`snapshot` copies counters the hot path keeps as plain integers (see
:mod:`veylor.runtime.stats`) into one JSON-able structure, with a ``schema`` version.
It does no per-message work and computes no rate: readers take two snapshots and
divide. Per-client detail (``clients=True``, for ``/graph``) is bounded to
``CLIENTS_LISTED`` clients per endpoint.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..filters import describe

if TYPE_CHECKING:
    from ..reload import Reloader
    from ..runtime import Runtime

SCHEMA = 1
CLIENTS_LISTED = 1000  # per endpoint in /graph; more are counted, not listed


def snapshot(runtime: Runtime, reloader: Reloader | None = None, clients: bool = False) -> dict[str, Any]:
    """Everything an operator sees, as plain data (see the module docstring)."""
    stats = runtime.stats
    graph = runtime.graph
    now = time.time()
    process = stats.process
    last = reloader.last if reloader is not None else None
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "version": __version__,
        "pid": os.getpid(),
        "time": now,
        "started": stats.started,
        "uptime": now - stats.started,
        "config": {"generation": process.generation, "digest": graph.digest},
        "reloads": {
            "ok": process.reloads_ok,
            "failed": process.reloads_failed,
            "last": last.as_dict() if last is not None else None,
        },
        "sources": {},
        "routes": {},
        "edges": [],
        "endpoints": {},
        "memory": _memory(runtime),
    }
    for name, spec in graph.sources.items():
        source = runtime.sources.get(name)
        entry: dict[str, Any] = {"kind": spec.kind}
        entry.update(source.status() if source is not None else {"state": "stopped"})
        entry.update(stats.source(name).as_dict())
        clock = stats.clocks.get(name)
        entry["last_message_at"] = clock.last_message_at if clock is not None else None
        out["sources"][name] = entry
    for name, route in graph.routes.items():
        out["routes"][name] = {
            "from": route.source,
            "to": list(route.endpoints),
            "filter": describe(route.spec.filter),
            "upstream": route.upstream,
            **stats.route(name).as_dict(),
        }
        for endpoint in route.endpoints:
            out["edges"].append(
                {
                    "source": route.source,
                    "route": name,
                    "endpoint": endpoint,
                    "messages": stats.edge(name, endpoint) if (name, endpoint) in stats.edges else 0,
                }
            )
    for name, spec in graph.endpoints.items():
        ep = runtime.endpoints.get(name)
        entry = {
            "kind": spec.kind,
            "address": spec.listen.describe(),
            "clients": len(ep.clients) if ep is not None else 0,
            **stats.endpoint(name).as_dict(),
        }
        if clients and ep is not None:
            listed = list(ep.clients)[:CLIENTS_LISTED]
            entry["client_list"] = [ep.client_status(c) for c in listed]
            entry["clients_not_listed"] = len(ep.clients) - len(listed)
        out["endpoints"][name] = entry
    return out


def _memory(runtime: Runtime) -> dict[str, int]:
    budget = runtime.budget
    return {
        "limit": budget.limit,
        "laggard_bytes": budget.total,
        "peak": budget.peak,
        "enforced": budget.enforced,
        "trims": budget.trims,
    }
