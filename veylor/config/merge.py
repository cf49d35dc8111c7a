"""Merging: the components of the main file and of every drop-in gathered into one set,
by section and name (a name defined twice is an error), and the state of one load: what
it read and every problem found so far.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .files import FileRead
from .problems import Location, PathT, Problem
from .yamlfile import SourceMap

SECTIONS = ("sources", "endpoints", "routes")


@dataclass
class Defined:
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
class Load:
    """What one load has read and found so far: its problems, the files read (in order)
    and their digest, the components by section and name, the files their settings name."""

    problems: list[Problem] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)
    defined: dict[str, dict[str, Defined]] = field(default_factory=lambda: {k: {} for k in SECTIONS})
    referenced: dict[str, None] = field(default_factory=dict)  # files named by settings, in order

    def error(self, where: SourceMap, path: PathT, message: str, key: bool = False) -> None:
        loc = where.key(path) if key else where.value(path)
        self.problems.append(Problem(loc, path, message))

    def warn(self, where: SourceMap, path: PathT, message: str) -> None:
        self.problems.append(Problem(where.key(path), path, message, warning=True))

    def hash_file(self, path: str, sha: bytes) -> None:
        """Make a file read (its path and the SHA-256 of its bytes) part of the digest."""
        self.digest.update(path.encode() + b"\0" + sha)

    def refer(self, files: Iterable[tuple[str, bytes]]) -> None:
        """Record the files a component's settings name (tokens files, certificates):
        part of the digest whether they could be read or not, and watched."""
        for path, sha in files:
            self.hash_file(path, sha)
            self.referenced.setdefault(path)


def collect(
    doc_data: dict[str, Any],
    where: SourceMap,
    errors: list[Problem],
    load: Load,
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
) -> list[tuple[str, str, Defined]]:
    out = []
    for kind in SECTIONS:
        section = doc_data.get(kind)
        if not isinstance(section, dict):
            continue
        for name, raw in section.items():
            path = (kind, name)
            mine = frozenset(p.path for p in errors if p.path[:2] == path) if errors else frozenset()
            broken = not isinstance(raw, dict) or bool(mine)
            built = read.built if read is not None else None
            out.append((kind, name, Defined(raw, where, path, broken, mine, built)))
    return out
