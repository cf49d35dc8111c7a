"""Shared helpers: config trees in temporary directories, running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Bytecode is cached, whatever the environment says (PYTHONDONTWRITEBYTECODE=1 is set on
# some machines, ours included): without it every Veylor the tests start (a few hundred)
# compiles its modules again, 90 ms of CPU each, and every xdist worker rewrites and
# compiles every test module's asserts again, 4 s each. Workers and Veylor processes
# inherit the environment from here.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# Property-based tests: a fixed budget in CI (the default), a longer one for developers
# (`pytest -m fuzz --hypothesis-profile=long`). Deadlines off: these drive real
# processes and sockets, whose timing says nothing about a property.
settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# pytest-xdist gives its workers COLUMNS=80 and LINES=24, which Textual takes over the
# terminal's real size: a TUI started in a 160x45 tmux would draw itself at 80x24.
if "PYTEST_XDIST_WORKER" in os.environ:
    for _size in ("COLUMNS", "LINES"):
        os.environ.pop(_size, None)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: YAML text}`` under ``root`` (text is dedented)."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write files under a temporary directory that is also the working directory."""
    monkeypatch.chdir(tmp_path)

    def make(files: dict[str, str]) -> Path:
        return write_tree(tmp_path, files)

    return make


def run_veylor(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m veylor ARGS`` as a real subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "veylor", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def pytest_asyncio_loop_factories(config, item):
    """In-process tests run on uvloop, the loop Veylor runs on in production; a module can
    ask for the default loop with ``ASYNCIO_LOOP = "asyncio"`` (its transports can be
    instrumented, uvloop's cannot)."""
    import asyncio

    import uvloop

    if getattr(item.module, "ASYNCIO_LOOP", "uvloop") == "asyncio":
        return {"asyncio": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


# A test marked `latency` bounds how long Veylor keeps a client waiting (a control
# client's largest gap, an event loop's longest pause). The suite runs several tests at
# once on a machine of two cores: a process of another test may hold the CPU for tens of
# milliseconds, which is the machine's doing, not Veylor's. So while such a test runs,
# its worker and every process it starts (Veylor, the witness, the attackers) run at a
# higher priority (nice -10, inherited by children) than the other tests': the bound
# stays what it was, and holds what a machine of their own would give. It needs
# CAP_SYS_NICE (CI runs as root); without it, the test runs at the usual priority.
FAVOURED = -10
USUAL = os.getpriority(os.PRIO_PROCESS, 0)  # (the suite's, as it was started)


@pytest.fixture(autouse=True)
def _favoured(request: pytest.FixtureRequest):
    if request.node.get_closest_marker("latency") is None:
        yield
        return
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, FAVOURED)
    except PermissionError:
        yield
        return
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


@pytest.fixture
async def upstream():
    """A real upstream WebSocket server on 127.0.0.1 (see helpers.Upstream)."""
    from helpers import Upstream

    up = await Upstream().start()
    yield up
    await up.stop()


# The suite runs in parallel (pytest-xdist, `-n` in pyproject.toml). Its longest tests
# start first, so that they do not end last alone: xdist hands tests out in collection
# order. Tests that share a module-scoped fixture (one soak, one built image, one booted
# systemd, one running Veylor under the wire fuzzer) stay on one worker each (an
# xdist_group per module), or the fixture would be made once per worker. The container
# and systemd tests run on two workers at the same time, from one Debian base and one
# set of wheels, each made once under a lock (see test_container.base_image and wheels).
_LONGEST_FIRST = (
    "test_soak.py",
    "test_systemd.py",
    "test_container.py",
    "test_nats.py",
    "test_nats_adversarial.py",
    "test_nats_hostile.py",
    "test_tui_pty.py",
    "test_tui.py",
    "test_fuzz_wire.py",
)
_GROUPS = {
    "test_soak.py": "soak",
    "test_systemd.py": "systemd",
    "test_container.py": "container",
    "test_fuzz_wire.py": "fuzz-wire",
    "test_fuzz_loader.py": "fuzz-loader",
    "test_reload_property.py": "reload-property",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # (stable: the rest as collected)
    for item in items:
        group = _GROUPS.get(item.path.name)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
