"""Building: the typed spec of each component of the merged set, with the problems found
building it (the files its settings name, settings its kind does not use, what its
kind's own checks find), and the admin endpoint's spec.

A component read from a cached file is built once, while the file is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..filters import FilterError, compile_filter
from .access import Collected
from .adminspec import AdminSpec
from .kinds import ENDPOINT_KINDS, SOURCE_KINDS, Kind, build_source, endpoint_from
from .latestspec import conflate_from, resume_from, snapshot_from
from .merge import Defined, Load
from .model import route_from
from .problems import Location, PathT, Problem
from .schema import definition, with_defaults
from .yamlfile import SourceMap

Built = tuple[Any, list[Problem], tuple[tuple[str, bytes], ...]]  # spec, problems, files it read


def _found(where: SourceMap, prefix: PathT, collected: Collected) -> list[Problem]:
    """The problems found building a spec (those of the files it refers to), located:
    at the key under ``prefix`` that names the file, or at the line of the file itself
    (a tokens file's bad line)."""
    out = []
    for fp in collected.problems:
        at = (*prefix, *fp.subpath)
        if fp.file is not None:
            out.append(Problem(Location(fp.file, fp.line), (), fp.message, fp.warning))
        else:
            out.append(Problem(where.value(at), at, fp.message, fp.warning))
    return out


def _foreign(d: Defined, kinds: Mapping[str, Kind], what: str) -> list[Problem]:
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


def _source(name: str, d: Defined) -> Built:
    collected = Collected()
    spec = build_source(name, with_defaults(definition("source"), d.raw), d.origin, collected)
    problems = _found(d.where, d.path, collected) + _foreign(d, SOURCE_KINDS, "source")
    for sub, text in spec.check():
        at = (*d.path, *sub)
        problems.append(Problem(d.where.value(at), at, text))
    return spec, problems, tuple(collected.files)


def _endpoint(name: str, d: Defined) -> Built:
    collected = Collected()
    spec = endpoint_from(name, with_defaults(definition("endpoint"), d.raw), d.origin, collected)
    problems = _found(d.where, (*d.path, spec.kind), collected) + _foreign(d, ENDPOINT_KINDS, "endpoint")
    for sub, text in spec.listen.check():
        at = (*d.path, spec.kind, *sub)
        problems.append(Problem(d.where.value(at), at, text))
    return spec, problems, tuple(collected.files)


def _route(name: str, d: Defined) -> Built:
    raw = with_defaults(definition("route"), d.raw)
    compiled = None
    problems = []
    if raw.get("filter") is not None:
        try:
            compiled = compile_filter(raw["filter"])
        except FilterError as exc:
            at = (*d.path, "filter", *exc.path)
            problems.append(Problem(d.where.value(at), at, exc.message))
    snapshot, found = snapshot_from(raw.get("snapshot"))
    conflate, more = conflate_from(raw.get("conflate"))
    resume, also = resume_from(raw.get("resume"))
    for key, sub, text in [
        *(("snapshot", *f) for f in found),
        *(("conflate", *f) for f in more),
        *(("resume", *f) for f in also),
    ]:
        at = (*d.path, key, *sub)
        problems.append(Problem(d.where.value(at), at, text))
    collected = Collected()
    spec = route_from(name, raw, d.origin, compiled, collected, snapshot, conflate, resume)
    return spec, problems + _found(d.where, d.path, collected), ()


_BUILDERS: dict[str, Any] = {"sources": _source, "endpoints": _endpoint, "routes": _route}


def build_section(load: Load, section: str) -> dict[str, Any]:
    """The typed specs of one section's components (``sources``, ``endpoints``,
    ``routes``), with the problems found building them (a broken component is not built).

    A component read from a cached file is built once: its spec (and its compiled
    filter) is kept with the file's read and reused while the file is unchanged, unless
    it names other files (a tokens file, a certificate), which are read at every load
    and are part of the configuration's digest, whether they could be read or not (a
    file that was missing and comes back applies like any edit).
    """
    out = {}
    for name, d in load.defined[section].items():
        if d.broken:
            continue
        memo = d.built
        made = memo.get((section, name)) if memo is not None else None
        if made is None:
            made = _BUILDERS[section](name, d)
            if memo is not None and not made[2]:
                memo[(section, name)] = made
        spec, problems, files = made
        load.refer(files)
        load.problems.extend(problems)
        out[name] = spec
    return out


def build_admin(load: Load, raw: Any, where: SourceMap, main: str) -> AdminSpec:
    """The admin endpoint's spec; its tokens file, like an endpoint's, is read at every
    load and is part of the digest (a changed file is a changed setting)."""
    collected = Collected()
    raw = with_defaults(definition("config")["properties"]["admin"], raw)
    admin = AdminSpec.from_raw(raw, os.path.dirname(os.path.abspath(main)), collected)
    load.problems.extend(_found(where, ("admin",), collected))
    load.refer(collected.files)
    for sub, text in admin.check():
        load.error(where, ("admin", *sub), text)
    return admin
