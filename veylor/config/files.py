"""Reading configuration files: one file read, parsed and validated (and cached while
it is unchanged), and the drop-in files the main file's include patterns match.

Pure apart from reading files. A file that cannot be read, or that matches a pattern
but cannot be reached, is a problem, never a silent gap in the configuration.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .legacy import legacy_shape
from .model import Shape
from .problems import Location, PathT, Problem
from .schema import coerce_variables, validate
from .yamlfile import SourceMap, read_yaml

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
    components: list[tuple[str, str, Any]] | None = None  # (kind, name, merge.Defined), once collected
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


def _read_blob(label: str, problems: list[Problem]) -> tuple[bytes, Signature] | None:
    try:
        # Non-blocking, and only regular files: a FIFO or a device put in place of a
        # configuration file must not hang the reload (or read forever).
        fd = os.open(label, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                problems.append(Problem(Location(label), (), _not_a_file(st)))
                return None
            signature = _signature(st)  # before reading: a later write shows
            blob = fh.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        problems.append(Problem(Location(label), (), "file not found"))
        return None
    except PermissionError:
        problems.append(Problem(Location(label), (), _permission_text("cannot read this file")))
        return None
    except OSError as exc:
        problems.append(Problem(Location(label), (), f"cannot read: {exc.strerror or exc}"))
        return None
    if len(blob) > MAX_FILE_SIZE:
        problems.append(
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


def include_files(
    main: str, patterns: list[str], where: SourceMap, problems: list[Problem]
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

    def error(path: PathT, message: str) -> None:
        problems.append(Problem(where.value(path), path, message))

    for i, pattern in enumerate(patterns):
        full = os.path.join(base, os.path.expanduser(pattern))

        def denied(what: str, i: int = i, pattern: str = pattern) -> None:
            if where.has_key(("include",)):
                error(("include", i), _permission_text(f"{what} (include pattern {pattern!r})"))
            else:  # the default pattern: there is no line to point at
                text = _permission_text(f"{what} (default include pattern {pattern!r})")
                problems.append(Problem(Location(main), (), text))

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
            error(("include", i), f"included file {full} does not exist")
            matches = []
        for path in matches:
            try:
                st = os.stat(path)
            except PermissionError:
                denied(f"cannot reach {path}")
                continue
            except OSError:
                if os.path.islink(path):  # a drop-in whose target is gone: its routes would vanish
                    problems.append(
                        Problem(Location(path), (), "is a symbolic link to nothing: fix or remove it")
                    )
                continue  # removed since it was listed
            if not stat.S_ISREG(st.st_mode):
                if path is full and stat.S_ISDIR(st.st_mode):
                    error(
                        ("include", i),
                        f"included path {full} is a directory (use a pattern such as dir/*.yaml)",
                    )
                elif not stat.S_ISDIR(st.st_mode):
                    # A FIFO, a device, a socket: never read, never skipped in silence.
                    problems.append(Problem(Location(path), (), _not_a_file(st)))
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


def read_document(
    label: str,
    def_name: str | None,
    env: Mapping[str, str],
    problems: list[Problem],
    cache: FileCache | None,
    st: os.stat_result | None = None,
    changed: frozenset[str] | None = None,
) -> FileRead | None:
    """Read and validate one file (or take its read from ``cache``).

    None when it cannot be read at all (why is added to ``problems``). Otherwise its
    problems are added to ``problems``; its data is None when it is not YAML or not a mapping, and is still returned when it has
    schema errors, so that the rest of the file is checked too.

    With ``changed`` (the absolute paths a file watcher saw change) and ``st`` (the
    file's stat), a file not among them whose stat is as when it was cached is not read.
    """
    read = None
    if cache is not None and changed is not None and st is not None and os.path.abspath(label) not in changed:
        read = cache.unchanged(label, def_name, _signature(st), env)
    if read is None:
        got = _read_blob(label, problems)
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
    problems.extend(read.problems)
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
