"""The soak (benchmarks/soak.py) for two minutes: Veylor as a real process under churn,
reloads, stalled clients and an upstream restart, checked for lost messages and for
growth of file descriptors, asyncio tasks and memory.

One run (about 3 minutes with its warm-up and settle) is shared by the tests below, each
asserting one part of its JSON report, so that a failure says which part.

Settings, and why they are reliable: the issue's figures (2,000 msg/s to 200 WebSocket and
50 Unix staying clients, 10 churning connections a second, a quarter of them aborting the
opening, a reload every 10 s, a stalled client every minute), which on the project's
2-core machine cost Veylor about 55% of a core, the staying clients (raw sockets on one
epoll, one byte comparison per read) about 20% and the churn about 9%: a core is left, and
the clients were at most 70 messages (35 ms) behind. Only the upstream restart comes
sooner (every 60 s instead of every 5 minutes), so that the two minutes include one. The
rate also sets how soon a stalled client fills its buffers (about 13 s at 2,000 msg/s;
its stall_timeout, 10 s, comes first), which the run waits for. The churn, not the width of the fan-out, is what exposes leaks:
about 1,200 connections in two minutes, so a leaked file descriptor per churned client
shows as about a thousand more at the end, and a lost message as a gap in a staying
client's numbers. Checked by running the soak against copies of Veylor with an fd leaked
per WebSocket client, one write in 200,000 skipped, and a task leaked per client: each
failed the corresponding check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "benchmarks" / "soak.py"
COMMAND = [sys.executable, str(SOAK), "--minutes", "2", "--restart-every", "60", "--json"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def report() -> dict:
    result = subprocess.run(COMMAND, cwd=ROOT, capture_output=True, text=True, timeout=230)
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"soak.py exited {result.returncode} without a JSON report:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    assert "error" not in data, f"the soak could not run: {data['error']}\n" + "\n".join(data["events"])
    return data


def check(report: dict, name: str) -> dict:
    (found,) = [c for c in report["checks"] if c["name"] == name]
    return found


def test_nothing_lost(report: dict) -> None:
    m = report["messages"]
    assert check(report, "messages")["ok"], check(report, "messages")["detail"]
    assert m["staying_clients"] == 250
    assert m["per_client"] > 100_000  # about a minute and a half at 2,000 msg/s: the window was real
    assert m["delivered"] == m["expected"]
    assert m["missing"] == m["unannounced_gaps"] == m["duplicates_or_reorders"] == m["corrupt"] == 0
    assert m["staying_disconnected"] == 0
    assert len(m["outages"]) == len(report["restarts"]) >= 1  # the restart's gap, and only it
    churn = check(report, "churn clients")
    assert churn["ok"], churn["detail"]


def test_the_churn_happened(report: dict) -> None:
    made = report["churn"]["made"]
    assert report["churn"]["connections"] >= 900, made
    aborted = sum(n for kind, n in made.items() if "abort" in kind)
    assert aborted >= 150, made
    assert any(kind.startswith("unix") for kind in made), made


def test_no_fd_or_task_growth(report: dict) -> None:
    fds, tasks = report["fds"], report["tasks"]
    assert check(report, "file descriptors")["ok"], fds
    assert check(report, "asyncio tasks")["ok"], tasks
    assert fds["end"] <= fds["start"], fds
    assert tasks["end"] <= tasks["start"], tasks


def test_client_counts_match_real_connections(report: dict) -> None:
    counts = check(report, "client counts")
    assert counts["ok"], counts["detail"]
    points = report["checkpoints"]
    assert len(points) >= 3  # start, during the run, end
    for point in points:
        assert point["reported"] == point["held"] == point["known"], point
        assert point["held_unlisted"] == 0, point  # no dead socket held


def test_memory_returns_near_start(report: dict) -> None:
    memory = check(report, "memory")
    assert memory["ok"], memory["detail"]


def test_reloads_stalls_restart_and_shutdown(report: dict) -> None:
    for name in ("reloads", "stalled clients", "upstream restarts", "shutdown"):
        assert check(report, name)["ok"], check(report, name)["detail"]
    assert report["reloads"]["count"] >= 10
    assert len([s for s in report["stalls"] if not s.get("warmup")]) >= 2


def test_every_check_passes(report: dict) -> None:
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
