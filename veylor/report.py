"""Renderings of a configuration for people (``veylor check``) and for tools (``--json``).

Header values are never rendered; URLs are shown with secrets redacted.
"""

from __future__ import annotations

from typing import Any

from .config.model import Config, EndpointSpec, SourceSpec, UnixListen, format_size, thaw
from .config.problems import Problem
from .filters import describe

SHAPE_TEXT = {
    "v1": "Veylor v1 format",
    "1.1": "Veylor 1.1 format (translated to v1)",
    "1.0": "Veylor 1.0 format (translated to v1)",
}
REDACTED = "<redacted>"


def plural(n: int, word: str) -> str:
    """``1 route``, ``2 routes``."""
    return f"{n} {word}{'s' * (n != 1)}"


def counts(graph: Any) -> str:
    """``1 source, 2 endpoints, 3 routes`` of a Config or a Graph."""
    return ", ".join(
        plural(len(getattr(graph, kind)), kind[:-1]) for kind in ("sources", "endpoints", "routes")
    )


def _reconnect_text(s: SourceSpec) -> str:
    r = s.reconnect
    tries = "forever" if r.max_attempts == 0 else f"up to {r.max_attempts} attempts"
    return f"reconnect {r.initial_delay:g}s..{r.max_delay:g}s x{r.multiplier:g} ±{r.jitter:.0%}, {tries}"


def _endpoint_text(e: EndpointSpec) -> str:
    if isinstance(e.listen, UnixListen):
        head = f"{e.listen} ({e.listen.framing}, mode {e.listen.mode:04o})"
    else:
        head = f"{e.listen}" + (" compression on" if e.compression else "")
    return (
        f"{head}; max_clients {e.max_clients}, client_buffer {format_size(e.client_buffer)}, "
        f"slow_client {e.slow_client}"
    )


def _table(title: str, rows: list[tuple[str, str, str]]) -> list[str]:
    lines = [f"{title} ({len(rows)})"]
    width = max((len(name) for name, _, _ in rows), default=0)
    for name, text, origin in rows:
        lines.append(f"  {name.ljust(width)}  {text}")
        lines.append(f"  {'':{width}}  from {origin}")
    return lines


def config_text(config: Config) -> str:
    """The graph as ``veylor check`` prints it."""
    files = ", ".join(config.files)
    out = [f"{config.main_file}: {SHAPE_TEXT[config.shape]}; files read: {files}", ""]
    rows = []
    for s in config.sources.values():
        extras = [_reconnect_text(s)]
        if s.headers:
            extras.insert(0, "headers " + ", ".join(f"{k}={REDACTED}" for k, _ in s.headers))
        if s.on_connect:
            extras.append(f"on_connect {plural(len(s.on_connect), 'message')}")
        extras.append(f"on_disconnect {s.on_disconnect}")
        rows.append((s.name, f"{s.safe_url}; " + "; ".join(extras), str(s.origin)))
    out += [*_table("sources", rows), ""]
    rows = [(e.name, _endpoint_text(e), str(e.origin)) for e in config.endpoints.values()]
    out += [*_table("endpoints", rows), ""]
    rows = []
    for r in config.routes.values():
        text = f"{r.source} -> {', '.join(r.endpoints)}; filter: {describe(r.filter)}"
        text += "; upstream: " + ("yes (clients may send to the source)" if r.upstream else "no")
        rows.append((r.name, text, str(r.origin)))
    out += [*_table("routes", rows), ""]
    if config.warnings:
        out.append(f"warnings ({len(config.warnings)})")
        out += [f"  {w}" for w in config.warnings]
        out.append("")
    out.append(f"OK: {counts(config)}")
    return "\n".join(out)


def _source_json(s: SourceSpec) -> dict[str, Any]:
    return {
        "url": s.safe_url,
        "headers": {k: REDACTED for k, _ in s.headers},
        "subprotocols": list(s.subprotocols),
        "on_connect": len(s.on_connect),
        "reconnect": {
            "initial_delay": s.reconnect.initial_delay,
            "max_delay": s.reconnect.max_delay,
            "multiplier": s.reconnect.multiplier,
            "jitter": s.reconnect.jitter,
            "max_attempts": s.reconnect.max_attempts,
        },
        "ping_interval": s.ping_interval,
        "ping_timeout": s.ping_timeout,
        "open_timeout": s.open_timeout,
        "max_message_size": s.max_message_size,
        "upstream_queue": s.upstream_queue,
        "on_disconnect": s.on_disconnect,
        "origin": str(s.origin),
    }


def _endpoint_json(e: EndpointSpec) -> dict[str, Any]:
    if isinstance(e.listen, UnixListen):
        listen: dict[str, Any] = {
            "unix": {"path": e.listen.path, "mode": f"{e.listen.mode:04o}", "framing": e.listen.framing}
        }
    else:
        listen = {"websocket": {"host": e.listen.host, "port": e.listen.port, "path": e.listen.path}}
    return {
        **listen,
        "max_clients": e.max_clients,
        "client_buffer": e.client_buffer,
        "slow_client": e.slow_client,
        "compression": e.compression,
        "max_message_size": e.max_message_size,
        "ping_interval": e.ping_interval,
        "ping_timeout": e.ping_timeout,
        "socket_buffer": e.socket_buffer,
        "origin": str(e.origin),
    }


def config_json(config: Config) -> dict[str, Any]:
    """The graph as ``veylor check --json`` prints it (and as ``/graph`` will serve it)."""
    return {
        "ok": True,
        "shape": config.shape,
        "files": list(config.files),
        "digest": config.digest,
        "sources": {n: _source_json(s) for n, s in config.sources.items()},
        "endpoints": {n: _endpoint_json(e) for n, e in config.endpoints.items()},
        "routes": {
            n: {
                "from": r.source,
                "to": list(r.endpoints),
                "filter": thaw(r.filter) if r.filter is not None else None,
                "filter_text": describe(r.filter),
                "upstream": r.upstream,
                "origin": str(r.origin),
            }
            for n, r in config.routes.items()
        },
        "warnings": [w.as_dict() for w in config.warnings],
    }


def problems_json(problems: tuple[Problem, ...], warnings: tuple[Problem, ...]) -> dict[str, Any]:
    return {
        "ok": False,
        "problems": [p.as_dict() for p in problems],
        "warnings": [w.as_dict() for w in warnings],
    }
