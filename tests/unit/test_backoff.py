"""Reconnect delays: exponential, capped, jittered within bounds."""

from __future__ import annotations

import random

from veylor.backoff import backoff_delay
from veylor.config.common import Reconnect

POLICY = Reconnect(initial_delay=0.5, max_delay=30, multiplier=2, jitter=0.2, max_attempts=0)


def test_exponential_without_jitter():
    policy = Reconnect(0.5, 30, 2, 0, 0)
    assert [backoff_delay(policy, n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def test_jitter_stays_within_bounds_and_varies():
    rng = random.Random(7)
    delays = [backoff_delay(POLICY, 3, rng.random) for _ in range(500)]
    assert min(delays) >= 2 * 0.8 - 1e-9 and max(delays) <= 2 * 1.2 + 1e-9
    assert len({round(d, 3) for d in delays}) > 50


def test_never_above_max_delay_even_with_jitter():
    assert all(backoff_delay(POLICY, 50, lambda: 1.0) <= 30 for _ in range(10))


def test_huge_attempt_counts_do_not_overflow():
    assert backoff_delay(POLICY, 10**9) <= 30
