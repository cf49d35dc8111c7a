"""Reconnect delays: exponential backoff with jitter (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable

from .config.common import Reconnect


def backoff_delay(policy: Reconnect, failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before attempt number ``failures + 1`` (``failures >= 1``).

    ``min(max_delay, initial_delay * multiplier ** (failures - 1))``, then spread by
    ``±jitter`` of itself so that many relays restarted together do not reconnect in
    lockstep; never above ``max_delay``, never below ``initial_delay * (1 - jitter)``.
    """
    base = min(policy.max_delay, policy.initial_delay * policy.multiplier ** min(max(0, failures - 1), 64))
    spread = base * policy.jitter * (2 * rand() - 1)
    return max(0.0, min(policy.max_delay, base + spread))
