"""Each command imports what it needs: `veylor --version`, `--help` and `completion` need
no configuration code (jsonschema and the loader were 160 ms of every start), `check` no
runtime, and the admin clients (`status`, `reload`, `health`) neither the runtime nor the
TUI. A module-level import in veylor/cli.py, or an eager name in veylor/config/__init__.py,
fails here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, runpy, sys
args = json.loads(sys.argv[1])
sys.argv = ["veylor", *args]
try:
    runpy.run_module("veylor", run_name="__main__")
except SystemExit:
    pass
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""

CONFIG_CODE = {"jsonschema", "veylor.config.loader", "veylor.config.schema"}
RUNTIME = {"veylor.server", "veylor.runtime", "uvloop", "watchfiles", "nats"}
ADMIN_CLIENT = {"aiohttp"}
TUI = {"textual", "rich"}


def modules(args: list[str]) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, timeout=60
    )
    line = result.stderr.rsplit("MODULES ", 1)[-1]
    return set(json.loads(line))


def config(tmp_path: Path) -> str:
    main = tmp_path / "config.yaml"
    main.write_text(
        "sources: {a: {url: 'ws://127.0.0.1:9/'}}\nendpoints: {e: {websocket: {port: 9}}}\n"
        "routes: {r: {from: a, to: e}}\n"
    )
    return str(main)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["completion", "bash"], ["check", "--help"]])
def test_commands_that_read_no_configuration_import_none_of_its_code(args: list[str]) -> None:
    loaded = modules(args)
    assert "veylor.cli" in loaded
    assert not loaded & (CONFIG_CODE | RUNTIME | ADMIN_CLIENT | TUI), sorted(
        loaded & (CONFIG_CODE | RUNTIME | TUI)
    )


def test_check_imports_the_loader_but_no_runtime(tmp_path: Path) -> None:
    loaded = modules(["check", "-c", config(tmp_path)])
    assert {"jsonschema", "veylor.config.loader"} <= loaded  # (it did check)
    found = {
        m for m in loaded if m.split(".")[0] in {"uvloop", "watchfiles", "nats", "aiohttp", "textual", "rich"}
    }
    found |= loaded & {"veylor.server", "veylor.runtime"}
    assert not found, sorted(found)


@pytest.mark.parametrize("command", ["status", "health"])
def test_admin_clients_import_no_runtime(tmp_path: Path, command: str) -> None:
    loaded = modules([command, "--admin", "127.0.0.1:9"])
    assert "aiohttp" in loaded  # (it did try)
    assert not loaded & {"veylor.server", "veylor.runtime", "uvloop", "watchfiles", "textual"}
