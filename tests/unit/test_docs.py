"""The docs hold together: docs/configuration.md is what docs/gen_configuration.py writes
from the schema (so a schema change comes with its docs), and every schema key has a
description."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def _generator():
    """docs/gen_configuration.py, a script rather than a module of the package."""
    if "gen_configuration" in sys.modules:
        return sys.modules["gen_configuration"]
    spec = importlib.util.spec_from_file_location("gen_configuration", DOCS / "gen_configuration.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_configuration"] = module
    spec.loader.exec_module(module)
    return module


gen = _generator()


def test_configuration_reference_is_what_the_generator_writes():
    expected = gen.generate()
    actual = gen.OUT.read_text() if gen.OUT.exists() else ""
    assert actual == expected, (
        "docs/configuration.md is out of date with schema/veylor.schema.json or "
        "docs/configuration-intro.md: run .venv/bin/python docs/gen_configuration.py"
    )


def test_every_schema_key_has_a_description():
    schema = gen.Schema(json.loads(gen.SCHEMA.read_text()))
    missing = gen.undocumented(schema)
    assert not missing, (
        "schema keys without a description (add one in schema/veylor.schema.json, then run "
        f".venv/bin/python docs/gen_configuration.py): {missing}"
    )


def test_every_key_of_every_shape_is_in_the_reference():
    # The main file's keys, the filters' and the 1.x keys: each documented once per shape,
    # with its type and an example (the generator refuses a key it cannot give one).
    schema = gen.Schema(json.loads(gen.SCHEMA.read_text()))
    entries = gen.entries(schema)
    text = gen.OUT.read_text()
    paths = {e.path for e in entries}
    for path in (
        "sources.NAME.url",
        "endpoints.NAME.unix.framing",
        "FILTER.json.in",
        "admin.auth.tokens_file",
    ):
        assert path in paths
    assert {"sources[].websocket_port", "rebroadcast.unix_socket.path", "performance.max_queue_size"} <= paths
    for entry in entries:
        assert f"### `{entry.path}`" in text
    facts = re.findall(r"^Type: .*Example: `.*`\.$", text, re.M)
    assert len(facts) == len(entries)
