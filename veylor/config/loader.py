"""Load the main file and its drop-ins, validate, merge, check, and build a :class:`Config`.

Pure apart from reading files: no sockets, no event loop. Every problem found in
every file is collected and raised together in one :class:`ConfigError`. The steps are
modules of their own: reading a file (:mod:`veylor.config.files`), merging the
components of every file (:mod:`veylor.config.merge`), building each one's spec
(:mod:`veylor.config.build`), and the checks across components
(:mod:`veylor.config.checks`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from .access import Collected
from .adminspec import AdminSpec
from .build import build_admin, build_section
from .checks import (
    check_addresses,
    check_admin,
    check_position_files,
    check_references,
    check_upstream,
    warn_unused,
)
from .common import parse_size
from .files import MAX_FILE_SIZE, FileCache, FileRead, include_files, read_document
from .legacy import translate
from .merge import Load, collect
from .model import Config, Limits, Shape
from .problems import ConfigError, Location, Problem
from .schema import FAST_VALIDATION_FILES, definition, use_fast_validation, validate, with_defaults
from .yamlfile import SourceMap, read_yaml


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
    load = Load()
    load.files.append(main)
    shape: Shape = "v1"
    try:
        main_st: os.stat_result | None = os.stat(main)
    except OSError:
        main_st = None
    read = _read(main, None, env, load, cache, main_st, changed)
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
            collect(data, main_map, errors, load, read if shape == "v1" else None)

    dropins = include_files(main, include, main_map, load.problems)
    if len(dropins) + 1 >= FAST_VALIDATION_FILES:
        use_fast_validation()
    for label, st in dropins:
        load.files.append(label)
        dropin = _read(label, "dropin", env, load, cache, st, changed)
        if dropin is not None and dropin.data is not None:
            collect(dropin.data, dropin.where, dropin.errors, load, dropin)
    if cache is not None:
        cache.keep_only(set(load.files))

    limits = Limits()
    admin = None
    if read is not None and isinstance(read.data, dict) and shape == "v1" and not read.errors:
        properties = definition("config")["properties"]
        raw_limits = with_defaults(properties["limits"], read.data.get("limits", {}))
        limits = Limits(buffered=parse_size(raw_limits["buffered"]))
        if read.data.get("admin") is not None:
            admin = build_admin(load, read.data["admin"], read.where, main)
    config = dataclasses.replace(_config(load, shape, main, tuple(include), limits), admin=admin)
    if admin is not None and read is not None:
        check_admin(load, admin, read.where, config.endpoints, config.sources)
    if any(not p.warning for p in load.problems):
        raise ConfigError(_ordered(load))
    return config


def _read(
    label: str,
    def_name: str | None,
    env: Mapping[str, str],
    load: Load,
    cache: FileCache | None,
    st: os.stat_result | None,
    changed: frozenset[str] | None,
) -> FileRead | None:
    """One file read (:func:`~veylor.config.files.read_document`), its problems added to
    the load's and its content to the digest."""
    read = read_document(label, def_name, env, load.problems, cache, st, changed)
    if read is not None:
        load.hash_file(label, read.sha)
    return read


def _ordered(load: Load) -> list[Problem]:
    order = {f: i for i, f in enumerate(load.files)}
    return sorted(
        load.problems,
        key=lambda p: (order.get(p.location.file, len(order)), p.location.line, p.location.column),
    )


def _config(load: Load, shape: Shape, main: str, include: tuple[str, ...], limits: Limits) -> Config:
    """Typed components from the merged raw data, with the checks that span components."""
    sources = build_section(load, "sources")
    endpoints = build_section(load, "endpoints")
    check_addresses(load, endpoints)
    for d in load.defined["routes"].values():  # broken ones too: every problem in one pass
        check_references(load, d)
    routes = build_section(load, "routes")
    check_upstream(load, sources, routes)
    check_position_files(load, sources)

    warn_unused(load, routes, main)

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
