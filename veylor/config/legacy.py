"""Veylor 1.x configuration files, translated into the v1 shape so they mean what they meant.

1.1: ``sources`` is a list; each source has its own endpoints (``websocket_port`` with
``websocket_host`` defaulting to 0.0.0.0, ``unix_socket_path``).
1.0: ``sources`` is a list (with an optional ``name``) and a global ``rebroadcast``
section enables one WebSocket and/or one Unix endpoint that every source feeds.
Both: ``performance: {max_queue_size, reconnect_delay, reconnect_max_attempts}``.

In 1.x every client could send to its source and a dropped source closed its
clients, so every generated route has ``upstream: true`` and every source
``on_disconnect: close_clients``. 1.x clients connected to any request path, so
generated WebSocket endpoints accept any path (``"*"``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .model import Shape
from .problems import Problem
from .schema import default_of, definition, with_defaults
from .yamlfile import SourceMap

_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def legacy_shape(data: Any) -> Shape | None:
    """Which 1.x shape ``data`` has, or ``None`` for a v1 file."""
    if isinstance(data, dict) and isinstance(data.get("sources"), list):
        return "1.0" if "rebroadcast" in data else "1.1"
    return None


def _slug(text: str) -> str:
    return _NOT_NAME.sub("-", text).strip("-._")[:48]


def _source_name(src: dict[str, Any], index: int, taken: set[str]) -> str:
    """A stable, readable name: the 1.0 ``name``, else the URL's host and path."""
    base = _slug(str(src["name"])) if src.get("name") else ""
    if not base:
        parts = urlsplit(src["url"])
        base = _slug(f"{parts.hostname or ''}{parts.path}")
    base = base or f"source-{index + 1}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def translate(data: dict[str, Any], where: SourceMap) -> tuple[dict[str, Any], SourceMap, list[Problem]]:
    """Translate a schema-valid 1.x document into v1 data with its source map."""
    shape = legacy_shape(data)
    problems: list[Problem] = []
    out_map = SourceMap(file=where.file)
    sources: dict[str, Any] = {}
    endpoints: dict[str, Any] = {}
    routes: dict[str, Any] = {}
    perf = data.get("performance") or {}

    shared: list[str] = []
    if shape == "1.0":
        rb = with_defaults(definition("legacyRebroadcast"), data.get("rebroadcast") or {})
        ws, ux = rb.get("websocket"), rb.get("unix_socket")
        if ws is not None and ws["enabled"]:
            endpoints["websocket"] = {"websocket": {"host": ws["host"], "port": ws["port"], "path": "*"}}
            out_map.graft(where, ("rebroadcast", "websocket"), ("endpoints", "websocket", "websocket"))
            out_map.set_value(("endpoints", "websocket"), where.value(("rebroadcast", "websocket")))
            shared.append("websocket")
        if ux is not None and ux["enabled"]:
            endpoints["unix"] = {"unix": {"path": ux["path"]}}
            out_map.graft(where, ("rebroadcast", "unix_socket"), ("endpoints", "unix", "unix"))
            out_map.set_value(("endpoints", "unix"), where.value(("rebroadcast", "unix_socket")))
            shared.append("unix")

    taken: set[str] = set()
    for i, raw in enumerate(data["sources"]):
        src = with_defaults(definition("legacySource"), raw)
        name = _source_name(src, i, taken)
        item = ("sources", i)
        out_map.graft(where, item, ("sources", name))
        reconnect: dict[str, Any] = {}
        if "reconnect_delay" in perf:
            delay = perf["reconnect_delay"]
            reconnect["initial_delay"] = delay
            reconnect["max_delay"] = max(delay, default_of("reconnect", "max_delay"))
            out_map.set_value(
                ("sources", name, "reconnect", "initial_delay"),
                where.value(("performance", "reconnect_delay")),
            )
        if "reconnect_max_attempts" in perf:
            reconnect["max_attempts"] = perf["reconnect_max_attempts"]
        source: dict[str, Any] = {
            "url": src["url"],
            "headers": dict(src.get("headers") or {}),
            "reconnect": reconnect,
            "on_disconnect": "close_clients",
        }
        if "max_queue_size" in perf:
            source["upstream_queue"] = perf["max_queue_size"]
        sources[name] = source

        own: list[str] = []
        if "websocket_port" in src:
            ep = f"{name}-ws"
            endpoints[ep] = {
                "websocket": {"host": src["websocket_host"], "port": src["websocket_port"], "path": "*"}
            }
            out_map.set_value(("endpoints", ep), where.value((*item, "websocket_port")))
            out_map.set_value(("endpoints", ep, "websocket", "port"), where.value((*item, "websocket_port")))
            out_map.set_value(("endpoints", ep, "websocket", "host"), where.value((*item, "websocket_host")))
            own.append(ep)
        if "unix_socket_path" in src:
            ep = f"{name}-unix"
            endpoints[ep] = {"unix": {"path": src["unix_socket_path"]}}
            out_map.set_value(("endpoints", ep), where.value((*item, "unix_socket_path")))
            out_map.set_value(("endpoints", ep, "unix", "path"), where.value((*item, "unix_socket_path")))
            own.append(ep)
        if not own and not shared:
            hint = (
                "rebroadcast enables no endpoint: set rebroadcast.websocket or rebroadcast.unix_socket"
                if shape == "1.0"
                else "a Veylor 1.1 source needs websocket_port or unix_socket_path (or both)"
            )
            problems.append(Problem(where.value(item), item, hint))
            continue
        routes[name] = {"from": name, "to": own + shared, "upstream": True}
        out_map.set_value(("routes", name), where.value(item))

    out: dict[str, Any] = {"sources": sources, "endpoints": endpoints, "routes": routes}
    if "include" in data:
        out["include"] = data["include"]
        out_map.graft(where, ("include",), ("include",))
    return out, out_map, problems
