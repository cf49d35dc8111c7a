"""The JSON Schema: where it lives, validation with messages a person can act on, defaults.

The schema file is the single home of every default value; :func:`with_defaults`
reads them from it.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .common import redact_url
from .problems import PathT, Problem, did_you_mean
from .yamlfile import SourceMap

SCHEMA_NAME = "veylor.schema.json"

# Keys that mean something in another shape: a hint beats a bare "unknown key".
_SHAPE_HINTS = {
    "rebroadcast": "'rebroadcast' belongs to Veylor 1.0 files, whose 'sources' is a list",
    "performance": "'performance' belongs to Veylor 1.x files, whose 'sources' is a list",
    "include": "'include' is only read from the main file",
    "limits": "'limits' is only read from the main file",
    "admin": "'admin' is only read from the main file",
    "websocket_port": "'websocket_port' belongs to Veylor 1.1 files; in v1 define an endpoint "
    "with websocket: {port: ...} and a route to it",
    "unix_socket_path": "'unix_socket_path' belongs to Veylor 1.1 files; in v1 define an endpoint "
    "with unix: {path: ...} and a route to it",
}

_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "empty",
}


def schema_path() -> Path:
    """Path of the schema file: inside the installed package, else in the source checkout."""
    packaged = resources.files("veylor").joinpath("schema", SCHEMA_NAME)
    if packaged.is_file():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2] / "schema" / SCHEMA_NAME
    if checkout.is_file():
        return checkout
    raise FileNotFoundError(f"{SCHEMA_NAME} is missing from the veylor package (reinstall veylor)")


@functools.cache
def schema() -> dict[str, Any]:
    """The parsed schema (loaded once)."""
    loaded: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))
    return loaded


def definition(name: str) -> dict[str, Any]:
    """One of the schema's ``$defs``."""
    found: dict[str, Any] = schema()["$defs"][name]
    return found


def _inline(node: Any, defs: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """``node`` with each ``{"$ref": "#/$defs/x"}`` replaced by a copy of ``x``, except
    where ``x`` refers to itself (filters nest): the validator then follows far fewer
    references, which halves the time it takes (a thousand drop-ins are validated on
    every cold start)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if len(node) == 1 and isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.rsplit("/", 1)[1]
            if name not in stack:
                return _inline(defs[name], defs, (*stack, name))
        return {k: _inline(v, defs, stack) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs, stack) for v in node]
    return node


@functools.cache
def _validator(def_name: str | None) -> Draft202012Validator:
    root = schema()
    defs = root["$defs"]
    if def_name is None:
        body = {k: v for k, v in root.items() if k != "$defs"}
        return Draft202012Validator({**_inline(body, defs), "$defs": defs})
    sub = _inline(defs[def_name], defs, (def_name,))
    return Draft202012Validator({"$schema": root["$schema"], **sub, "$defs": defs})


_SCALAR_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _typed(text: str, allowed: list[str]) -> Any:
    """``text`` read as a YAML scalar, if that gives one of the ``allowed`` JSON types."""
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return _NOT_TYPED
    for name in allowed:
        types = _SCALAR_TYPES.get(name, ())
        if isinstance(value, types) and not (name != "boolean" and isinstance(value, bool)):
            return value
    return _NOT_TYPED


_NOT_TYPED = object()


def coerce_variables(data: Any, whole: set[PathT], def_name: str | None = None) -> None:
    """Give each value that was exactly one ``${VAR}`` reference (a string) the type the
    schema expects there (``port: "${PORT}"`` -> 8765), in place. A value that does not
    read as that type stays a string, and validation reports it."""
    if not whole or not isinstance(data, dict) or is_valid(data, def_name):
        return
    for error in _validator(def_name).iter_errors(data):
        _coerce_at(error, data, whole)


def _coerce_at(error: ValidationError, data: Any, whole: set[PathT]) -> None:
    for sub in error.context or ():  # oneOf / anyOf branches
        _coerce_at(sub, data, whole)
    path = tuple(error.absolute_path)
    if error.validator != "type" or path not in whole or not isinstance(error.instance, str) or not path:
        return
    allowed = error.validator_value
    value = _typed(error.instance, [allowed] if isinstance(allowed, str) else list(allowed))
    if value is _NOT_TYPED:
        return
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if parent[path[-1]] is error.instance:
        parent[path[-1]] = value


def _resolve(prop: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return definition(ref.rsplit("/", 1)[1])
    return prop


def with_defaults(sub_schema: dict[str, Any], value: Any) -> Any:
    """Return ``value`` with the schema's defaults filled in, recursively, for mappings."""
    plan = _defaults_plan(id(sub_schema), sub_schema)
    if plan is None or not isinstance(value, dict):
        return value
    out = dict(value)
    for key, default, mutable, sub in plan:
        if key not in out:
            if default is _NO_DEFAULT:
                continue
            out[key] = copy.deepcopy(default) if mutable else default
        if sub is not None:
            out[key] = with_defaults(sub, out[key])
    return out


_NO_DEFAULT = object()
_PLANS: dict[int, Any] = {}


def _defaults_plan(key: int, sub_schema: dict[str, Any]) -> Any:
    """``[(key, default, mutable, sub-schema with properties or None)]`` of a schema
    node, computed once (the schema never changes): ``with_defaults`` runs for every
    component of every load."""
    try:
        return _PLANS[key]
    except KeyError:
        pass
    resolved = _resolve(sub_schema)
    plan = None
    if "properties" in resolved:
        plan = []
        for name, prop in resolved["properties"].items():
            default = prop.get("default", _NO_DEFAULT)
            nested = prop if "properties" in _resolve(prop) else None
            plan.append((name, default, isinstance(default, dict | list), nested))
    _PLANS[key] = plan
    return plan


def default_of(def_name: str, key: str) -> Any:
    """The default of property ``key`` of ``$defs[def_name]`` (for reports and legacy mapping)."""
    return copy.deepcopy(definition(def_name)["properties"][key]["default"])


FAST_VALIDATION_FILES = 64  # a load of this many files or more validates the fast way
_fast = False


def use_fast_validation() -> None:
    """Validate with ``jsonschema-rs`` from now on (see :func:`is_valid`). The loader
    turns it on for configurations of many files only: the library costs about 4 MiB of
    memory once imported, which a small configuration does not need to pay."""
    global _fast
    _fast = True


@functools.cache
def _fast_validator(def_name: str | None) -> Any:
    """A compiled validator from ``jsonschema-rs`` (Rust; about 75 times faster than
    ``jsonschema`` on our drop-ins), or None where it is not installed."""
    try:
        import jsonschema_rs
    except ImportError:  # pragma: no cover - an optional speed-up
        return None
    root = schema()
    if def_name is None:
        return jsonschema_rs.validator_for(root)
    return jsonschema_rs.validator_for(
        {"$schema": root["$schema"], "$defs": root["$defs"], "$ref": f"#/$defs/{def_name}"}
    )


def is_valid(data: Any, def_name: str | None = None) -> bool:
    """Whether ``data`` is valid, the fast way where possible (a thousand drop-ins are
    validated on every cold start: 4 ms instead of 300). The messages for invalid data
    always come from ``jsonschema`` (:func:`validate`), which has the final word."""
    fast = _fast_validator(def_name) if _fast else None
    if fast is not None:
        try:
            return bool(fast.is_valid(data))
        except (ValueError, TypeError):  # a value JSON cannot hold (a YAML date, say)
            pass
    return bool(_validator(def_name).is_valid(data))


def validate(data: Any, where: SourceMap, def_name: str | None = None) -> list[Problem]:
    """Validate ``data`` against the schema (or one of its ``$defs``); every error, located."""
    if is_valid(data, def_name):
        return []
    problems: list[Problem] = []
    for error in _validator(def_name).iter_errors(data):
        problems.extend(_humanize(error, where))
    return problems


def _typed_branches(branches: Any) -> bool:
    return isinstance(branches, list) and all(isinstance(b, dict) and "type" in b for b in branches)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name != "boolean":
        return False
    return isinstance(value, _JSON_TYPES.get(name, ()))


def _type_word(value: Any, hide: bool = False) -> str:
    if isinstance(value, _Hidden):
        return f"{value.kind} (not shown: it may be a secret)"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string" if hide else f"the string {value!r}"
    if isinstance(value, int | float):
        return "a number" if hide else f"the number {value!r}"
    return type(value).__name__


_SECRET_KEYS = ("headers", "on_connect", "auth")  # auth: tokens, and where they are


def _shown(value: Any, path: PathT) -> Any:
    """What of ``value`` a problem may show: a URL with its credentials masked, nothing
    of a header value or an ``on_connect`` message (they are secrets; a problem is printed
    by ``veylor check`` and logged before any secret is known)."""
    if isinstance(value, dict | list):
        return value  # messages about containers name their type and keys, not values
    if any(part in _SECRET_KEYS for part in path if isinstance(part, str)):
        return _Hidden(value)
    if path and path[-1] == "url" and isinstance(value, str):
        return redact_url(value)
    return value


class _Hidden:
    """A secret value in a problem: its type, never its text."""

    def __init__(self, value: Any) -> None:
        self.kind = _type_word(value, hide=True)

    def __repr__(self) -> str:
        return f"<{self.kind.removeprefix('a ').removeprefix('an ')}, not shown>"


def _humanize(error: ValidationError, where: SourceMap) -> Iterator[Problem]:
    path: PathT = tuple(error.absolute_path)
    kind = error.validator
    sch = error.schema if isinstance(error.schema, dict) else {}
    value = _shown(error.instance, path)

    def at(p: PathT, message: str, key: bool = False, code: str = "") -> Problem:
        return Problem(where.key(p) if key else where.value(p), p, message, code=code)

    if "propertyNames" in error.absolute_schema_path:
        name = str(value)
        msg = sch.get("x-message", "is not a valid name")
        yield at((*path, name), f"{name!r} {msg}", key=True)
        return
    if kind == "additionalProperties" and isinstance(value, dict):
        known = set(sch.get("properties", {}))
        for extra in sorted(set(value) - known, key=lambda k: where.key((*path, k)).line):
            hint = _SHAPE_HINTS.get(extra) if extra not in known else None
            if hint and not did_you_mean(extra, known):
                text = f"unknown key '{extra}': {hint}"
            else:
                text = f"unknown key '{extra}'{did_you_mean(extra, known)}"
                if not did_you_mean(extra, known) and known:
                    text += f" (expected one of: {', '.join(sorted(known))})"
            yield at((*path, extra), text, key=True, code="unknown-key")
        return
    if kind == "required":
        missing = error.validator_value
        absent = [k for k in missing if not isinstance(value, dict) or k not in value]
        for key in absent:
            yield at(path, f"missing required key '{key}'", key=True)
        return
    if kind == "oneOf" and all(isinstance(s, dict) and set(s) == {"required"} for s in error.validator_value):
        options = [s["required"][0] for s in error.validator_value]
        present = [o for o in options if isinstance(value, dict) and o in value]
        listed = ", ".join(options)
        if not present:
            yield at(path, f"needs exactly one of: {listed}")
        else:
            both = " and ".join(f"'{p}'" for p in present)
            yield at(path, f"has {both}: keep exactly one of {listed}")
        return
    if kind == "oneOf" and _typed_branches(error.validator_value):
        # Branches told apart by type (upstream: true | {allow, rate, ...}): the branch of
        # the value's type says what is wrong; no branch of its type: the types expected.
        branches = error.validator_value
        for i, branch in enumerate(branches):
            types = branch["type"] if isinstance(branch["type"], list) else [branch["type"]]
            if any(_is_type(error.instance, t) for t in types):
                for sub in error.context or ():
                    if sub.relative_schema_path and sub.relative_schema_path[0] == i:
                        yield from _humanize(sub, where)
                return
        words: list[str] = []
        for branch in branches:
            types = branch["type"] if isinstance(branch["type"], list) else [branch["type"]]
            words += [str(_TYPE_WORDS.get(t, t)) for t in types]
        yield at(path, f"expected {' or '.join(dict.fromkeys(words))}, got {_type_word(value)}")
        return
    if kind == "type":
        allowed = error.validator_value
        allowed = [allowed] if isinstance(allowed, str) else list(allowed)
        want = " or ".join(_TYPE_WORDS.get(t, t) for t in allowed)
        msg = f"expected {want}, got {_type_word(value)}"
        if "x-message" in sch:
            msg = f"{_type_word(value)} {sch['x-message']}"
        elif "string" in allowed and isinstance(value, int | float) and not isinstance(value, bool):
            msg += " (quote it if it is meant as text)"
        yield at(path, msg)
        return
    if kind == "enum":
        options = [str(o) for o in error.validator_value]
        tail = did_you_mean(str(value), options)
        yield at(path, f"{value!r} is not one of: {', '.join(options)}{tail}")
        return
    if kind == "const":
        yield at(path, f"must be {error.validator_value!r}, got {value!r}")
        return
    if kind == "pattern":
        msg = sch.get("x-message", f"does not match the pattern {error.validator_value}")
        yield at(path, f"{value!r} {msg}")
        return
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bounds = {
            "minimum": "at least",
            "exclusiveMinimum": "greater than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }
        yield at(path, f"{value!r} is out of range: must be {bounds[kind]} {error.validator_value}")
        return
    if kind in ("minItems", "minLength", "minProperties") and error.validator_value == 1:
        yield at(path, "must not be empty")
        return
    if kind == "maxProperties" and path and path[-1] == "text":
        yield at(path, "holds more than one operator: use one of contains/regex, or all: [...]")
        return
    yield at(path, error.message)
