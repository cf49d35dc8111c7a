"""The routing graph built from a :class:`Config`, and the plan that turns one graph into another.

Pure: no sockets, no event loop, no clock. The runtime applies a :class:`Plan`;
everything about *what* changes is decided here and unit-tested.

Identity is by name. A component is "changed" only when a setting that matters
to it changed: a source whose connection settings are equal is unchanged even if
the routes using it changed; an endpoint whose listen address is equal keeps its
listener and clients even if its limits changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from .config.access import UpstreamPolicy
from .config.adminspec import AdminSpec
from .config.common import format_size
from .config.contract import SourceKindSpec
from .config.model import Config, EndpointSpec, Limits, RouteSpec
from .filters import CompiledFilter, compile_filter

ListenerKey = tuple[Any, ...]  # (kind, address...): ("websocket", host, port), ("unix", path)


@dataclass(frozen=True, slots=True)
class Route:
    """A route edge with its compiled filter (``None`` passes everything)."""

    spec: RouteSpec
    filter: CompiledFilter | None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def source(self) -> str:
        return self.spec.source

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.spec.endpoints

    @property
    def upstream(self) -> bool:
        return self.spec.upstream


@dataclass(frozen=True)
class Graph:
    """Sources, endpoints and routes, plus the derived lookup tables the runtime uses."""

    sources: Mapping[str, SourceKindSpec]
    endpoints: Mapping[str, EndpointSpec]
    routes: Mapping[str, Route]
    routes_by_source: Mapping[str, tuple[Route, ...]]
    # endpoint -> (source, its upstream policy or None: everything goes), each source once
    upstream_targets: Mapping[str, tuple[tuple[str, UpstreamPolicy | None], ...]]
    listeners: Mapping[ListenerKey, tuple[str, ...]]
    listener_texts: Mapping[ListenerKey, str] = dataclasses.field(default_factory=dict)
    digest: str = ""
    limits: Limits = dataclasses.field(default_factory=Limits)
    admin: AdminSpec | None = None

    @classmethod
    def empty(cls) -> Graph:
        return build_graph(Config(sources={}, endpoints={}, routes={}))

    def endpoints_of_source(self, source: str) -> tuple[str, ...]:
        """The endpoints the routes of ``source`` lead to, each once."""
        return tuple(dict.fromkeys(e for r in self.routes_by_source.get(source, ()) for e in r.endpoints))


def build_graph(config: Config, previous: Graph | None = None) -> Graph:
    """Build the graph. ``config`` must come from the loader, which compiled each filter
    while checking it; a filter is compiled here only for a spec made some other way.

    With ``previous``, a route whose spec is the very same object there keeps its
    :class:`Route`, and a source whose routes are all kept keeps its tuple of routes:
    a reload that changed one file makes few new objects (fewer for the garbage
    collector to walk, with the event loop paused) and the runtime can tell by identity
    what it need not rebuild.
    """
    old_routes = previous.routes if previous is not None else {}
    routes = {}
    for name, spec in config.routes.items():
        kept = old_routes.get(name)
        if kept is not None and kept.spec is spec:
            routes[name] = kept
        else:
            compiled = spec.compiled or (compile_filter(spec.filter) if spec.filter is not None else None)
            routes[name] = Route(spec, compiled)
    by_source: dict[str, list[Route]] = {name: [] for name in config.sources}
    upstream: dict[str, dict[str, UpstreamPolicy | None]] = {name: {} for name in config.endpoints}
    for route in routes.values():
        by_source[route.source].append(route)
        if route.upstream:
            policy = route.spec.policy
            for endpoint in route.endpoints:
                targets = upstream[endpoint]
                # Two routes letting one endpoint's clients send to one source: a plain
                # `upstream: true` wins over a policy; between policies, the first route's.
                if route.source not in targets or (policy is None and targets[route.source] is not None):
                    targets[route.source] = policy
    listeners: dict[ListenerKey, list[str]] = {}
    texts: dict[ListenerKey, str] = {}
    for name, ep_spec in config.endpoints.items():
        listeners.setdefault(ep_spec.listen.listener, []).append(name)
        texts.setdefault(ep_spec.listen.listener, ep_spec.listen.listener_text)
    old_by_source = previous.routes_by_source if previous is not None else {}

    def same(source: str, now: list[Route]) -> tuple[Route, ...]:
        before = old_by_source.get(source)
        if (
            before is not None
            and len(before) == len(now)
            and all(a is b for a, b in zip(before, now, strict=True))
        ):
            return before
        return tuple(now)

    return Graph(
        sources=MappingProxyType(dict(config.sources)),
        endpoints=MappingProxyType(dict(config.endpoints)),
        routes=MappingProxyType(routes),
        routes_by_source=MappingProxyType({k: same(k, v) for k, v in by_source.items()}),
        upstream_targets=MappingProxyType({k: tuple(v.items()) for k, v in upstream.items()}),
        listeners=MappingProxyType({k: tuple(v) for k, v in listeners.items()}),
        listener_texts=MappingProxyType(texts),
        digest=config.digest,
        limits=config.limits,
        admin=config.admin,
    )


@dataclass(frozen=True)
class Changes:
    """Names added, removed, changed and unchanged for one kind of component."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    why: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


class Op(StrEnum):
    """The kinds of step, in the order a plan runs them. (A ``str``: plans are plain data,
    the admin endpoint shows them as JSON.)"""

    # Nothing runs yet: new endpoint objects for added and rebound endpoints.
    CREATE_ENDPOINT = "create_endpoint"
    # All or nothing: if one bind fails, those this apply bound are closed, and the
    # running graph is untouched.
    BIND = "bind"
    BIND_ADMIN = "bind_admin"  # the admin endpoint at a new address (or a first one)
    # From here on nothing can fail, and nothing waits: no message or client is handled
    # between two steps.
    ATTACH = "attach"  # a listener serves these endpoint objects (new handshakes go to them)
    START_ENDPOINT = "start_endpoint"  # a new endpoint object replaces the old one (if any) and serves
    UPDATE_ENDPOINT = "update_endpoint"  # settings that apply in place (limits, policies, compression)
    STOP_SOURCE = "stop_source"
    RESTART_SOURCE = "restart_source"
    START_SOURCE = "start_source"
    SWAP_ROUTES = "swap_routes"  # the routing table and the endpoints' upstream targets
    SET_LIMITS = "set_limits"
    RETIRE_ENDPOINT = "retire_endpoint"  # a removed or rebound endpoint's old object: its clients closed
    UNBIND = "unbind"  # a listener nothing uses any more
    UPDATE_ADMIN = "update_admin"  # the admin socket's mode, its access rules
    UNBIND_ADMIN = "unbind_admin"  # the admin endpoint at its old address


STEPS = tuple(Op)
_ORDER = {op: i for i, op in enumerate(STEPS)}
UNDOABLE = frozenset((Op.CREATE_ENDPOINT, Op.BIND, Op.BIND_ADMIN))  # the steps a failed bind takes back
# The admin endpoint's steps: the control plane's, which owns that endpoint (the runtime
# runs the others).
CONTROL = frozenset((Op.BIND_ADMIN, Op.UPDATE_ADMIN, Op.UNBIND_ADMIN))
# What a retired endpoint's clients are told (WebSocket close code and reason).
MOVED = (1001, "endpoint moved")
REMOVED = (1001, "endpoint removed")


class PlanError(RuntimeError):
    """A plan broke one of its own invariants (a bug in :func:`diff`, never a user's)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the runtime does to apply a plan, as plain data (see :data:`STEPS`).

    ``name`` is the component's name, or the listener's address; ``detail`` says why (the
    settings that changed) or with what (the endpoints a listener serves); ``key`` is a
    listener's key; ``close``, for a retired endpoint, the close code and reason its
    clients get.
    """

    op: Op
    name: str = ""
    detail: tuple[str, ...] = ()
    key: ListenerKey | None = None
    close: tuple[int, str] | None = None

    def __str__(self) -> str:
        return f"{self.op} {self.name}".rstrip() + (f" ({', '.join(self.detail)})" if self.detail else "")

    def as_dict(self) -> dict[str, Any]:
        return {"op": str(self.op), "name": self.name, "detail": list(self.detail)}


@dataclass(frozen=True)
class Plan:
    """What applying a new graph must do to a running one: ``steps``, in order, which
    the runtime executes without deciding anything; and, per kind of component, what was
    added, removed and changed (for the reload log).

    - ``sources.changed``: restart those connections; all other sources keep theirs.
    - ``endpoints.changed`` splits into ``endpoints_rebound`` (the listen address or wire
      format changed: their clients are closed and the endpoint is served anew) and
      ``endpoints_updated`` (limits or policies only: listener and clients stay).
    - ``listeners_added`` / ``listeners_removed``: sockets to bind / close. An endpoint
      moved to another path of a port that stays in use keeps that port's listener.
    - ``routes``: any change is a routing-table swap; nothing reconnects for it.
    """

    sources: Changes
    endpoints: Changes
    routes: Changes
    endpoints_rebound: tuple[str, ...]
    endpoints_updated: tuple[str, ...]
    listeners_added: tuple[ListenerKey, ...]
    listeners_removed: tuple[ListenerKey, ...]
    limits: tuple[str, ...] = ()  # "buffered 256MiB -> 512MiB", one per limit that changed
    steps: tuple[Step, ...] = ()
    listener_texts: Mapping[ListenerKey, str] = dataclasses.field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.steps

    def entries(self) -> list[tuple[str, str, str, str]]:
        """``(sign, kind, name, line)`` per affected component, e.g.
        ``("~", "route", "btc", "~ route btc: rewire (filter)")``."""
        out: list[tuple[str, str, str, str]] = []
        for kind, changes in (("source", self.sources), ("endpoint", self.endpoints), ("route", self.routes)):
            out += [("+", kind, n, f"+ {kind} {n}") for n in changes.added]
            out += [("-", kind, n, f"- {kind} {n}") for n in changes.removed]
            for n in changes.changed:
                what = ", ".join(changes.why.get(n, ()))
                if kind == "source":
                    verb = "restart"
                elif kind == "endpoint":
                    verb = "rebind" if n in self.endpoints_rebound else "update"
                else:
                    verb = "rewire"
                out.append(("~", kind, n, f"~ {kind} {n}: {verb} ({what})"))
        out += [
            ("+", "listener", self.listener_texts[k], f"+ listener {self.listener_texts[k]}")
            for k in self.listeners_added
        ]
        out += [
            ("-", "listener", self.listener_texts[k], f"- listener {self.listener_texts[k]}")
            for k in self.listeners_removed
        ]
        out += [("~", "limits", line.split()[0], f"~ limits: {line}") for line in self.limits]
        signs = {"bind_admin": "+", "unbind_admin": "-", "update_admin": "~"}
        for step in self.steps:
            if step.op in signs:
                sign = signs[step.op]
                tail = f": {step.detail[0]}" if step.detail else ""
                out.append((sign, "admin", step.name, f"{sign} admin {step.name}{tail}"))
        return out

    def describe(self) -> list[str]:
        """Readable lines, one per affected component: ``+ source kraken``, ``~ route btc (filter)``."""
        return [line for *_, line in self.entries()] or ["no changes"]

    def as_dict(self) -> dict[str, Any]:
        """The plan as plain data (``veylor check --against --json``)."""
        return {
            "empty": self.empty,
            "plan": self.describe() if self.steps else [],
            "steps": [s.as_dict() for s in self.steps],
        }


def _differences(a: Any, b: Any) -> tuple[str, ...]:
    """Names of the settings that differ between two specs of one kind (``origin`` ignored)."""
    if isinstance(a, Route):
        a, b = a.spec, b.spec
    if a is b:  # the same spec object (a file the loader's cache did not read again)
        return ()
    out = []
    for f in dataclasses.fields(a):
        if f.name in ("origin", "name") or not f.compare:
            continue
        if f.name == "filter":
            if a.filter_key != b.filter_key:
                out.append("filter")
        elif getattr(a, f.name) != getattr(b, f.name):
            out.append(f.name)
    return tuple(out)


def _compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> Changes:
    added = tuple(n for n in new if n not in old)
    removed = tuple(n for n in old if n not in new)
    changed, unchanged, why = [], [], {}
    for name in new:
        if name in old:
            diff = _differences(old[name], new[name])
            if diff:
                changed.append(name)
                why[name] = diff
            else:
                unchanged.append(name)
    return Changes(added, removed, tuple(changed), tuple(unchanged), MappingProxyType(why))


def _admin_steps(old: AdminSpec | None, new: AdminSpec | None) -> list[Step]:
    """The admin endpoint: bound anew when its address changes (the new one first, all
    or nothing, like any listener); its socket's mode and its access rules (hosts,
    tokens, read_only) changed in place, for the next request."""
    if old == new:
        return []
    if old is not None and new is not None and old.address == new.address:
        return [Step(Op.UPDATE_ADMIN, new.url, (new.changes(old),))]
    steps = [Step(Op.BIND_ADMIN, new.url)] if new is not None else []
    return steps + ([Step(Op.UNBIND_ADMIN, old.url)] if old is not None else [])


def diff(old: Graph, new: Graph) -> Plan:
    """The plan that turns a runtime running ``old`` into one running ``new``."""
    sources = _compare(old.sources, new.sources)
    endpoints = _compare(old.endpoints, new.endpoints)
    routes = _compare(old.routes, new.routes)
    rebound = tuple(n for n in endpoints.changed if "listen" in endpoints.why[n])
    updated = tuple(n for n in endpoints.changed if n not in rebound)
    limits = tuple(
        f"{f.name} {format_size(getattr(old.limits, f.name))} -> {format_size(getattr(new.limits, f.name))}"
        for f in dataclasses.fields(Limits)
        if getattr(old.limits, f.name) != getattr(new.limits, f.name)
    )
    listeners_added = tuple(k for k in new.listeners if k not in old.listeners)
    listeners_removed = tuple(k for k in old.listeners if k not in new.listeners)
    created = (*endpoints.added, *rebound)
    texts = {**old.listener_texts, **new.listener_texts}
    steps = [Step(Op.CREATE_ENDPOINT, n, endpoints.why.get(n, ("added",))) for n in created]
    steps += [Step(Op.BIND, texts[k], new.listeners[k], k) for k in listeners_added]
    admin = _admin_steps(old.admin, new.admin)
    steps += [s for s in admin if s.op == Op.BIND_ADMIN]
    steps += [
        Step(Op.ATTACH, texts[k], names, k)
        for k, names in new.listeners.items()
        if k in listeners_added
        or set(old.listeners.get(k, ())) != set(names)
        or any(n in created for n in names)
    ]
    steps += [Step(Op.START_ENDPOINT, n) for n in created]
    steps += [Step(Op.UPDATE_ENDPOINT, n, endpoints.why[n]) for n in updated]
    steps += [Step(Op.STOP_SOURCE, n) for n in sources.removed]
    steps += [Step(Op.RESTART_SOURCE, n, sources.why[n]) for n in sources.changed]
    steps += [Step(Op.START_SOURCE, n) for n in sources.added]
    if not (
        routes.empty and not created and not endpoints.removed and not sources.added and not sources.removed
    ):
        steps.append(Step(Op.SWAP_ROUTES))
    if limits:
        steps.append(Step(Op.SET_LIMITS, "", limits))
    steps += [Step(Op.RETIRE_ENDPOINT, n, ("moved",), close=MOVED) for n in rebound]
    steps += [Step(Op.RETIRE_ENDPOINT, n, ("removed",), close=REMOVED) for n in endpoints.removed]
    steps += [Step(Op.UNBIND, texts[k], (), k) for k in listeners_removed]
    steps += [s for s in admin if s.op != Op.BIND_ADMIN]
    if [_ORDER[s.op] for s in steps] != sorted(_ORDER[s.op] for s in steps):
        raise PlanError("plan steps out of order: " + ", ".join(str(s) for s in steps))
    return Plan(
        sources=sources,
        endpoints=endpoints,
        routes=routes,
        endpoints_rebound=rebound,
        endpoints_updated=updated,
        listeners_added=listeners_added,
        listeners_removed=listeners_removed,
        limits=limits,
        steps=tuple(steps),
        listener_texts=texts,
    )
