"""Veylor's exit is bounded whatever its tasks do.

A shutdown under load once waited for ever after logging "stopped": the JetStream
outbox's loop awaited ``asyncio.wait_for(shield(ack), ...)``, and Python 3.11's
``wait_for`` returns the result, losing the cancellation, when the awaited future
completes as the cancellation arrives; then ``asyncio.Runner`` waited for that task
without end. The loop now uses ``asyncio.timeout``, Veylor's code no ``wait_for``, and
``run_loop`` gives the tasks left after ``main`` a bounded time."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

VEYLOR = Path(__file__).resolve().parents[2] / "veylor"

STUBBORN = """
import asyncio, logging, sys
from veylor.server import run_loop
logging.basicConfig(level=logging.INFO)

async def stubborn():
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # as a swallowed cancellation does

async def polite():
    await asyncio.sleep(10)

async def main():
    loop = asyncio.get_running_loop()
    if sys.argv[1] == "stubborn":
        loop.create_task(stubborn(), name="the-stubborn-one")
    loop.create_task(polite(), name="polite")
    await asyncio.sleep(0.05)
    return 3

raise SystemExit(run_loop(main))
"""


@pytest.mark.parametrize("kind", ["stubborn", "polite"])
def test_run_loop_ends_even_when_a_task_ignores_its_cancellation(kind: str) -> None:
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", STUBBORN, kind], capture_output=True, text=True, timeout=20
    )  # (it used to wait for ever: TimeoutExpired)
    took = time.monotonic() - start
    assert result.returncode == 3, result.stderr
    assert took < 10, took
    if kind == "stubborn":
        assert "did not end" in result.stderr and "the-stubborn-one" in result.stderr, result.stderr
    else:
        assert "did not end" not in result.stderr, result.stderr


async def test_a_cancellation_as_the_awaited_future_completes_is_not_lost() -> None:
    """The pattern the outbox uses keeps the cancellation; ``wait_for`` on this Python
    may not (on 3.11 it returns the result: see the module's docstring)."""
    loop = asyncio.get_running_loop()

    async def guarded(fut: asyncio.Future[int]) -> str:
        async with asyncio.timeout(5):
            await asyncio.shield(fut)
        return "went on"

    fut: asyncio.Future[int] = loop.create_future()
    task = asyncio.create_task(guarded(fut))
    await asyncio.sleep(0)
    fut.set_result(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    fut2: asyncio.Future[int] = loop.create_future()
    task2 = asyncio.create_task(asyncio.wait_for(fut2, 5))
    await asyncio.sleep(0)
    fut2.set_result(1)
    task2.cancel()
    try:
        lost = await task2 == 1
    except asyncio.CancelledError:
        lost = False
    assert lost == (sys.version_info < (3, 12)), "wait_for's behaviour changed: see the module docstring"


def test_veylor_does_not_call_wait_for() -> None:
    calls = [
        f"{path.relative_to(VEYLOR.parent)}:{n}"
        for path in sorted(VEYLOR.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bwait_for\(", line) and not line.lstrip().startswith("#")
    ]
    assert not calls, f"asyncio.wait_for can lose a cancellation on Python 3.11; use asyncio.timeout: {calls}"
