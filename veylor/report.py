"""Renderings of a configuration for people (``veylor check``) and for tools (``--json``).

Each component renders itself (``describe()``, ``as_json()``: the kind contract,
:mod:`veylor.config.contract`):
header values are never rendered; URLs are shown with secrets redacted.
"""

from __future__ import annotations

from typing import Any

from .config.common import host_exposure
from .config.frozen import thaw
from .config.model import Config, EndpointSpec
from .config.problems import Problem
from .filters import describe

SHAPE_TEXT = {
    "v1": "the current format",
    "1.1": "the Veylor 1.1 format (translated to the current one)",
    "1.0": "the Veylor 1.0 format (translated to the current one)",
}


def plural(n: int, word: str) -> str:
    """``1 route``, ``2 routes``."""
    return f"{n} {word}{'s' * (n != 1)}"


def counts(graph: Any) -> str:
    """``1 source, 2 endpoints, 3 routes`` of a Config or a Graph."""
    return ", ".join(
        plural(len(getattr(graph, kind)), kind[:-1]) for kind in ("sources", "endpoints", "routes")
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
    rows = [(s.name, s.describe(), str(s.origin)) for s in config.sources.values()]
    out += [*_table("sources", rows), ""]
    rows = [(e.name, e.describe(), str(e.origin)) for e in config.endpoints.values()]
    out += [*_table("endpoints", rows), ""]
    rows = []
    for r in config.routes.values():
        text = f"{r.source} -> {', '.join(r.endpoints)}; filter: {describe(r.filter)}"
        text += "; upstream: " + _upstream(r)
        if r.conflate is not None:
            text += "; conflate: " + r.conflate.describe()
        if r.snapshot is not None:
            text += "; snapshot: " + r.snapshot.describe()
        if r.resume is not None:
            text += "; resume: " + r.resume.describe()
        rows.append((r.name, text, str(r.origin)))
    out += [*_table("routes", rows), ""]
    out += [*access_lines(config), ""]
    if config.warnings:
        out.append(f"warnings ({len(config.warnings)})")
        out += [f"  {w}" for w in config.warnings]
        out.append("")
    out.append(f"OK: {counts(config)}")
    return "\n".join(out)


def _upstream(route: Any) -> str:
    if not route.upstream:
        return "no"
    if route.policy is None:
        return "yes (clients may send anything to the source)"
    return f"yes, {route.policy.describe()}"


def exposure(spec: EndpointSpec) -> str:
    """Who can reach an endpoint, in a word: ``local`` (a Unix socket), ``loopback`` (a
    loopback address, or ``localhost``), ``network`` (any other address or name), or its
    kind's own (``nats``)."""
    return spec.listen.exposure()


def access_lines(config: Config) -> list[str]:
    """Per endpoint, what is open (``veylor check``): where it listens, who may connect,
    and what its clients may send to which source; then the admin endpoint's: where it
    listens, the Host names it answers to, its token, whether it allows reloads."""
    lines = [f"access ({len(config.endpoints)})"]
    width = max((len(n) for n in config.endpoints), default=0)
    if config.admin is not None:
        width = max(width, len("(admin)"))
    sends: dict[str, list[str]] = {}
    for r in config.routes.values():
        if r.upstream:
            for ep in r.endpoints:
                limits = f" ({r.policy.describe()})" if r.policy is not None else " (anything)"
                sends.setdefault(ep, []).append(f"{r.source}{limits} via route {r.name}")
    for name, spec in config.endpoints.items():
        where = exposure(spec)
        flag = ""
        if spec.open_to_network():
            flag = "  OPEN: reachable from the network and no auth (anyone who reaches this port)"
        lines.append(f"  {name.ljust(width)}  {spec.listen.describe()} [{where}]{flag}")
        lines.append(f"  {'':{width}}  {spec.access_summary()}")
        to = "; ".join(sends.get(name, ())) or "nothing (no route with upstream)"
        lines.append(f"  {'':{width}}  clients may send to: {to}")
    if config.admin is not None:
        admin = config.admin
        where = host_exposure(admin.host)
        flag = ""
        if where == "network" and admin.auth is None:
            flag = "  OPEN: reachable from the network and no auth (anyone who reaches it can read the state"
            flag += ")" if admin.read_only else " and reload)"
        lines.append(f"  {'(admin)'.ljust(width)}  {admin.url} [{where}]{flag}")
        lines.append(f"  {'':{width}}  {admin.hosts_summary()}")
        lines.append(f"  {'':{width}}  {admin.rules_summary()}")
    return lines


def config_json(config: Config) -> dict[str, Any]:
    """The graph as ``veylor check --json`` prints it (and as ``/graph`` will serve it)."""
    return {
        "ok": True,
        "shape": config.shape,
        "files": list(config.files),
        "digest": config.digest,
        "sources": {n: s.as_json() for n, s in config.sources.items()},
        "endpoints": {
            n: {**e.as_json(), "exposure": exposure(e), "access": e.access_summary()}
            for n, e in config.endpoints.items()
        },
        "routes": {
            n: {
                "from": r.source,
                "to": list(r.endpoints),
                "filter": thaw(r.filter) if r.filter is not None else None,
                "filter_text": describe(r.filter),
                "upstream": r.upstream,
                "upstream_policy": r.policy.as_json() if r.policy is not None else None,
                "snapshot": r.snapshot.as_json() if r.snapshot is not None else None,
                "conflate": r.conflate.as_json() if r.conflate is not None else None,
                "resume": r.resume.as_json() if r.resume is not None else None,
                "origin": str(r.origin),
            }
            for n, r in config.routes.items()
        },
        "admin": None
        if config.admin is None
        else {
            **config.admin.as_json(),
            "exposure": host_exposure(config.admin.host),
            "access": config.admin.summary(),
        },
        "warnings": [w.as_dict() for w in config.warnings],
    }


def problems_json(problems: tuple[Problem, ...], warnings: tuple[Problem, ...]) -> dict[str, Any]:
    return {
        "ok": False,
        "problems": [p.as_dict() for p in problems],
        "warnings": [w.as_dict() for w in warnings],
    }
