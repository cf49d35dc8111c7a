"""Route filters: declarative specs (validated by the schema) compiled once into predicates.

A predicate takes a :class:`veylor.message.Message` and returns a bool. It never
raises on message content: a message that is not JSON does not match a ``json``
filter, a binary message does not match a ``text`` filter. JSON and text are
decoded lazily by the message itself, so all the routes of a source share one
decode per message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re2

from .message import NOT_JSON, Message

Predicate = Callable[[Message], bool]
JsonPath = tuple[str | int, ...]

_MISSING: Any = object()
_PATH_PART = re.compile(r"([^.\[\]]+)((?:\[[0-9]+\])*)")


class FilterError(ValueError):
    """A filter spec that cannot be compiled; ``path`` is the key path inside the filter."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """A compiled filter: call it with a message."""

    spec: Mapping[str, Any]
    match: Predicate
    needs_json: bool

    def __call__(self, message: Message) -> bool:
        return self.match(message)

    def __str__(self) -> str:
        return describe(self.spec)


def parse_json_path(path: str) -> JsonPath:
    """``data.bids[0].price`` -> ``("data", "bids", 0, "price")``."""
    parts: list[str | int] = []
    for segment in path.split("."):
        m = _PATH_PART.fullmatch(segment)
        if m is None:
            raise ValueError(f"{path!r} is not a JSON path")
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[([0-9]+)\]", m.group(2)))
    return tuple(parts)


def lookup(document: Any, path: JsonPath) -> Any:
    """The value at ``path`` in a JSON document, or ``_MISSING``."""
    value = document
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                return _MISSING
        elif not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0`` but ``true != 1`` (Python would say it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # errors become problems with file and line, not stderr noise
    options.never_capture = True  # filters only ask whether a value matches
    return options


_RE2 = _re2_options()
_UNSUPPORTED = ("invalid escape sequence: \\", "invalid perl operator: (?=", "invalid perl operator: (?!")


def _regex(pattern: Any, path: tuple[str | int, ...]) -> Any:
    """A compiled regular expression on RE2: matching takes time linear in the value's
    length whatever the pattern (a backtracking engine took 3 s on a 26-character value
    with ``(a+)+$``, with every client waiting)."""
    try:
        return re2.compile(pattern, _RE2)
    except re2.error as exc:
        why = (
            exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        )
        hint = ""
        if why.startswith(_UNSUPPORTED) or "(?<" in why:
            hint = (
                ": backreferences and lookaround are not supported (Veylor matches with RE2, "
                "in time linear in the value, so that no message can stall the relay); rewrite the pattern"
            )
        raise FilterError(path, f"{pattern!r} is not a valid regular expression: {why}{hint}") from None


def _compile_json(spec: Mapping[str, Any], at: tuple[str | int, ...]) -> Predicate:
    try:
        path = parse_json_path(spec["path"])
    except ValueError as exc:
        raise FilterError((*at, "path"), str(exc)) from None

    def value_of(m: Message) -> Any:
        doc = m.json
        return _MISSING if doc is NOT_JSON else lookup(doc, path)

    if "exists" in spec:
        want = bool(spec["exists"])

        def exists(m: Message) -> bool:
            doc = m.json
            if doc is NOT_JSON:
                return False
            return (lookup(doc, path) is not _MISSING) is want

        return exists
    if "equals" in spec:
        target = spec["equals"]
        return lambda m: (v := value_of(m)) is not _MISSING and json_equal(v, target)
    if "in" in spec:
        options = list(spec["in"])
        if all(isinstance(o, str) for o in options):
            strings = frozenset(options)
            return lambda m: isinstance(v := value_of(m), str) and v in strings
        member = _membership(options)
        return lambda m: (v := value_of(m)) is not _MISSING and member(v)
    if "prefix" in spec:
        prefix = spec["prefix"]
        return lambda m: isinstance(v := value_of(m), str) and v.startswith(prefix)
    if "regex" in spec:
        rx = _regex(spec["regex"], (*at, "regex"))
        return lambda m: isinstance(v := value_of(m), str) and rx.search(v) is not None
    raise FilterError(at, "needs one of: equals, in, prefix, regex, exists")


def _membership(options: list[Any]) -> Callable[[Any], bool]:
    """``v in options`` with JSON equality, in constant time for scalars (a list of
    200,000 mixed values must not cost 200,000 comparisons per message): booleans,
    numbers, strings and null apart (Python's ``1 == True`` and ``hash(1) == hash(True)``
    are not JSON's), lists and mappings compared one by one."""
    bools = frozenset(o for o in options if isinstance(o, bool))
    numbers = frozenset(o for o in options if isinstance(o, int | float) and not isinstance(o, bool))
    strings = frozenset(o for o in options if isinstance(o, str))
    null = any(o is None for o in options)
    others = [o for o in options if isinstance(o, list | dict)]

    def member(v: Any) -> bool:
        if isinstance(v, bool):
            return v in bools
        if isinstance(v, int | float):
            return v in numbers
        if isinstance(v, str):
            return v in strings
        if v is None:
            return null
        return any(json_equal(v, o) for o in others)

    return member


def _compile_text(spec: Mapping[str, Any], at: tuple[str | int, ...]) -> Predicate:
    if "contains" in spec:
        # A UTF-8 substring of valid UTF-8 is a substring of the text: search the bytes, no decode.
        needle = str(spec["contains"]).encode()
        return lambda m: m.is_text and needle in m.data
    if "regex" in spec:
        rx = _regex(spec["regex"], (*at, "regex"))
        return lambda m: (t := m.text) is not None and rx.search(t) is not None
    raise FilterError(at, "needs one of: contains, regex")


def _compile(spec: Mapping[str, Any], at: tuple[str | int, ...]) -> tuple[Predicate, bool]:
    if not isinstance(spec, Mapping) or not spec:
        raise FilterError(at, "a filter is a mapping with at least one operator")
    parts: list[Predicate] = []
    needs_json = False
    for op, arg in spec.items():
        here = (*at, op)
        if op == "json":
            parts.append(_compile_json(arg, here))
            needs_json = True
        elif op == "text":
            parts.append(_compile_text(arg, here))
        elif op == "type":
            want_text = arg == "text"
            parts.append(_is_type(want_text))
        elif op in ("all", "any"):
            subs = [_compile(s, (*here, i)) for i, s in enumerate(arg)]
            preds = [p for p, _ in subs]
            needs_json |= any(j for _, j in subs)
            parts.append(_all(tuple(preds)) if op == "all" else _any(tuple(preds)))
        elif op == "not":
            inner, j = _compile(arg, here)
            needs_json |= j
            parts.append(_not(inner))
        else:
            raise FilterError(here, f"unknown filter operator '{op}'")
    if len(parts) == 1:
        return parts[0], needs_json
    return _all(tuple(parts)), needs_json


# Predicates made of predicates. (What each needs is a default argument, not a closure
# cell: a local read, on the path of every message that meets a filter.)


def _is_type(want_text: bool) -> Predicate:
    def match(m: Message, w: bool = want_text) -> bool:
        return m.is_text is w

    return match


def _all(ps: tuple[Predicate, ...]) -> Predicate:
    def match(m: Message, ps: tuple[Predicate, ...] = ps) -> bool:
        return all(p(m) for p in ps)

    return match


def _any(ps: tuple[Predicate, ...]) -> Predicate:
    def match(m: Message, ps: tuple[Predicate, ...] = ps) -> bool:
        return any(p(m) for p in ps)

    return match


def _not(inner: Predicate) -> Predicate:
    def match(m: Message, p: Predicate = inner) -> bool:
        return not p(m)

    return match


def compile_filter(spec: Mapping[str, Any]) -> CompiledFilter:
    """Compile a filter spec once; raises :class:`FilterError` for an invalid one."""
    match, needs_json = _compile(spec, ())
    return CompiledFilter(spec=spec, match=match, needs_json=needs_json)


def _literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=dict)


def describe(spec: Mapping[str, Any] | None) -> str:
    """A one-line human rendering: ``json s in ["BTCUSDT"] and type text``."""
    if spec is None:
        return "everything"
    parts = []
    for op, arg in spec.items():
        if op == "json":
            path = arg["path"]
            if "exists" in arg:
                parts.append(f"json {path} {'exists' if arg['exists'] else 'is absent'}")
            else:
                (kind,) = (k for k in arg if k != "path")
                parts.append(f"json {path} {kind} {_literal(arg[kind])}")
        elif op == "text":
            ((kind, val),) = arg.items()
            parts.append(f"text {kind} {_literal(val)}")
        elif op == "type":
            parts.append(f"type {arg}")
        elif op in ("all", "any"):
            joiner = " and " if op == "all" else " or "
            subs: Sequence[Mapping[str, Any]] = arg
            parts.append("(" + joiner.join(describe(s) for s in subs) + ")")
        elif op == "not":
            parts.append(f"not ({describe(arg)})")
    return " and ".join(parts)
