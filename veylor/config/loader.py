"""Load the main file and its drop-ins, validate, merge, check, and build a :class:`Config`.

Pure apart from reading files: no sockets, no event loop. Every problem found in
every file is collected and raised together in one :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..filters import FilterError, compile_filter
from .access import Collected
from .adminspec import AdminSpec
from .common import parse_size
from .contract import EndpointAccess
from .kinds import ENDPOINT_KINDS, SOURCE_KINDS, Kind, build_source, endpoint_from
from .legacy import legacy_shape, translate
from .model import Config, EndpointSpec, Limits, RouteSpec, Shape, route_from
from .problems import ConfigError, Location, PathT, Problem, did_you_mean
from .schema import (
    FAST_VALIDATION_FILES,
    coerce_variables,
    definition,
    use_fast_validation,
    validate,
    with_defaults,
)
from .yamlfile import SourceMap, read_yaml

KINDS = ("sources", "endpoints", "routes")
_KIND_DEF = {"sources": "source", "endpoints": "endpoint", "routes": "route"}


@dataclass
class _Defined:
    """One component as read: its raw data, where it came from, and whether it is broken
    (has schema errors: it is not built, but references to its name are not errors)."""

    raw: Any
    where: SourceMap
    path: PathT
    broken: bool = False
    error_paths: frozenset[PathT] = frozenset()  # where its schema errors are
    # The specs built from the (cacheable) read it came from, if the data is as read:
    # that read's ``built`` (not the read itself, which holds this in its components: a
    # cycle, which a reload froze out of the collector's reach, one per changed file)
    built: dict[tuple[str, str], Any] | None = None

    def valid_at(self, *keys: str | int) -> bool:
        """Whether the value at ``keys`` inside this component has no schema error."""
        full = (*self.path, *keys)
        return not any(p[: len(full)] == full for p in self.error_paths)

    @property
    def origin(self) -> Location:
        return self.where.key(self.path)


@dataclass
class _Load:
    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)
    defined: dict[str, dict[str, _Defined]] = field(default_factory=lambda: {k: {} for k in KINDS})
    referenced: dict[str, None] = field(default_factory=dict)  # files named by settings, in order

    def error(self, where: SourceMap, path: PathT, message: str, key: bool = False) -> None:
        loc = where.key(path) if key else where.value(path)
        self.problems.append(Problem(loc, path, message))

    def warn(self, where: SourceMap, path: PathT, message: str) -> None:
        self.problems.append(Problem(where.key(path), path, message, warning=True))


MAX_FILE_SIZE = 4 * 2**20  # a configuration file larger than this is refused unread


@dataclass
class FileRead:
    """One file read, parsed and validated: all the loader needs of it. Cacheable: the
    same content (and the same values of the variables it uses) gives the same read."""

    sha: bytes  # sha256 of the content
    data: Any  # None when the file cannot be used at all
    where: SourceMap
    shape: Shape
    problems: list[Problem]  # errors and warnings found in this file
    errors: list[Problem]  # the errors among them, with those of reading it
    env_used: Mapping[str, str | None]
    built: dict[tuple[str, str], Any] = field(default_factory=dict)  # (kind, name) -> (spec, problems)
    components: list[tuple[str, str, Any]] | None = None  # (kind, name, _Defined), once collected
    signature: Signature | None = None  # the file's stat when it was read


Signature = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns


def _signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _same_env(read: FileRead, env: Mapping[str, str]) -> bool:
    return all(env.get(k) == v for k, v in read.env_used.items())


class FileCache:
    """Validated reads of configuration files, by path and kind, reused while a file's
    content and the variables it uses are unchanged: a reload re-parses and
    re-validates only the files that changed (a thousand drop-ins, one edited, cost
    one file's work plus reading them)."""

    def __init__(self) -> None:
        self._reads: dict[tuple[str, str | None], FileRead] = {}
        self.hits = 0
        self.misses = 0

    def get(self, label: str, def_name: str | None, sha: bytes, env: Mapping[str, str]) -> FileRead | None:
        """The cached read of ``label`` if its content (``sha``) and variables are unchanged."""
        read = self._reads.get((label, def_name))
        if read is None or read.sha != sha or not _same_env(read, env):
            self.misses += 1
            return None
        self.hits += 1
        return read

    def unchanged(
        self, label: str, def_name: str | None, signature: Signature, env: Mapping[str, str]
    ) -> FileRead | None:
        """The cached read of ``label`` if the file looks untouched (same inode, size,
        modification and change times) and its variables are unchanged: for a reload
        whose trigger says which files changed, the others are not even read."""
        read = self._reads.get((label, def_name))
        if read is None or read.signature != signature or not _same_env(read, env):
            return None
        self.hits += 1
        return read

    def put(self, label: str, def_name: str | None, read: FileRead) -> None:
        self._reads[(label, def_name)] = read

    def keep_only(self, labels: set[str]) -> None:
        """Forget the files the last load did not read (removed drop-ins)."""
        for key in [k for k in self._reads if k[0] not in labels]:
            del self._reads[key]


def _read_blob(label: str, load: _Load) -> tuple[bytes, Signature] | None:
    try:
        # Non-blocking, and only regular files: a FIFO or a device put in place of a
        # configuration file must not hang the reload (or read forever).
        fd = os.open(label, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                load.problems.append(Problem(Location(label), (), _not_a_file(st)))
                return None
            signature = _signature(st)  # before reading: a later write shows
            blob = fh.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        load.problems.append(Problem(Location(label), (), "file not found"))
        return None
    except PermissionError:
        load.problems.append(Problem(Location(label), (), _permission_text("cannot read this file")))
        return None
    except OSError as exc:
        load.problems.append(Problem(Location(label), (), f"cannot read: {exc.strerror or exc}"))
        return None
    if len(blob) > MAX_FILE_SIZE:
        load.problems.append(
            Problem(
                Location(label),
                (),
                f"is larger than {MAX_FILE_SIZE // 2**20} MiB: a configuration file that big is "
                "refused unread (split it into drop-ins)",
            )
        )
        return None
    return blob, signature


def _not_a_file(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a YAML file"
    return "is not a regular file (a FIFO, device or socket?): remove it"


def _permission_text(what: str) -> str:
    return (
        f"{what}: permission denied; make it readable by the user Veylor runs as "
        f"(uid {os.geteuid()}), or take it out of include"
    )


def _include_files(
    main: str, patterns: list[str], where: SourceMap, load: _Load
) -> list[tuple[str, os.stat_result]]:
    """The drop-in files the include patterns match, in order. A directory a pattern
    must list, or a matched file, that exists but cannot be reached is a problem, never
    a silent gap in the configuration."""
    base = os.path.dirname(main)
    try:
        st = os.stat(main)
        seen = {(st.st_dev, st.st_ino)}
    except OSError:
        seen = set()
    out: list[tuple[str, os.stat_result]] = []
    for i, pattern in enumerate(patterns):
        full = os.path.join(base, os.path.expanduser(pattern))

        def denied(what: str, i: int = i, pattern: str = pattern) -> None:
            if where.has_key(("include",)):
                load.error(where, ("include", i), _permission_text(f"{what} (include pattern {pattern!r})"))
            else:  # the default pattern: there is no line to point at
                text = _permission_text(f"{what} (default include pattern {pattern!r})")
                load.problems.append(Problem(Location(main), (), text))

        if glob.has_magic(full):
            for directory in _listed_dirs(full):
                try:
                    with os.scandir(directory):
                        pass
                except PermissionError:
                    denied(f"cannot list directory {directory}")
                except OSError:
                    pass  # absent: an empty or missing routes.d/ is fine
            matches = sorted(glob.glob(full, recursive=True))
        elif os.path.lexists(full):
            matches = [full]
        else:
            load.error(where, ("include", i), f"included file {full} does not exist")
            matches = []
        for path in matches:
            try:
                st = os.stat(path)
            except PermissionError:
                denied(f"cannot reach {path}")
                continue
            except OSError:
                if os.path.islink(path):  # a drop-in whose target is gone: its routes would vanish
                    load.problems.append(
                        Problem(Location(path), (), "is a symbolic link to nothing: fix or remove it")
                    )
                continue  # removed since it was listed
            if not stat.S_ISREG(st.st_mode):
                if path is full and stat.S_ISDIR(st.st_mode):
                    load.error(
                        where,
                        ("include", i),
                        f"included path {full} is a directory (use a pattern such as dir/*.yaml)",
                    )
                elif not stat.S_ISDIR(st.st_mode):
                    # A FIFO, a device, a socket: never read, never skipped in silence.
                    load.problems.append(Problem(Location(path), (), _not_a_file(st)))
                continue
            # A file reached twice (links, overlapping patterns) is read once.
            identity = (st.st_dev, st.st_ino)
            if identity not in seen:
                seen.add(identity)
                out.append((path, st))
    return out


def _listed_dirs(pattern: str) -> list[str]:
    """The directories glob must list to expand ``pattern``."""
    parent = os.path.dirname(pattern) or "."
    if not glob.has_magic(parent):
        return [parent]
    return [d for d in glob.glob(parent, recursive=True) if os.path.isdir(d)]


def _collect(
    doc_data: dict[str, Any],
    where: SourceMap,
    errors: list[Problem],
    load: _Load,
    read: FileRead | None = None,
) -> None:
    """Add the components of one document to the merged set; a name defined twice is an error.

    ``errors`` are the schema errors of this document: a component with one is kept as
    broken, so that one mistake is reported once and not again as an unknown reference.
    """
    components = read.components if read is not None else None
    if components is None:
        components = _components(doc_data, where, errors, read)
        if read is not None:
            read.components = components
    for kind, name, d in components:
        if "\n" in name:  # (the schema's pattern, run by Python's re, lets a final newline by)
            load.error(where, d.path, "is not a valid name: it ends with a line break", key=True)
            continue
        defined = load.defined[kind]
        first = defined.get(name)
        if first is not None:
            load.error(
                where,
                d.path,
                f"{kind[:-1]} '{name}' is already defined at {first.origin}: "
                "names must be unique across the main file and all drop-ins; rename one",
                key=True,
            )
            continue
        defined[name] = d


def _components(
    doc_data: dict[str, Any], where: SourceMap, errors: list[Problem], read: FileRead | None
) -> list[tuple[str, str, _Defined]]:
    out = []
    for kind in KINDS:
        section = doc_data.get(kind)
        if not isinstance(section, dict):
            continue
        for name, raw in section.items():
            path = (kind, name)
            mine = frozenset(p.path for p in errors if p.path[:2] == path) if errors else frozenset()
            broken = not isinstance(raw, dict) or bool(mine)
            built = read.built if read is not None else None
            out.append((kind, name, _Defined(raw, where, path, broken, mine, built)))
    return out


def _read_document(
    label: str,
    def_name: str | None,
    env: Mapping[str, str],
    load: _Load,
    cache: FileCache | None,
    st: os.stat_result | None = None,
    changed: frozenset[str] | None = None,
) -> FileRead | None:
    """Read and validate one file (or take its read from ``cache``).

    None when it cannot be read at all. Otherwise its problems are recorded; its data
    is None when it is not YAML or not a mapping, and is still returned when it has
    schema errors, so that the rest of the file is checked too.

    With ``changed`` (the absolute paths a file watcher saw change) and ``st`` (the
    file's stat), a file not among them whose stat is as when it was cached is not read.
    """
    read = None
    if cache is not None and changed is not None and st is not None and os.path.abspath(label) not in changed:
        read = cache.unchanged(label, def_name, _signature(st), env)
    if read is None:
        got = _read_blob(label, load)
        if got is None:
            return None
        blob, signature = got
        sha = hashlib.sha256(blob).digest()
        read = cache.get(label, def_name, sha, env) if cache is not None else None
        if read is None:
            read = _parse_document(label, blob, sha, def_name, env)
            if cache is not None:
                cache.put(label, def_name, read)
        read.signature = signature
    load.digest.update(label.encode() + b"\0" + read.sha)
    load.problems.extend(read.problems)
    return read


def _parse_document(
    label: str, blob: bytes, sha: bytes, def_name: str | None, env: Mapping[str, str]
) -> FileRead:
    def unusable(problems: list[Problem], where: SourceMap | None = None, used: Any = None) -> FileRead:
        errors = [p for p in problems if not p.warning]
        return FileRead(sha, None, where or SourceMap(file=label), "v1", problems, errors, used or {})

    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = blob[: exc.start].count(b"\n") + 1
        return unusable([Problem(Location(label, line), (), "is not UTF-8 text")])
    doc = read_yaml(label, text, env)
    problems = list(doc.problems)
    if doc.fatal:
        return unusable(problems, doc.where, doc.env_used)
    data = doc.data
    if data is None:
        return FileRead(sha, {}, doc.where, "v1", problems, list(problems), doc.env_used)
    if not isinstance(data, dict):
        problems.append(
            Problem(
                doc.where.value(()), (), "the top level must be a mapping with sources, endpoints and routes"
            )
        )
        return unusable(problems, doc.where, doc.env_used)
    shape: Shape = "v1"
    if def_name is None:
        shape = legacy_shape(data) or "v1"
    coerce_variables(data, doc.whole, def_name)
    found = validate(data, doc.where, def_name)
    # A value whose ${VAR} failed was already reported; do not report its emptiness again.
    env_paths = {p.path for p in doc.problems}
    found = [_from_variables(p, doc.variables) for p in found if p.path not in env_paths]
    if shape != "v1":
        # Veylor 1.x ignored keys it did not know; keep such files working, but say so.
        found = [
            Problem(p.location, p.path, p.message + " (ignored, as Veylor 1.x did)", True, p.code)
            if p.code == "unknown-key"
            else p
            for p in found
        ]
    problems.extend(found)
    errors = [p for p in problems if not p.warning]
    return FileRead(sha, data, doc.where, shape, problems, errors, doc.env_used)


def _from_variables(problem: Problem, variables: Mapping[PathT, tuple[str, ...]]) -> Problem:
    """Name the variables a wrong value came from: the fix is in the environment."""
    names = variables.get(problem.path)
    if not names:
        return problem
    refs = ", ".join(f"${{{n}}}" for n in dict.fromkeys(names))
    return Problem(
        problem.location, problem.path, f"{problem.message} (from {refs})", problem.warning, problem.code
    )


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    cache: FileCache | None = None,
    changed: frozenset[str] | None = None,
) -> Config:
    """Load, validate and check the configuration rooted at ``path``.

    Raises :class:`ConfigError` listing every problem; warnings are kept on the result.
    With ``cache`` (a reloader keeps one), files whose content did not change since the
    last load are not parsed or validated again; with ``changed`` too (the absolute
    paths a file watcher reported), the other files are not even read if their stat is
    unchanged.
    """
    env = os.environ if env is None else env
    main = os.fspath(path)
    load = _Load()
    load.files.append(main)
    shape: Shape = "v1"
    try:
        main_st: os.stat_result | None = os.stat(main)
    except OSError:
        main_st = None
    read = _read_document(main, None, env, load, cache, main_st, changed)
    include: list[str] = list(definition("config")["properties"]["include"]["default"])
    main_map = SourceMap(file=main)
    if read is not None and read.data is not None:
        data, main_map, shape, errors = read.data, read.where, read.shape, read.errors
        if shape != "v1" and not errors:
            data, main_map, more = translate(data, main_map)
            load.problems.extend(more)
        inc = data.get("include", include)
        if isinstance(inc, str) or (isinstance(inc, list) and all(isinstance(i, str) for i in inc)):
            include = [inc] if isinstance(inc, str) else list(inc)
        if shape == "v1" or not errors:
            _collect(data, main_map, errors, load, read if shape == "v1" else None)

    dropins = _include_files(main, include, main_map, load)
    if len(dropins) + 1 >= FAST_VALIDATION_FILES:
        use_fast_validation()
    for label, st in dropins:
        load.files.append(label)
        dropin = _read_document(label, "dropin", env, load, cache, st, changed)
        if dropin is not None and dropin.data is not None:
            _collect(dropin.data, dropin.where, dropin.errors, load, dropin)
    if cache is not None:
        cache.keep_only(set(load.files))

    limits = Limits()
    admin = None
    if read is not None and isinstance(read.data, dict) and shape == "v1" and not read.errors:
        properties = definition("config")["properties"]
        raw_limits = with_defaults(properties["limits"], read.data.get("limits", {}))
        limits = Limits(buffered=parse_size(raw_limits["buffered"]))
        if read.data.get("admin") is not None:
            admin = _admin(load, read.data["admin"], read.where, main)
    config = dataclasses.replace(_build(load, shape, main, tuple(include), limits), admin=admin)
    if admin is not None and read is not None:
        _check_admin(load, admin, read.where, config.endpoints)
    if any(not p.warning for p in load.problems):
        raise ConfigError(_ordered(load))
    return config


def _ordered(load: _Load) -> list[Problem]:
    order = {f: i for i, f in enumerate(load.files)}
    return sorted(
        load.problems,
        key=lambda p: (order.get(p.location.file, len(order)), p.location.line, p.location.column),
    )


def _found(d: _Defined, prefix: PathT, collected: Collected) -> list[Problem]:
    """The problems of the files a component refers to, located: at the key that names
    the file, or at the line of the file itself (a tokens file's bad line)."""
    out = []
    for fp in collected.problems:
        at = (*d.path, *prefix, *fp.subpath)
        if fp.file is not None:
            out.append(Problem(Location(fp.file, fp.line), (), fp.message, fp.warning))
        else:
            out.append(Problem(d.where.value(at), at, fp.message, fp.warning))
    return out


def _foreign(d: _Defined, kinds: Mapping[str, Kind], what: str) -> list[Problem]:
    """Settings written for a component that its kind does not use (``max_clients`` on
    a NATS endpoint): problems at their keys, naming the kinds they are for."""
    kind = next((k for k in kinds.values() if isinstance(d.raw, dict) and k.key in d.raw), None)
    if kind is None or kind.settings is None:
        return []
    users = [k.key for k in kinds.values() if k.settings is None]
    out = []
    for key in d.raw:
        if key != kind.key and key not in kind.settings:
            at = (*d.path, key)
            out.append(
                Problem(
                    d.where.key(at),
                    at,
                    f"'{key}' does not apply to a {kind.key} {what} (it is for {what}s with "
                    f"{' or '.join(users)}); remove it",
                )
            )
    return out


def _source(name: str, d: _Defined) -> Built:
    collected = Collected()
    spec = build_source(name, with_defaults(definition("source"), d.raw), d.origin, collected)
    problems = _found(d, (), collected) + _foreign(d, SOURCE_KINDS, "source")
    for sub, text in spec.check():
        at = (*d.path, *sub)
        problems.append(Problem(d.where.value(at), at, text))
    return spec, problems, tuple(collected.files)


def _endpoint(name: str, d: _Defined) -> Built:
    collected = Collected()
    spec = endpoint_from(name, with_defaults(definition("endpoint"), d.raw), d.origin, collected)
    problems = _found(d, (spec.kind,), collected) + _foreign(d, ENDPOINT_KINDS, "endpoint")
    for sub, text in spec.listen.check():
        at = (*d.path, spec.kind, *sub)
        problems.append(Problem(d.where.value(at), at, text))
    return spec, problems, tuple(collected.files)


def _route(name: str, d: _Defined) -> Built:
    raw = with_defaults(definition("route"), d.raw)
    compiled = None
    problems = []
    if raw.get("filter") is not None:
        try:
            compiled = compile_filter(raw["filter"])
        except FilterError as exc:
            at = (*d.path, "filter", *exc.path)
            problems.append(Problem(d.where.value(at), at, exc.message))
    collected = Collected()
    spec = route_from(name, raw, d.origin, compiled, collected)
    return spec, problems + _found(d, (), collected), ()


Built = tuple[Any, list[Problem], tuple[tuple[str, bytes], ...]]  # spec, problems, files it read


_BUILDERS: dict[str, Any] = {"sources": _source, "endpoints": _endpoint, "routes": _route}


def _built(load: _Load, kind: str) -> dict[str, Any]:
    """The typed specs of one kind of component, with the problems found building them.

    A component read from a cached file is built once: its spec (and its compiled
    filter) is kept with the file's read and reused while the file is unchanged, unless
    it names other files (a tokens file, a certificate), which are read at every load
    and are part of the configuration's digest, whether they could be read or not (a
    file that was missing and comes back applies like any edit).
    """
    out = {}
    for name, d in _usable(load, kind):
        memo = d.built
        made = memo.get((kind, name)) if memo is not None else None
        if made is None:
            made = _BUILDERS[kind](name, d)
            if memo is not None and not made[2]:
                memo[(kind, name)] = made
        spec, problems, files = made
        for path, sha in files:
            load.digest.update(path.encode() + b"\0" + sha)
            load.referenced.setdefault(path)
        load.problems.extend(problems)
        out[name] = spec
    return out


def _build(load: _Load, shape: Shape, main: str, include: tuple[str, ...], limits: Limits) -> Config:
    """Typed components from the merged raw data, with the checks that span components."""
    sources = _built(load, "sources")
    endpoints = _built(load, "endpoints")
    _check_addresses(load, endpoints)
    for d in load.defined["routes"].values():  # broken ones too: every problem in one pass
        _check_references(load, d)
    routes = _built(load, "routes")
    _check_upstream(load, sources, routes)
    _check_position_files(load, sources)

    _warn_unused(load, routes, main)

    return Config(
        sources=sources,
        endpoints=endpoints,
        routes=routes,
        shape=shape,
        main_file=main,
        files=tuple(load.files),
        warnings=tuple(p for p in _ordered(load) if p.warning),
        digest=load.digest.hexdigest(),
        include=include,
        limits=limits,
        referenced=tuple(load.referenced),
    )


def _check_upstream(load: _Load, sources: Mapping[str, Any], routes: Mapping[str, RouteSpec]) -> None:
    """A route that lets clients send to a source that has nowhere to send them (a NATS
    source of a wildcard subject, without ``upstream_subject``) is an error."""
    for name, route in routes.items():
        source = sources.get(route.source)
        problem = source.upstream_problem() if route.upstream and source is not None else None
        if problem is not None:
            d = load.defined["routes"][name]
            load.error(d.where, (*d.path, "upstream"), f"source '{route.source}' {problem}")


def _check_position_files(load: _Load, sources: Mapping[str, Any]) -> None:
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


def _warn_unused(load: _Load, routes: Mapping[str, RouteSpec], main: str) -> None:
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


def _admin(load: _Load, raw: Any, where: SourceMap, main: str) -> AdminSpec:
    """The admin endpoint's spec; its tokens file, like an endpoint's, is read at every
    load and is part of the digest (a changed file is a changed setting)."""
    collected = Collected()
    raw = with_defaults(definition("config")["properties"]["admin"], raw)
    admin = AdminSpec.from_raw(raw, os.path.dirname(os.path.abspath(main)), collected)
    for fp in collected.problems:
        at = ("admin", *fp.subpath)
        if fp.file is not None:
            load.problems.append(Problem(Location(fp.file, fp.line), (), fp.message, fp.warning))
        else:
            load.problems.append(Problem(where.value(at), at, fp.message, fp.warning))
    for path, sha in collected.files:
        load.digest.update(path.encode() + b"\0" + sha)
        load.referenced.setdefault(path)
    for sub, text in admin.check():
        load.error(where, ("admin", *sub), text)
    return admin


def _check_admin(
    load: _Load, admin: AdminSpec, where: SourceMap, endpoints: Mapping[str, EndpointSpec]
) -> None:
    """The admin endpoint and an endpoint cannot share an address (the second bind would
    fail; on a Unix path, the stale-socket check would first connect to Veylor's own).
    ``endpoints``: the specs the load built (not built again: an endpoint's access reads
    its tokens file and loads its certificate)."""
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


def _check_references(load: _Load, d: _Defined) -> None:
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


def _usable(load: _Load, kind: str) -> list[tuple[str, _Defined]]:
    return [(name, d) for name, d in load.defined[kind].items() if not d.broken]


def _check_addresses(load: _Load, endpoints: Mapping[str, EndpointSpec]) -> None:
    """Two endpoints with one claim (a Unix path, a host:port:path) or that clash in a
    group (a wildcard and a specific host on one port: the second bind would fail) are
    errors naming both."""
    claims: dict[tuple[Any, ...], _Defined] = {}
    groups: dict[tuple[Any, ...], list[tuple[Any, _Defined]]] = {}
    shared: dict[tuple[Any, ...], tuple[Any, _Defined]] = {}
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


def admin_address(path: str, env: Mapping[str, str] | None = None) -> AdminSpec | None:
    """Where the admin endpoint of the configuration at ``path`` listens (for ``veylor
    reload`` and ``veylor status``), or None when it has none. Only the main file is read:
    a broken drop-in must not hide where to send the reload that will report it.
    :class:`ConfigError` when the main file itself cannot say."""
    env = os.environ if env is None else env
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise ConfigError([Problem(Location(path), (), f"cannot read it: {exc.strerror or exc}")]) from None
    if len(raw) > MAX_FILE_SIZE:
        raise ConfigError([Problem(Location(path), (), "is too large to be a Veylor configuration")])
    doc = read_yaml(path, raw.decode("utf-8", "replace"), env)
    data = doc.data
    if not isinstance(data, dict) or data.get("admin") is None:
        if doc.problems and not isinstance(data, dict):
            raise ConfigError(list(doc.problems))
        return None
    problems = [p for p in validate(data, doc.where) if p.path[:1] == ("admin",) and not p.warning]
    if problems:
        raise ConfigError(problems)
    # Its tokens too, when this user can read them: what `veylor reload` sends when it is
    # given none (problems reading them are the running Veylor's to report, not ours).
    raw_admin = with_defaults(definition("config")["properties"]["admin"], data["admin"])
    admin = AdminSpec.from_raw(raw_admin, os.path.dirname(os.path.abspath(path)), Collected())
    wrong = [Problem(doc.where.value(("admin", *sub)), ("admin", *sub), text) for sub, text in admin.check()]
    if wrong:
        raise ConfigError(wrong)
    return admin
