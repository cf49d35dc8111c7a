"""Read one YAML file into plain Python data plus a map of where every key and value stands.

PyYAML's composer gives nodes with marks; we construct the data ourselves so that
each path in the document (``("sources", "binance", "url")``) keeps its line, so
duplicate keys are errors instead of silently overwritten, and so ``${VAR}``
references are resolved from the environment with the line of the value that
used them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .problems import Location, PathT, Problem

_MAX_DEPTH = 64
_ENV_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_BODY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?$", re.DOTALL)


@dataclass
class SourceMap:
    """Where each path of a loaded document stands: the key's location and the value's."""

    keys: dict[PathT, Location] = field(default_factory=dict)
    values: dict[PathT, Location] = field(default_factory=dict)
    file: str = ""

    def value(self, path: PathT) -> Location:
        """Location of the value at ``path``, or of its nearest located ancestor."""
        return self._nearest(self.values, path)

    def key(self, path: PathT) -> Location:
        """Location of the key naming ``path`` (falls back to the value, then ancestors)."""
        if path in self.keys:
            return self.keys[path]
        return self._nearest(self.values, path)

    def _nearest(self, table: dict[PathT, Location], path: PathT) -> Location:
        for cut in range(len(path), -1, -1):
            loc = table.get(path[:cut])
            if loc is not None:
                return loc
        return Location(self.file)

    def graft(self, other: SourceMap, src: PathT, dst: PathT) -> None:
        """Copy the locations under ``src`` of ``other`` to ``dst`` in this map."""
        n = len(src)
        for table, mine in ((other.keys, self.keys), (other.values, self.values)):
            for path, loc in table.items():
                if path[:n] == src:
                    mine[dst + path[n:]] = loc


@dataclass
class YamlDocument:
    """The data of one file, its source map, and the problems found while reading it."""

    file: str
    data: Any
    where: SourceMap
    problems: list[Problem]
    fatal: bool = False  # the text is not YAML: data is None


def _loc(file: str, node: Node) -> Location:
    mark = node.start_mark
    return Location(file, mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader, env: Mapping[str, str]) -> None:
        self.file = file
        self.loader = loader
        self.env = env
        self.where = SourceMap(file=file)
        self.problems: list[Problem] = []

    def problem(self, loc: Location, path: PathT, message: str) -> None:
        self.problems.append(Problem(loc, path, message))

    def build(self, node: Node, path: PathT, depth: int = 0) -> Any:
        self.where.values.setdefault(path, _loc(self.file, node))
        if depth > _MAX_DEPTH:
            self.problem(_loc(self.file, node), path, "nesting is too deep (a recursive YAML alias?)")
            return None
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            return self.mapping(node, path, depth)
        raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover

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
            key = str(key_node.value)
            child = (*path, key)
            if id(key_node) not in own:
                from_merge.add(key)  # merged keys come first; later ones and own keys override
            elif key in from_merge:
                from_merge.discard(key)
            elif key in out:
                first = self.where.keys[child]
                self.problem(
                    _loc(self.file, key_node),
                    child,
                    f"duplicate key '{key}' (first defined at line {first.line}); remove one of them",
                )
                continue
            self.where.keys[child] = _loc(self.file, key_node)
            out[key] = self.build(value_node, child, depth + 1)
        return out

    def scalar(self, node: ScalarNode, path: PathT) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.problem(_loc(self.file, node), path, f"cannot read this value: {exc.problem}")
            return None
        if not isinstance(value, str) or "$" not in value:
            return value
        whole = _ENV_REF.fullmatch(value) is not None and not value.startswith("$${")
        text = self.interpolate(value, node, path)
        if text is None:
            return ""  # reported; the rest of the file is still checked
        if whole and node.style is None and text:
            # `port: ${PORT}` (unquoted, the whole value) takes the type the text has: 8765 is an int.
            tag = self.loader.resolve(ScalarNode, text, (True, False))
            typed = self.loader.construct_object(ScalarNode(tag, text), deep=True)
            if isinstance(typed, str | int | float | bool) or typed is None:
                return typed
        return text

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
    loader = yaml.SafeLoader(text)
    builder = _Builder(file, loader, env)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file)
            what = exc.problem or exc.context or "invalid YAML"
            ctx = f" ({exc.context})" if exc.context and exc.problem else ""
            col = f", column {loc.column}" if loc.column else ""
            builder.problem(loc, (), f"YAML syntax error{col}: {what}{ctx}")
            return YamlDocument(file, None, builder.where, builder.problems, fatal=True)
        except yaml.YAMLError as exc:
            builder.problem(Location(file), (), f"YAML error: {exc}")
            return YamlDocument(file, None, builder.where, builder.problems, fatal=True)
        data = None if node is None else builder.build(node, ())
    finally:
        loader.dispose()
    return YamlDocument(file, data, builder.where, builder.problems)
