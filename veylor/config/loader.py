"""Load the main file and its drop-ins, validate, merge, check, and build a :class:`Config`.

Pure apart from reading files: no sockets, no event loop. Every problem found in
every file is collected and raised together in one :class:`ConfigError`.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..filters import FilterError, compile_filter
from .legacy import legacy_shape, translate
from .model import (
    Config,
    EndpointSpec,
    Shape,
    UnixListen,
    WebSocketListen,
    endpoint_from,
    redact_url,
    route_from,
    source_from,
)
from .problems import ConfigError, Location, PathT, Problem, did_you_mean
from .schema import definition, validate, with_defaults
from .yamlfile import SourceMap, read_yaml

KINDS = ("sources", "endpoints", "routes")
_KIND_DEF = {"sources": "source", "endpoints": "endpoint", "routes": "route"}
_WILDCARD_HOSTS = {"0.0.0.0", "::", "", "*"}
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, one of them the terminating NUL


@dataclass
class _Defined:
    """One component as read: its raw data, where it came from, and whether it is broken
    (has schema errors: it is not built, but references to its name are not errors)."""

    raw: Any
    where: SourceMap
    path: PathT
    broken: bool = False

    @property
    def origin(self) -> Location:
        return self.where.key(self.path)


@dataclass
class _Load:
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)
    defined: dict[str, dict[str, _Defined]] = field(default_factory=lambda: {k: {} for k in KINDS})

    def error(self, where: SourceMap, path: PathT, message: str, key: bool = False) -> None:
        loc = where.key(path) if key else where.value(path)
        self.problems.append(Problem(loc, path, message))

    def warn(self, where: SourceMap, path: PathT, message: str) -> None:
        self.problems.append(Problem(where.key(path), path, message, warning=True))


def _read_text(label: str, load: _Load) -> str | None:
    try:
        with open(label, "rb") as fh:
            blob = fh.read()
    except FileNotFoundError:
        load.problems.append(Problem(Location(label), (), "file not found"))
        return None
    except IsADirectoryError:
        load.problems.append(Problem(Location(label), (), "is a directory, not a YAML file"))
        return None
    except OSError as exc:
        load.problems.append(Problem(Location(label), (), f"cannot read: {exc.strerror or exc}"))
        return None
    load.digest.update(label.encode() + b"\0" + blob + b"\0")
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = blob[: exc.start].count(b"\n") + 1
        load.problems.append(Problem(Location(label, line), (), "is not UTF-8 text"))
        return None


def _include_files(main: str, patterns: list[str], where: SourceMap, load: _Load) -> list[str]:
    base = os.path.dirname(main)
    seen = {os.path.realpath(main)}
    out: list[str] = []
    for i, pattern in enumerate(patterns):
        full = os.path.join(base, os.path.expanduser(pattern))
        if glob.has_magic(full):
            matches = sorted(glob.glob(full, recursive=True))
        elif os.path.exists(full):
            matches = [full]
        else:
            load.error(where, ("include", i), f"included file {full} does not exist")
            matches = []
        for path in matches:
            real = os.path.realpath(path)
            if os.path.isfile(path) and real not in seen:
                seen.add(real)
                out.append(path)
    return out


def _collect(doc_data: dict[str, Any], where: SourceMap, errors: list[Problem], load: _Load) -> None:
    """Add the components of one document to the merged set; a name defined twice is an error.

    ``errors`` are the schema errors of this document: a component with one is kept as
    broken, so that one mistake is reported once and not again as an unknown reference.
    """
    for kind in KINDS:
        section = doc_data.get(kind)
        if not isinstance(section, dict):
            continue
        for name, raw in section.items():
            path = (kind, name)
            first = load.defined[kind].get(name)
            if first is not None:
                load.error(
                    where,
                    path,
                    f"{kind[:-1]} '{name}' is already defined at {first.origin}: "
                    "names must be unique across the main file and all drop-ins; rename one",
                    key=True,
                )
                continue
            broken = not isinstance(raw, dict) or any(p.path[:2] == path for p in errors)
            load.defined[kind][name] = _Defined(raw, where, path, broken)


def _read_document(label: str, def_name: str | None, env: Mapping[str, str], load: _Load):
    """Read and validate one file.

    Returns (data, source map, shape, errors) or None when the file cannot be read as a
    mapping at all. Environment and schema errors are recorded and returned; the data is
    still returned so that the rest of the file is checked too.
    """
    text = _read_text(label, load)
    if text is None:
        return None
    doc = read_yaml(label, text, env)
    load.problems.extend(doc.problems)
    if doc.fatal:
        return None
    data = doc.data
    if data is None:
        return {}, doc.where, "v1", list(doc.problems)
    if not isinstance(data, dict):
        load.problems.append(
            Problem(
                doc.where.value(()), (), "the top level must be a mapping with sources, endpoints and routes"
            )
        )
        return None
    shape: Shape = "v1"
    if def_name is None:
        shape = legacy_shape(data) or "v1"
    problems = validate(data, doc.where, def_name)
    # A value whose ${VAR} failed was already reported; do not report its emptiness again.
    env_paths = {p.path for p in doc.problems}
    problems = [p for p in problems if p.path not in env_paths]
    if shape != "v1":
        # Veylor 1.x ignored keys it did not know; keep such files working, but say so.
        problems = [
            Problem(p.location, p.path, p.message + " (ignored, as Veylor 1.x did)", True, p.code)
            if p.code == "unknown-key"
            else p
            for p in problems
        ]
    load.problems.extend(problems)
    errors = [p for p in [*doc.problems, *problems] if not p.warning]
    return data, doc.where, shape, errors


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Load, validate and check the configuration rooted at ``path``.

    Raises :class:`ConfigError` listing every problem; warnings are kept on the result.
    """
    env = os.environ if env is None else env
    main = os.fspath(path)
    load = _Load()
    load.files.append(main)
    shape: Shape = "v1"
    read = _read_document(main, None, env, load)
    include: list[str] = list(definition("config")["properties"]["include"]["default"])
    main_map = SourceMap(file=main)
    if read is not None:
        data, main_map, shape, errors = read
        if shape != "v1" and not errors:
            data, main_map, more = translate(data, main_map)
            load.problems.extend(more)
        inc = data.get("include", include)
        if isinstance(inc, str) or (isinstance(inc, list) and all(isinstance(i, str) for i in inc)):
            include = [inc] if isinstance(inc, str) else list(inc)
        if shape == "v1" or not errors:
            _collect(data, main_map, errors, load)

    for label in _include_files(main, include, main_map, load):
        load.files.append(label)
        dropin = _read_document(label, "dropin", env, load)
        if dropin is not None:
            _collect(dropin[0], dropin[1], dropin[3], load)

    config = _build(load, shape, main)
    if any(not p.warning for p in load.problems):
        raise ConfigError(_ordered(load))
    return config


def _ordered(load: _Load) -> list[Problem]:
    order = {f: i for i, f in enumerate(load.files)}
    return sorted(
        load.problems,
        key=lambda p: (order.get(p.location.file, len(order)), p.location.line, p.location.column),
    )


def _build(load: _Load, shape: Shape, main: str) -> Config:
    """Typed components from the merged raw data, with the checks that span components."""
    sources = {}
    for name, d in _usable(load, "sources"):
        raw = with_defaults(definition("source"), d.raw)
        r = raw["reconnect"]
        if r["max_delay"] < r["initial_delay"]:
            load.error(
                d.where,
                (*d.path, "reconnect", "max_delay"),
                f"max_delay ({r['max_delay']}) is less than initial_delay ({r['initial_delay']})",
            )
        try:
            urlsplit(raw["url"]).port  # noqa: B018 - raises on a bad port
        except ValueError:
            load.error(d.where, (*d.path, "url"), f"{redact_url(raw['url'])!r} has an invalid port")
        sources[name] = source_from(name, raw, d.origin)

    endpoints = {}
    for name, d in _usable(load, "endpoints"):
        raw = with_defaults(definition("endpoint"), d.raw)
        endpoints[name] = endpoint_from(name, raw, d.origin)
        listen = endpoints[name].listen
        if isinstance(listen, UnixListen) and len(os.fsencode(listen.path)) > _UNIX_PATH_MAX:
            load.error(
                d.where,
                (*d.path, "unix", "path"),
                f"is {len(os.fsencode(listen.path))} bytes long; Unix socket paths may have at most "
                f"{_UNIX_PATH_MAX}: choose a shorter path",
            )
    _check_addresses(load, endpoints)

    routes = {}
    for name, d in _usable(load, "routes"):
        raw = with_defaults(definition("route"), d.raw)
        if raw["from"] not in load.defined["sources"]:
            load.error(
                d.where,
                (*d.path, "from"),
                f"unknown source '{raw['from']}'{did_you_mean(raw['from'], load.defined['sources'])}"
                + ("" if load.defined["sources"] else " (no sources are defined)"),
            )
        targets = [raw["to"]] if isinstance(raw["to"], str) else raw["to"]
        for i, target in enumerate(targets):
            if target not in load.defined["endpoints"]:
                at = (*d.path, "to") if isinstance(raw["to"], str) else (*d.path, "to", i)
                load.error(
                    d.where,
                    at,
                    f"unknown endpoint '{target}'{did_you_mean(target, load.defined['endpoints'])}"
                    + ("" if load.defined["endpoints"] else " (no endpoints are defined)"),
                )
        compiled = None
        if raw.get("filter") is not None:
            try:
                compiled = compile_filter(raw["filter"])
            except FilterError as exc:
                load.error(d.where, (*d.path, "filter", *exc.path), exc.message)
        routes[name] = route_from(name, raw, d.origin, compiled)

    used_sources = {r.source for r in routes.values()}
    used_endpoints = {e for r in routes.values() for e in r.endpoints}
    if any(d.broken for d in load.defined["routes"].values()):
        used_sources = set(load.defined["sources"])  # cannot tell: do not warn
        used_endpoints = set(load.defined["endpoints"])
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

    return Config(
        sources=sources,
        endpoints=endpoints,
        routes=routes,
        shape=shape,
        main_file=main,
        files=tuple(load.files),
        warnings=tuple(p for p in _ordered(load) if p.warning),
        digest=load.digest.hexdigest(),
    )


def _usable(load: _Load, kind: str) -> list[tuple[str, _Defined]]:
    return [(name, d) for name, d in load.defined[kind].items() if not d.broken]


def _check_addresses(load: _Load, endpoints: Mapping[str, EndpointSpec]) -> None:
    """Two endpoints on one Unix path or one host:port:path, or a wildcard and a specific
    host on one port (the second bind would fail), are errors naming both."""
    unix: dict[str, _Defined] = {}
    ws_paths: dict[tuple[str, int, str], _Defined] = {}
    ws_hosts: dict[int, dict[str, _Defined]] = {}
    for name, spec in endpoints.items():
        d = load.defined["endpoints"][name]
        listen = spec.listen
        if isinstance(listen, UnixListen):
            key = os.path.normpath(listen.path)
            other = unix.setdefault(key, d)
            if other is not d:
                load.error(
                    d.where,
                    (*d.path, "unix", "path"),
                    f"Unix socket {listen.path} is already used by endpoint '{other.path[1]}' "
                    f"({other.origin}): each endpoint needs its own path",
                )
            continue
        assert isinstance(listen, WebSocketListen)
        wkey = (listen.host, listen.port, listen.path)
        other = ws_paths.setdefault(wkey, d)
        if other is not d:
            load.error(
                d.where,
                (*d.path, "websocket"),
                f"{listen} is already served by endpoint '{other.path[1]}' ({other.origin}): "
                "endpoints sharing a host and port need different paths",
            )
            continue
        hosts = ws_hosts.setdefault(listen.port, {})
        for host, first in hosts.items():
            if host != listen.host and (host in _WILDCARD_HOSTS or listen.host in _WILDCARD_HOSTS):
                load.error(
                    d.where,
                    (*d.path, "websocket", "host"),
                    f"port {listen.port} is bound on {host!r} by endpoint '{first.path[1]}' "
                    f"({first.origin}) and on {listen.host!r} here: a wildcard address and another "
                    "address cannot share a port; use the same host for both",
                )
                break
        hosts.setdefault(listen.host, d)
