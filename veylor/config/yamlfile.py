"""Read one YAML file into plain Python data plus a map of where every key and value stands.

PyYAML's composer gives nodes with marks; we construct the data ourselves so that
each path in the document (``("sources", "binance", "url")``) keeps its line, so
duplicate keys are errors instead of silently overwritten, and so ``${VAR}``
references are resolved from the environment with the line of the value that
used them.

Parsing uses libyaml (``CSafeLoader``) where PyYAML has it: 20 times faster than
the pure-Python parser, which matters with a thousand drop-ins.

``${VAR}`` references may stand unquoted in flow style (``{port: ${PORT}}``): before
parsing, their braces are swapped for private-use characters that YAML reads as
plain text, and swapped back in every key and value. A value that is exactly one
reference stays a string here; the loader gives it the type the schema expects
(``port: "${PORT}"`` is a number), see :func:`veylor.config.schema.coerce_variables`.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .problems import Location, PathT, Problem

_MAX_DEPTH = 64  # nesting of our own (libyaml refuses more than 1,000 levels while parsing)
MAX_VALUES = 250_000  # values in one file, aliases expanded: bounds the time and memory of a file
C_PARSER_MAX = 256 * 1024  # characters: larger files are parsed in Python while the relay runs
RESPONSIVE: contextvars.ContextVar[bool] = contextvars.ContextVar("veylor_yaml_responsive", default=False)
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_OPEN, _CLOSE = "\ue000", "\ue001"  # stand-ins for the braces of ${...} while parsing
_SHIELD = re.compile(r"(?<!\$)\$\{([^{}\[\],#\n]*)\}")  # no flow indicator inside
_ENV_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_BODY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?$", re.DOTALL)


Mark = tuple[int, int]  # (line, column), 1-based


@dataclass
class SourceMap:
    """Where each path of a loaded document stands: the key's location and the value's.

    Locations are kept as ``(line, column)`` tuples, which the garbage collector stops
    tracking, and made into :class:`Location` objects only when asked for: a reloader
    keeps the maps of a thousand drop-ins, and tens of thousands of tracked objects
    would make every full collection (which pauses the event loop) that much longer.
    """

    keys: dict[PathT, Mark] = field(default_factory=dict)
    values: dict[PathT, Mark] = field(default_factory=dict)
    file: str = ""

    def value(self, path: PathT) -> Location:
        """Location of the value at ``path``, or of its nearest located ancestor."""
        return self._nearest(self.values, path)

    def key(self, path: PathT) -> Location:
        """Location of the key naming ``path`` (falls back to the value, then ancestors)."""
        mark = self.keys.get(path)
        if mark is not None:
            return Location(self.file, *mark)
        return self._nearest(self.values, path)

    def has_key(self, path: PathT) -> bool:
        return path in self.keys

    def set_value(self, path: PathT, location: Location) -> None:
        """Record ``location`` (of this map's file) as the place of the value at ``path``."""
        self.values[path] = (location.line, location.column)

    def _nearest(self, table: dict[PathT, Mark], path: PathT) -> Location:
        for cut in range(len(path), -1, -1):
            mark = table.get(path[:cut])
            if mark is not None:
                return Location(self.file, *mark)
        return Location(self.file)

    def graft(self, other: SourceMap, src: PathT, dst: PathT) -> None:
        """Copy the locations under ``src`` of ``other`` to ``dst`` in this map."""
        n = len(src)
        for table, mine in ((other.keys, self.keys), (other.values, self.values)):
            for path, mark in table.items():
                if path[:n] == src:
                    mine[dst + path[n:]] = mark


@dataclass
class YamlDocument:
    """The data of one file, its source map, and the problems found while reading it."""

    file: str
    data: Any
    where: SourceMap
    problems: list[Problem]
    fatal: bool = False  # the text is not YAML: data is None
    # ${VAR} use: the variables each value referenced, and the values that were exactly
    # one reference (their type comes from the schema); every variable read, with its
    # value (None: unset), so a cached read can tell whether the environment changed.
    variables: dict[PathT, tuple[str, ...]] = field(default_factory=dict)
    whole: set[PathT] = field(default_factory=set)
    env_used: dict[str, str | None] = field(default_factory=dict)


def _loc(file: str, node: Node) -> Location:
    mark = node.start_mark
    return Location(file, mark.line + 1, mark.column + 1)


def _mark(node: Node) -> Mark:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, file: str, loader: Any, env: Mapping[str, str], shielded: bool) -> None:
        self.file = file
        self.loader = loader
        self.env = env
        self.shielded = shielded
        self.where = SourceMap(file=file)
        self.problems: list[Problem] = []
        self.variables: dict[PathT, tuple[str, ...]] = {}
        self.whole: set[PathT] = set()
        self.env_used: dict[str, str | None] = {}
        self.values = 0  # values built so far, aliases expanded
        # Collections built, by node: a YAML alias (*name) stands for its anchor's very
        # value, as PyYAML makes it; counted again in full (validation walks it at each
        # use), built once (an alias bomb must not cost memory before it is refused).
        self.built: dict[int, tuple[Any, int]] = {}

    def problem(self, loc: Location, path: PathT, message: str) -> None:
        self.problems.append(Problem(loc, path, message))

    def build(self, node: Node, path: PathT, depth: int = 0) -> Any:
        known = self.built.get(id(node))
        if known is not None:  # another use of an anchored collection
            shared, count = known
            self.values += count
            if self.values > MAX_VALUES:
                raise _TooManyValues(node)
            self.where.values.setdefault(path, _mark(node))
            return shared
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooManyValues(node)
        self.where.values.setdefault(path, _mark(node))
        if depth > _MAX_DEPTH:
            self.problem(_loc(self.file, node), path, "nesting is too deep (a recursive YAML alias?)")
            return None
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        before = self.values - 1
        if isinstance(node, SequenceNode):
            value: Any = [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        elif isinstance(node, MappingNode):
            value = self.mapping(node, path, depth)
        else:  # pragma: no cover
            raise TypeError(f"unexpected YAML node {node!r}")
        self.built[id(node)] = (value, self.values - before)
        return value

    def mapping(self, node: MappingNode, path: PathT, depth: int) -> dict[str, Any]:
        own = {id(k) for k, _ in node.value}
        try:
            self.loader.flatten_mapping(node)  # resolves "<<: *anchor" merge keys
        except yaml.MarkedYAMLError as exc:
            self.problem(_loc(self.file, node), path, f"invalid merge key: {exc.problem}")
            return {}
        out: dict[str, Any] = {}
        from_merge: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(_loc(self.file, key_node), path, "a mapping key must be a plain string")
                continue
            # The raw text, not the YAML 1.1 type: `on:` or `yes:` stay strings.
            key = self.unshield(str(key_node.value))
            child = (*path, key)
            if id(key_node) not in own:
                from_merge.add(key)  # merged keys come first; later ones and own keys override
            elif key in from_merge:
                from_merge.discard(key)
            elif key in out:
                first = self.where.key(child)
                self.problem(
                    _loc(self.file, key_node),
                    child,
                    f"duplicate key '{key}' (first defined at line {first.line}); remove one of them",
                )
                continue
            self.where.keys[child] = _mark(key_node)
            out[key] = self.build(value_node, child, depth + 1)
        return out

    def unshield(self, text: str) -> str:
        if self.shielded and _OPEN in text:
            return text.replace(_OPEN, "{").replace(_CLOSE, "}")
        return text

    def scalar(self, node: ScalarNode, path: PathT) -> Any:
        if self.shielded and _OPEN in node.value:
            return self.with_variables(self.unshield(node.value), node, path)
        if node.tag == _STR:  # most values: no constructor needed
            value = node.value
            return value if "$" not in value else self.with_variables(value, node, path)
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.problem(_loc(self.file, node), path, f"cannot read this value: {exc.problem}")
            return None
        except Exception:  # (PyYAML's constructors raise what they raise)
            # A tag or a form the constructor refuses (!!int on letters, a date with no such
            # day, !!timestamp on anything, !!bool maybe): said without the value, which may
            # be a secret.
            self.problem(
                _loc(self.file, node),
                path,
                f"cannot read this value as {node.tag.rsplit(':', 1)[-1]} (not shown: it may be a secret)",
            )
            return None
        if not isinstance(value, str) or "$" not in value:
            return value
        return self.with_variables(value, node, path)

    def with_variables(self, value: str, node: ScalarNode, path: PathT) -> str:
        """``value`` with its ``${VAR}`` references replaced (``""`` if one failed: reported)."""
        if "$" not in value:
            return value
        if _ENV_REF.fullmatch(value) is not None and not value.startswith("$${"):
            self.whole.add(path)
        text = self.interpolate(value, node, path)
        return "" if text is None else text

    def interpolate(self, value: str, node: ScalarNode, path: PathT) -> str | None:
        failed = False

        def replace(match: re.Match[str]) -> str:
            nonlocal failed
            if match.group(0) == "$${":
                return "${"
            body = _ENV_BODY.match(match.group(1))
            if body is None:
                failed = True
                self.problem(
                    _loc(self.file, node),
                    path,
                    f"'{match.group(0)}' is not a variable reference: write ${{NAME}} or "
                    f"${{NAME:-default}} (and $${{ for a literal ${{)",
                )
                return ""
            name, op, default = body.groups()
            current = self.env.get(name)
            self.env_used[name] = current
            self.variables[path] = (*self.variables.get(path, ()), name)
            if current is not None and (op != ":-" or current != ""):
                return current
            if op is not None:
                return default
            failed = True
            self.problem(
                _loc(self.file, node),
                path,
                f"environment variable {name} is not set: export it, or give a default "
                f"with ${{{name}:-value}}",
            )
            return ""

        text = _ENV_REF.sub(replace, value)
        return None if failed else text


def read_yaml(file: str, text: str, env: Mapping[str, str]) -> YamlDocument:
    """Parse ``text`` (the contents of ``file``) into data, locations and problems."""
    shielded = "${" in text and _OPEN not in text and _CLOSE not in text
    parsed = _SHIELD.sub(lambda m: f"${_OPEN}{m.group(1)}{_CLOSE}", text) if shielded else text
    # libyaml parses in C without letting other threads run: beside a live relay, a large
    # file is parsed by the Python parser instead, which lets the event loop in every ms.
    c_parser = not RESPONSIVE.get() or len(text) <= C_PARSER_MAX
    separators = text.count("\n") + text.count(",")
    try:
        # (the Python parser's reader checks every character when it is made)
        loader = (Loader if c_parser else yaml.SafeLoader)(parsed)
    except yaml.YAMLError as exc:
        builder = _Builder(file, None, env, shielded)
        builder.problem(*_reader_problem(file, text, exc))
        return _document(builder, None, fatal=True)
    builder = _Builder(file, loader, env, shielded)
    if separators > 2 * MAX_VALUES:  # every value but the first of a collection needs one
        loader.dispose()
        builder.problem(
            Location(file),
            (),
            f"has more than {2 * MAX_VALUES:,} lines and commas: refused unread (at most "
            f"{MAX_VALUES:,} values per file); split it into drop-ins",
        )
        return _document(builder, None, fatal=True)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
            what = builder.unshield(exc.problem or exc.context or "invalid YAML")
            ctx = f" ({builder.unshield(exc.context)})" if exc.context and exc.problem else ""
            col = f", column {loc.column}" if loc.column else ""
            builder.problem(loc, (), f"YAML syntax error{col}: {what}{ctx}{_hint(text, mark)}")
            return _document(builder, None, fatal=True)
        except yaml.YAMLError as exc:
            builder.problem(*_reader_problem(file, text, exc))
            return _document(builder, None, fatal=True)
        except RecursionError:
            builder.problem(_deepest(file, text), (), _TOO_DEEP)
            return _document(builder, None, fatal=True)
        try:
            data = None if node is None else builder.build(node, ())
        except _TooManyValues as exc:
            builder.problem(
                _loc(file, exc.node),
                (),
                f"holds more than {MAX_VALUES:,} values (each use of an alias *name counting "
                "all it stands for): refused; split it into drop-ins (or use fewer aliases)",
            )
            return _document(builder, None, fatal=True)
    finally:
        loader.dispose()
    return _document(builder, data)


_TOO_DEEP = (
    "is nested too deeply to be read (a file over 256 KiB is read by the Python parser "
    "while Veylor runs, which allows a few hundred levels): flatten it or split it into drop-ins"
)


def _deepest(file: str, text: str) -> Location:
    """Where a file too deeply nested gets deep: where its brackets pass 100 levels, else
    its most indented line (roughly: quoted brackets count too)."""
    depth = 0
    for i, c in enumerate(text):
        if c in "[{":
            depth += 1
            if depth > 100:
                line = text.count("\n", 0, i) + 1
                return Location(file, line, i - (text.rfind("\n", 0, i) + 1) + 1)
        elif c in "]}":
            depth -= 1
    lines = text.splitlines() or [""]
    deepest = max(range(len(lines)), key=lambda n: len(lines[n]) - len(lines[n].lstrip(" ")))
    return Location(file, deepest + 1, 1)


def _reader_problem(file: str, text: str, exc: yaml.YAMLError) -> tuple[Location, PathT, str]:
    """A YAML error that is not a syntax error (a character YAML does not allow), at its
    line and column, in one line."""
    position = getattr(exc, "position", None)
    character = getattr(exc, "character", None)
    if isinstance(character, int | str) and character != "":
        # Where the character is in the text as read (the parser's position may count
        # from after a byte-order mark, or in another unit).
        found = text.find(chr(character) if isinstance(character, int) else character[0])
        position = found if found >= 0 else position
    if isinstance(position, int) and 0 <= position <= len(text):
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        loc = Location(file, line, column)
    else:
        loc = Location(file)
    if isinstance(character, int | str) and character != "":
        code = character if isinstance(character, int) else ord(character[0])
        return (
            loc,
            (),
            f"character U+{code:04X} (column {loc.column}) is not allowed in YAML: remove it "
            f'(to send it, write it escaped in a double-quoted string, "\\x{code:02x}")'
            if code < 0x100
            else f"character U+{code:04X} (column {loc.column}) is not allowed in YAML: remove it",
        )
    return loc, (), "YAML error: " + " ".join(str(exc).split())


class _TooManyValues(Exception):
    def __init__(self, node: Node) -> None:
        self.node = node


def _document(builder: _Builder, data: Any, fatal: bool = False) -> YamlDocument:
    return YamlDocument(
        builder.file,
        data,
        builder.where,
        builder.problems,
        fatal,
        builder.variables,
        builder.whole,
        builder.env_used,
    )


def _hint(text: str, mark: Any) -> str:
    """A likely fix for a syntax error, read from the lines around it."""
    if mark is None:
        return ""
    lines = text.splitlines()
    near = lines[max(0, mark.line - 1) : mark.line + 1]
    if any(line[: len(line) - len(line.lstrip(" \t"))].count("\t") for line in near):
        return "; indent with spaces: YAML does not allow tabs for indentation"
    if any("${" in line for line in near):
        return (
            '; a ${VAR} reference whose default holds "," "[" "]" "{" or "}" must be quoted '
            'in flow style: write port: "${PORT}"'
        )
    return ""
