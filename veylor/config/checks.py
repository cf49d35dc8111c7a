"""The checks that span components, run on the specs built from the merged set: a
route's references, addresses two endpoints (or an endpoint and the admin endpoint)
cannot share, what a route's upstream needs of its source, files two sources cannot
share, and what nothing uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .adminspec import AdminSpec
from .contract import EndpointAccess, SourceKindSpec
from .merge import Defined, Load
from .model import EndpointSpec, RouteSpec
from .problems import Location, PathT, Problem, did_you_mean
from .yamlfile import SourceMap


def check_references(load: Load, d: Defined) -> None:
    """A route's ``from`` and ``to`` must name defined components (checked wherever the
    value itself is valid, even in a route with schema errors elsewhere)."""
    raw = d.raw
    if not isinstance(raw, dict):
        return
    source = raw.get("from")
    sources, endpoints = load.defined["sources"], load.defined["endpoints"]
    if isinstance(source, str) and d.valid_at("from") and source not in sources:
        load.error(
            d.where,
            (*d.path, "from"),
            f"unknown source '{source}'{did_you_mean(source, sources)}"
            + ("" if sources else " (no sources are defined)"),
        )
    to = raw.get("to")
    if isinstance(to, str):
        targets: list[tuple[PathT, Any]] = [((*d.path, "to"), to)]
    elif isinstance(to, list):
        targets = [((*d.path, "to", i), t) for i, t in enumerate(to)]
    else:
        return
    for at, target in targets:
        if isinstance(target, str) and d.valid_at(*at[len(d.path) :]) and target not in endpoints:
            load.error(
                d.where,
                at,
                f"unknown endpoint '{target}'{did_you_mean(target, endpoints)}"
                + ("" if endpoints else " (no endpoints are defined)"),
            )


def check_addresses(load: Load, endpoints: Mapping[str, EndpointSpec]) -> None:
    """Two endpoints with one claim (a Unix path, a host:port:path) or that clash in a
    group (a wildcard and a specific host on one port: the second bind would fail) are
    errors naming both."""
    claims: dict[tuple[Any, ...], Defined] = {}
    groups: dict[tuple[Any, ...], list[tuple[Any, Defined]]] = {}
    shared: dict[tuple[Any, ...], tuple[Any, Defined]] = {}
    for name, spec in endpoints.items():
        d = load.defined["endpoints"][name]
        listen = spec.listen
        # What endpoints sharing a listener must agree on (a port's TLS certificate).
        access: EndpointAccess | None = spec.access
        mine = access.shared if access is not None else None
        theirs, first_d = shared.setdefault(listen.listener, (mine, d))
        if theirs != mine:
            load.error(
                d.where,
                (*d.path, spec.kind),
                f"shares {listen.listener_text} with endpoint '{first_d.path[1]}' ({first_d.origin}) "
                "but not its settings for the port (tls cert and key): give both the same, or use "
                "another port",
            )
            continue
        other = claims.setdefault(listen.claim, d)
        if other is not d:
            sub, text = listen.taken(f"endpoint '{other.path[1]}' ({other.origin})")
            load.error(d.where, (*d.path, spec.kind, *sub), text)
            continue
        if listen.group is None:
            continue
        members = groups.setdefault(listen.group, [])
        for first_listen, first in members:
            clash = listen.clash(first_listen, f"endpoint '{first.path[1]}' ({first.origin})")
            if clash is not None:
                load.error(d.where, (*d.path, spec.kind, *clash[0]), clash[1])
                break
        else:
            members.append((listen, d))


def check_upstream(
    load: Load, sources: Mapping[str, SourceKindSpec], routes: Mapping[str, RouteSpec]
) -> None:
    """A route that lets clients send to a source that has nowhere to send them (a NATS
    source of a wildcard subject, without ``upstream_subject``) is an error."""
    for name, route in routes.items():
        source = sources.get(route.source)
        problem = source.upstream_problem() if route.upstream and source is not None else None
        if problem is not None:
            d = load.defined["routes"][name]
            load.error(d.where, (*d.path, "upstream"), f"source '{route.source}' {problem}")


def check_position_files(load: Load, sources: Mapping[str, SourceKindSpec]) -> None:
    """Two sources that would keep their positions in one file (each overwriting the
    other's: a restart would resume one of them at the wrong place) are an error."""
    first: dict[str, str] = {}
    for name, spec in sources.items():
        kept = spec.state_file()
        if kept is None:
            continue
        subpath, path = kept
        other = first.setdefault(path, name)
        if other != name:
            d = load.defined["sources"][name]
            at = (*d.path, *subpath)
            load.error(
                d.where,
                at,
                f"source '{other}' keeps its position in {path} already: give each source its own file",
            )


def warn_unused(load: Load, routes: Mapping[str, RouteSpec], main: str) -> None:
    """Warnings for sources no route uses and endpoints no route leads to (none while a
    route is broken: what it would use cannot be told), and for a configuration
    without routes."""
    if any(d.broken for d in load.defined["routes"].values()):
        return
    used_sources = {r.source for r in routes.values()}
    used_endpoints = {e for r in routes.values() for e in r.endpoints}
    for name, d in load.defined["sources"].items():
        if name not in used_sources:
            load.warn(
                d.where, d.path, "no route uses this source (it is connected, but its messages go nowhere)"
            )
    for name, d in load.defined["endpoints"].items():
        if name not in used_endpoints:
            load.warn(d.where, d.path, "no route leads to this endpoint (its clients will receive nothing)")
    if not load.defined["routes"] and not any(not p.warning for p in load.problems):
        load.problems.append(Problem(Location(main), (), "no routes are defined", warning=True))


def check_admin(
    load: Load,
    admin: AdminSpec,
    where: SourceMap,
    endpoints: Mapping[str, EndpointSpec],
    sources: Mapping[str, Any] | None = None,
) -> None:
    """The admin endpoint and an endpoint cannot share an address (the second bind would
    fail; on a Unix path, the stale-socket check would first connect to Veylor's own).
    ``endpoints``: the specs the load built (not built again: an endpoint's access reads
    its tokens file and loads its certificate). ``sources``: the sources defined, which
    ``ready_requires`` may name (a source it names that is not there: a problem, at its
    place in the list)."""
    for name, spec in endpoints.items():
        d = load.defined["endpoints"][name]
        if admin.clashes(spec.listen.binds):
            at = ("admin", "unix" if admin.path is not None else "listen")
            load.error(
                where,
                at,
                f"{admin.url} is also where endpoint '{name}' ({d.origin}) listens: give the admin "
                "endpoint an address of its own",
            )
    if sources is None or admin.ready_requires == "all":
        return
    for i, name in enumerate(admin.ready_requires):
        if name not in sources:
            known = ", ".join(sorted(sources)) or "none"
            load.error(
                where,
                ("admin", "ready_requires", i),
                f"no source is named {name!r} (the sources: {known}): name a source, or write all",
            )
