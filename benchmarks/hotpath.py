"""The fan-out hot path alone, in-process and deterministic: Veylor's Python cost per delivery.

    .venv/bin/python benchmarks/hotpath.py                         # this checkout
    .venv/bin/python benchmarks/hotpath.py --baseline ../veylor-old  # before/after, same run
    .venv/bin/python benchmarks/hotpath.py --baseline ../veylor-old --instructions  # exact

Max-rate runs of ``run.py`` vary by 30% from one run to the next on a 2-core machine,
too much to tell a 5% change. This measures only what Veylor's own code costs per
message: the routing table lookup, the filters, framing once, coalescing a pass, the
slow-client check and one ``transport.write`` per client, with clients whose
transport counts the bytes instead of sending them (the kernel's and uvloop's share
is the same in every version). Each case dispatches the same messages in passes of 10
and keeps the fastest of several repetitions (CPU time of this process); with
``--baseline`` the two checkouts run alternately, each in its own process (``python
-c`` started from the checkout imports that checkout's ``veylor``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CASES = {
    "ws_1000": dict(clients=1000, kind="websocket", filtered=False),
    "ws_100_filtered": dict(clients=100, kind="websocket", filtered=True),
    "unix_1000": dict(clients=1000, kind="unix", filtered=False),
    "lines_100": dict(clients=100, kind="lines", filtered=False),
}

WORKER = r'''
import json, sys, tempfile, time, types
from pathlib import Path
from websockets.protocol import State
from veylor.config import load_config
from veylor.graph import build_graph
from veylor.runtime.fanout import Router, build_table
try:  # the component kinds and stats objects of issue 10
    from veylor.runtime.kinds import make_endpoint
    from veylor.runtime.stats import RouteStats
except ImportError:  # a checkout from before them (--baseline)
    from veylor.runtime.endpoints import make_endpoint
    from veylor.runtime.fanout import RouteStats

case = json.loads(sys.argv[1])
messages, repeats = case["messages"], case["repeats"]

class Transport:
    __slots__ = ("written",)
    def __init__(self): self.written = 0
    def write(self, data): self.written += len(data)
    def get_write_buffer_size(self): return 0

class Client:
    """Stands in for a connection: open, never slow, its writes only counted."""
    dropped = 0
    closing = False
    def __init__(self, i):
        self.transport = Transport()
        self.protocol = types.SimpleNamespace(state=State.OPEN)
        self.label = f"c{i}"

class Loop:
    def call_soon(self, *args): pass

listen = {
    "websocket": "websocket: {host: 127.0.0.1, port: 9}",
    "unix": "unix: {path: /tmp/hotpath.sock}",
    "lines": "unix: {path: /tmp/hotpath.sock, framing: lines}",
}[case["kind"]]
flt = ", filter: {json: {path: s, in: [BTCUSDT, ETHUSDT]}}" if case["filtered"] else ""
with tempfile.TemporaryDirectory() as d:
    path = Path(d) / "c.yaml"
    path.write_text(
        "sources: {feed: {url: 'ws://127.0.0.1:9/'}}\n"
        f"endpoints: {{out: {{{listen}}}}}\n"
        f"routes: {{all: {{from: feed, to: out{flt}}}}}\n"
    )
    graph = build_graph(load_config(path, env={}))
ep = make_endpoint(graph.endpoints["out"])
for i in range(case["clients"]):
    ep.clients.add(Client(i))
router = Router(Loop())
router.install(build_table(graph, {"out": ep}, {"all": RouteStats()}))
payloads = [
    (b'{"e":"trade","s":"%s","p":"64000.%04d","q":"0.0100","seq":%08d,"pad":"%s"}'
     % (b"BTCUSDT" if i % 3 else b"SOLUSDT", i % 10000, i, b"x" * 90))
    for i in range(messages)
]
best = float("inf")
for _ in range(repeats):
    t0 = time.process_time()
    for i, data in enumerate(payloads):
        router.dispatch("feed", data, True)
        if i % 10 == 9:
            router.flush()
    router.flush()
    best = min(best, time.process_time() - t0)
deliveries = sum(1 for c in ep.clients) * messages * (2 / 3 if case["filtered"] else 1)
print(json.dumps({"ns_per_delivery": best / deliveries * 1e9, "written": sum(c.transport.written for c in ep.clients)}))
'''


def measure(tree: Path, case: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WORKER), json.dumps(case)],
        cwd=tree,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout)


def instructions(tree: Path, case: dict) -> int:
    """Instructions the worker executes under callgrind (deterministic: same binary, same
    inputs, same count, whatever else the machine is doing)."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            textwrap.dedent(WORKER),
            json.dumps(case),
        ],
        cwd=tree,
        # pymalloc (the default) gives counts within about 1.5% whatever the heap's history;
        # glibc's malloc (PYTHONMALLOC=malloc) moves them by up to 9%.
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    for line in out.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1].strip())
    raise RuntimeError(f"no instruction count from callgrind:\n{out.stderr[-2000:]}")


def count_instructions(trees: dict[str, Path], messages: int) -> None:
    """Instructions per delivery, from two runs (N and 2N messages, one pass each): the
    difference is the cost of N messages, without start-up and imports."""
    print("| case | " + " | ".join(f"{k} instructions/delivery" for k in trees) + " | change |")
    print("|---|" + "---|" * len(trees) + "---|")
    for name, spec in CASES.items():
        per: dict[str, float] = {}
        for who, tree in trees.items():
            small = instructions(tree, {**spec, "messages": messages, "repeats": 1})
            large = instructions(tree, {**spec, "messages": 2 * messages, "repeats": 1})
            deliveries = spec["clients"] * messages * (2 / 3 if spec["filtered"] else 1)
            per[who] = (large - small) / deliveries
        row = f"| {name} | " + " | ".join(f"{v:.1f}" for v in per.values())
        if "before" in per:
            row += f" | {(per['after'] - per['before']) / per['before']:+.1%}"
        print(row + " |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="DIR", help="another checkout to compare with")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument(
        "--repeats", type=int, default=7, help="repetitions in a process (the fastest counts)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="processes per checkout (the median counts)")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions with valgrind's callgrind instead of timing (slow, exact)",
    )
    args = parser.parse_args()
    trees = {"after": ROOT}
    if args.baseline:
        trees = {"before": Path(args.baseline).resolve(), "after": ROOT}
    if args.instructions:
        count_instructions(trees, args.messages)
        return 0
    print(
        "| case | "
        + " | ".join(f"{k} ns/delivery" for k in trees)
        + (" | change |" if len(trees) > 1 else " |")
    )
    print("|---|" + "---|" * len(trees) + ("---|" if len(trees) > 1 else ""))
    started = time.monotonic()
    for name, spec in CASES.items():
        case = {**spec, "messages": args.messages, "repeats": args.repeats}
        runs: dict[str, list[float]] = {k: [] for k in trees}
        written: dict[str, set[int]] = {k: set() for k in trees}
        for _ in range(args.rounds):  # alternate, so that drift hits both alike
            for who, tree in trees.items():
                got = measure(tree, case)
                runs[who].append(got["ns_per_delivery"])
                written[who].add(got["written"])
        med = {k: statistics.median(v) for k, v in runs.items()}
        if len(trees) > 1 and written["before"] != written["after"]:
            print(f"| {name} | the two checkouts wrote different bytes: {written} |")
            continue
        row = f"| {name} | " + " | ".join(f"{med[k]:.1f}" for k in trees)
        if len(trees) > 1:
            row += f" | {(med['after'] - med['before']) / med['before']:+.1%}"
        print(row + " |", flush=True)
    print(
        f"\n({time.monotonic() - started:.0f} s; median of {args.rounds} processes, each the fastest of "
        f"{args.repeats} x {args.messages} messages in passes of 10)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
