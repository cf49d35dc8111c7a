"""The buffer budget (veylor/runtime/budget.py) as the pure object it is, its clock and
timers driven by hand: what it watches, when a client counts as stalled, and who gets
the slow_client policy when the clients together hold more than limits.buffered.
(tests/integration/test_hostile.py holds the same against real sockets.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import Clock

from veylor.runtime.budget import NOTABLE, RELIEF, SWEEP, Budget

KERNEL = 100_000  # each client's kernel send buffer, as read at connect


class Timers:
    """``later`` and ``soon`` for the budget: what it asked for, run when the test says."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.due: list[tuple[float, Any]] = []
        self.soon: list[Any] = []

    def later(self, delay: float, callback: Any) -> Any:
        entry = (self.clock.now + delay, callback)
        self.due.append(entry)
        return SimpleNamespace(cancel=lambda: self.due.remove(entry))

    def call_soon(self, callback: Any) -> None:
        self.soon.append(callback)

    def run_soon(self) -> None:
        ready, self.soon = self.soon, []
        for callback in ready:
            callback()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, running every timer that falls due on the way."""
        end = self.clock.now + seconds
        while True:
            due = [d for d in self.due if d[0] <= end]
            if not due:
                break
            entry = min(due, key=lambda d: d[0])
            self.due.remove(entry)
            self.clock.now = entry[0]
            entry[1]()
        self.clock.now = end


@dataclass(eq=False)
class Transport:
    size: int = 0  # bytes Veylor's transport holds for the client
    aborted: bool = False

    def get_write_buffer_size(self) -> int:
        return self.size

    def abort(self) -> None:
        self.aborted = True


@dataclass(eq=False)
class Client:
    label: str
    transport: Transport = field(default_factory=Transport)
    held: int = 0
    unwritten: int = 0
    shed: bool = False
    sndbuf: int = KERNEL


class Endpoint:
    """The part of an endpoint the budget uses (BudgetedEndpoint)."""

    def __init__(self, policy: str = "disconnect", stall_timeout: float | None = None) -> None:
        self.name = "ep"
        self.spec = SimpleNamespace(slow_client=policy, stall_timeout=stall_timeout)
        self.clients: set[Client] = set()
        self.written = 0  # bytes written to every client since the start
        self.closed: list[tuple[str, str]] = []  # (client, why)

    def is_open(self, client: Client) -> bool:
        return client in self.clients and not client.transport.aborted

    def over_budget(self, client: Client) -> bool:
        if self.spec.slow_client == "drop":
            client.shed = True
            return False
        client.transport.abort()
        self.clients.discard(client)
        self.closed.append((client.label, "over the limit"))
        return True

    def stalled(self, client: Client, idle: float, held: int, why: str) -> None:
        client.transport.abort()
        self.clients.discard(client)
        self.closed.append((client.label, f"{why} after {idle:g} s"))

    def client(self, label: str) -> Client:
        c = Client(label)
        self.clients.add(c)
        return c

    def write(self, data: int, to_kernel: dict[Client, int]) -> None:
        """``data`` bytes written to every client: each one's kernel takes what
        ``to_kernel`` says, Veylor keeps the rest for it."""
        self.written += data
        for c in self.clients:
            c.transport.size += data - to_kernel.get(c, 0)


@pytest.fixture
def world():
    clock = Clock()
    timers = Timers(clock)

    def budget(limit: int) -> Budget:
        return Budget(limit, clock=clock, later=timers.later, soon=timers.call_soon)

    return SimpleNamespace(clock=clock, timers=timers, budget=budget)


def test_a_client_that_takes_nothing_for_stall_timeout_is_closed_one_that_reads_is_not(world):
    budget = world.budget(10**9)
    ep = Endpoint(stall_timeout=2.0)
    stuck, reader = ep.client("stuck"), ep.client("reader")
    ep.write(NOTABLE * 2, {})
    for c in (stuck, reader):
        budget.note(ep, c, c.transport.size)
    assert set(budget.watched) == {stuck, reader}
    for _ in range(int(2.0 / SWEEP) + 1):  # the reader's kernel takes a little at each look
        ep.write(1000, {reader: 1000 + 10})
        reader.transport.size -= 10
        world.timers.advance(SWEEP)
    assert ep.closed == [("stuck", "stall_timeout after 2 s")]
    assert reader in budget.watched and not reader.transport.aborted
    assert budget.stalled == 1


def test_a_client_that_drained_is_no_longer_watched(world):
    budget = world.budget(10**9)
    ep = Endpoint()
    c = ep.client("c")
    ep.write(NOTABLE * 2, {})
    budget.note(ep, c, c.transport.size)
    c.shed = True
    c.transport.size = 0  # it read everything
    world.timers.advance(SWEEP)
    assert budget.watched == {} and not c.shed and budget.total == 0
    assert world.timers.due == []  # and the sweeps stop


def test_over_the_limit_those_that_took_nothing_go_first_then_those_holding_the_most(world):
    budget = world.budget(1_000_000)
    ep = Endpoint()
    small_stuck, big_reader, mid_reader = ep.client("small, stuck"), ep.client("big"), ep.client("mid")
    sizes = {small_stuck: 100_000, big_reader: 400_000, mid_reader: 200_000}
    ep.written = 1_000_000
    for c, size in sizes.items():
        c.transport.size = size
        budget.note(ep, c, size)
    # 700,000 in Veylor + 3 x 100,000 in the kernels = 1,000,000: at the limit, not over.
    assert budget.total == 1_000_000 and ep.closed == []
    ep.written += 10_000  # the two readers take it all and a little of what waited
    big_reader.transport.size -= 5_000
    mid_reader.transport.size -= 5_000
    small_stuck.transport.size += 10_000
    world.timers.advance(SWEEP)  # a look: the small one took nothing
    for c in (big_reader, mid_reader):
        c.transport.size += 200_000  # a burst reaches the readers
        budget.note(ep, c, c.transport.size)
    assert budget.total > budget.limit and ep.closed == []  # (enforced after this pass)
    world.timers.run_soon()
    assert [label for label, _ in ep.closed] == ["small, stuck", "big"]
    assert budget.total <= budget.limit * RELIEF
    assert budget.enforced == 2 and set(budget.watched) == {mid_reader}


def test_a_burst_over_twice_the_limit_is_enforced_at_once(world):
    budget = world.budget(200_000)
    ep = Endpoint()
    c = ep.client("c")
    c.transport.size = 500_000
    budget.note(ep, c, c.transport.size)  # 600,000 with its kernel's: over 2 x 200,000
    assert ep.closed == [("c", "over the limit")] and world.timers.soon == []


def test_with_drop_a_client_dropped_for_that_takes_nothing_at_the_next_look_is_closed(world):
    budget = world.budget(200_000)
    ep = Endpoint(policy="drop")
    c = ep.client("c")
    c.transport.size = 150_000
    budget.note(ep, c, c.transport.size)  # 250,000: over, not twice over
    world.timers.run_soon()
    assert c.shed and ep.closed == []  # no more data for it; its bytes stay
    world.timers.advance(SWEEP)  # a look: it took nothing since
    budget.note(ep, c, c.transport.size + 1)  # (still over: enforcement runs again)
    world.timers.run_soon()
    assert ep.closed == [("c", f"buffered after {SWEEP:g} s")]
