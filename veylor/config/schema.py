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

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .problems import PathT, Problem, did_you_mean
from .yamlfile import SourceMap

SCHEMA_NAME = "veylor.schema.json"

# Keys that mean something in another shape: a hint beats a bare "unknown key".
_SHAPE_HINTS = {
    "rebroadcast": "'rebroadcast' belongs to Veylor 1.0 files, whose 'sources' is a list",
    "performance": "'performance' belongs to Veylor 1.x files, whose 'sources' is a list",
    "include": "'include' is only read from the main file",
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
    return json.loads(schema_path().read_text(encoding="utf-8"))


def definition(name: str) -> dict[str, Any]:
    """One of the schema's ``$defs``."""
    return schema()["$defs"][name]


@functools.cache
def _validator(def_name: str | None) -> Draft202012Validator:
    root = schema()
    if def_name is None:
        return Draft202012Validator(root)
    sub = {"$schema": root["$schema"], "$defs": root["$defs"], "$ref": f"#/$defs/{def_name}"}
    return Draft202012Validator(sub)


def _resolve(prop: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return definition(ref.rsplit("/", 1)[1])
    return prop


def with_defaults(sub_schema: dict[str, Any], value: Any) -> Any:
    """Return ``value`` with the schema's defaults filled in, recursively, for mappings."""
    sub_schema = _resolve(sub_schema)
    if not isinstance(value, dict) or "properties" not in sub_schema:
        return value
    out = dict(value)
    for key, prop in sub_schema["properties"].items():
        if key not in out and "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
        if key in out:
            out[key] = with_defaults(prop, out[key])
    return out


def default_of(def_name: str, key: str) -> Any:
    """The default of property ``key`` of ``$defs[def_name]`` (for reports and legacy mapping)."""
    return copy.deepcopy(definition(def_name)["properties"][key]["default"])


def validate(data: Any, where: SourceMap, def_name: str | None = None) -> list[Problem]:
    """Validate ``data`` against the schema (or one of its ``$defs``); every error, located."""
    problems = []
    for error in _validator(def_name).iter_errors(data):
        problems.extend(_humanize(error, where))
    return problems


def _type_word(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    return type(value).__name__


def _humanize(error: ValidationError, where: SourceMap) -> Iterator[Problem]:
    path: PathT = tuple(error.absolute_path)
    kind = error.validator
    sch = error.schema if isinstance(error.schema, dict) else {}
    value = error.instance

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
        words = {
            "minimum": "at least",
            "exclusiveMinimum": "greater than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }
        yield at(path, f"{value!r} is out of range: must be {words[kind]} {error.validator_value}")
        return
    if kind in ("minItems", "minLength", "minProperties") and error.validator_value == 1:
        yield at(path, "must not be empty")
        return
    if kind == "maxProperties" and path and path[-1] == "text":
        yield at(path, "holds more than one operator: use one of contains/regex, or all: [...]")
        return
    yield at(path, error.message)
