"""The codebase stays ruff clean (lint and format), type-checked (mypy), its layers import
only downwards, and its dependencies are bounded: promises CI keeps."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(exe).exists():
        pytest.skip("ruff is not installed (pip install '.[test]')")
    return [exe]


def test_ruff_lint_clean():
    result = subprocess.run([*_ruff(), "check", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_clean():
    result = subprocess.run(
        [*_ruff(), "format", "--check", "."], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dependency_has_an_upper_bound_at_its_next_major_version():
    """A new major release of a library (websockets, Textual...) must not reach a new
    install of Veylor before Veylor is tested with it: every requirement, of the package,
    its extras and its build, says ``<N``, where N is the next major version after the
    one the suite runs with (``<1`` for a library still at 0.x)."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement
    from packaging.version import Version

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    requirements = [
        *data["project"]["dependencies"],
        *(r for extra in data["project"]["optional-dependencies"].values() for r in extra),
        *data["build-system"]["requires"],
    ]
    wrong = []
    for text in requirements:
        req = Requirement(text)
        try:
            tested = Version(version(req.name))
        except PackageNotFoundError:  # (not in this environment: its bound cannot be checked here)
            continue
        upper = [s.version for s in req.specifier if s.operator == "<"]
        if upper != [str(tested.major + 1 if tested.major else 1)]:
            wrong.append(f"{text} (the suite runs with {tested})")
    assert wrong == [], f"give these an upper bound at the next major version: {wrong}"


def test_the_import_contract_holds():
    """pyproject.toml's [tool.importlinter]: each layer (the commands, the TUI, the control
    plane, the runtime, the graph, the configuration...) imports only those below it, the
    runtime's and the configuration's modules too, so no import loops. Imports inside
    functions and under TYPE_CHECKING count."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install '.[test]')")
    result = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[result.stdout.find("Broken contracts") :] + result.stderr


def test_mypy_passes():
    """pyproject.toml's [tool.mypy]: the whole package, strict on the configuration, the
    graph and the filters (the modules still excepted are named there, with why)."""
    pytest.importorskip("mypy", reason="mypy is not installed (pip install '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_invariants_are_checked_with_exceptions_not_assert():
    """``python -O`` drops every ``assert``: an invariant the code relies on is an ``if``
    and an exception."""
    import ast

    found = []
    for path in sorted((REPO / "veylor").rglob("*.py")):
        rel = path.relative_to(REPO / "veylor").as_posix()
        tree = ast.parse(path.read_text(), str(path))
        found += [f"veylor/{rel}:{node.lineno}" for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert found == [], f"asserts that python -O would drop: {found}"


def test_library_internals_are_reached_only_in_compat():
    """Veylor runs on the public APIs of websockets, asyncio, uvloop, nats-py and Textual. A private
    attribute of one of them (``obj._name`` on an object Veylor did not define), or one of
    the internals the relay once leaned on (websockets' ``recv_messages``,
    ``connection_lost_waiter``, its protocol's ``parser``; ``asyncio.sslproto``), appears
    only in ``veylor/runtime/compat.py``, where a test holds each against the library."""
    import ast
    import re

    internals = re.compile(
        r"\b(recv_messages|connection_lost_waiter|sslproto|process_event|_writer_thread)\b|\.parser\b"
        r"|from (websockets|textual|nats|aiohttp|uvloop)\S*\._"  # a library's private module
    )
    found: list[str] = []
    for path in sorted((REPO / "veylor").rglob("*.py")):
        rel = path.relative_to(REPO / "veylor").as_posix()
        if rel == "runtime/compat.py":
            continue
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if internals.search(code) and not code.strip().startswith(('"', "'")):
                found.append(f"{rel}:{number}: {line.strip()}")
        for node in ast.walk(ast.parse(text)):
            # obj._private where obj is not self/cls (Veylor's own objects use self._x):
            # a private name of someone else's object
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Attribute | ast.Name)
                and _library_object(node.value)
            ):
                found.append(f"{rel}:{node.lineno}: .{node.attr}")
    assert not found, "library internals outside compat:\n" + "\n".join(found)


LIBRARY_NAMES = {"nc", "js", "jsi", "sub", "loop", "transport", "protocol", "websockets", "asyncio"}


def _library_object(node) -> bool:
    """Whether ``node`` names an object of a library (by the names Veylor gives them)."""
    import ast

    name = node.attr if isinstance(node, ast.Attribute) else node.id
    return name in LIBRARY_NAMES


def test_no_module_over_600_lines_and_no_class_over_300():
    """Small modules named for one concept (issue 24): a module that grows past 600
    lines, or a class past 300, is split by concern before it lands."""
    import ast

    found = []
    for path in sorted((REPO / "veylor").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text()
        if text.count("\n") > 600:
            found.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 300:
                found.append(
                    f"{rel}:{node.lineno}: class {node.name}, {node.end_lineno - node.lineno + 1} lines"
                )
    assert not found, "\n".join(found)
