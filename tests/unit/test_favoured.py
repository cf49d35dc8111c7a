"""The suite's own promise (tests/conftest.py, ``_favoured``): a test marked ``latency``,
and every process it starts, runs at a higher priority than the other tests, which run
at the usual one: a latency bound then holds what a machine of its own would give."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import FAVOURED, USUAL

PRIORITY = [sys.executable, "-c", "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"]


@pytest.mark.skipif(os.geteuid() != 0, reason="a higher priority needs CAP_SYS_NICE (CI runs as root)")
@pytest.mark.latency
def test_a_latency_test_and_the_processes_it_starts_run_at_a_higher_priority():
    assert os.getpriority(os.PRIO_PROCESS, 0) == FAVOURED
    child = subprocess.run(PRIORITY, capture_output=True, text=True, timeout=30, check=True)
    assert int(child.stdout) == FAVOURED


def test_other_tests_run_at_the_usual_priority():
    """Also after a latency test on the same worker: the priority is given back."""
    assert os.getpriority(os.PRIO_PROCESS, 0) == USUAL
    child = subprocess.run(PRIORITY, capture_output=True, text=True, timeout=30, check=True)
    assert int(child.stdout) == USUAL
