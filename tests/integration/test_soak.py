"""The soak (benchmarks/soak.py), shortened for the suite: Veylor as a real process under
churn, reloads, stalled clients and an upstream restart, checked for lost messages and
for growth of file descriptors, asyncio tasks and memory.

One run (about 110 s with its warm-up and settle) is shared by the tests below, each
asserting one part of its JSON report, so that a failure says which part. The suite runs
in parallel: it starts first, on a worker of its own (tests/conftest.py).

Settings, and why they are reliable. The 30-minute soak's figures (2,000 msg/s to 200
WebSocket and 50 Unix staying clients) cost Veylor about 55% of a core and its clients
20%; the suite runs beside other tests on a 2-core machine, so here the fan-out is
halved (1,000 msg/s to 100 WebSocket and 25 Unix clients), and the upstream writes what
is due every 10 ms instead of every 2 ms (10 messages a write, as a batching exchange
feed does): each write is one pass of Veylor's fan-out, one write to each client, and
the kernel's work for those loopback writes was most of the run's CPU (Veylor 59% of a
core -> 19%, the whole run 102 s of CPU -> 41 s; the same messages, each checked).
The churn, not the width of the fan-out, is what exposes leaks, and it is kept: 10
connections a second, a quarter of them aborting the opening at every stage, about 800
in the run. A reload every 5 s, a stalled client every 25 s (gone at its stall_timeout,
10 s), an upstream restart every 40 s, so that 75 s include each several times or once.
Checked by running this shortened soak against copies of Veylor with one fan-out write
in 200,000 skipped (62 messages missing, 6 unannounced gaps) and with a file descriptor
leaked per WebSocket client (816 -> 1,390): each failed its check. (The longer runs are
`python benchmarks/soak.py --minutes 30`: benchmarks/RESULTS.md.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "benchmarks" / "soak.py"
MINUTES = 1.25
RATE = 1000
WS_CLIENTS, UNIX_CLIENTS = 100, 25
CHURN = 10  # connections a second
COMMAND = [
    sys.executable, str(SOAK), "--json", "--minutes", str(MINUTES), "--rate", str(RATE),
    "--ws-clients", str(WS_CLIENTS), "--unix-clients", str(UNIX_CLIENTS), "--churn-rate", str(CHURN),
    "--restart-every", "40", "--stall-every", "25", "--reload-every", "5", "--settle", "10",
    "--tick-ms", "10",
]  # fmt: skip

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
    assert m["staying_clients"] == WS_CLIENTS + UNIX_CLIENTS
    assert m["per_client"] > 0.8 * RATE * MINUTES * 60  # the window was real
    assert m["delivered"] == m["expected"]
    assert m["missing"] == m["unannounced_gaps"] == m["duplicates_or_reorders"] == m["corrupt"] == 0
    assert m["staying_disconnected"] == 0
    assert len(m["outages"]) == len(report["restarts"]) >= 1  # the restart's gap, and only it
    churn = check(report, "churn clients")
    assert churn["ok"], churn["detail"]


def test_the_churn_happened(report: dict) -> None:
    made = report["churn"]["made"]
    connections = report["churn"]["connections"]
    assert connections >= 0.8 * CHURN * MINUTES * 60, made
    aborted = sum(n for kind, n in made.items() if "abort" in kind)
    assert aborted >= 0.15 * connections, made  # a quarter abort the opening, at every stage
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
