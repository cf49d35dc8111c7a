"""What a /metrics scrape costs a real Veylor with 1,000 sources, endpoints and routes.

    .venv/bin/python benchmarks/metrics.py [--n 1000] [--scrapes 20]

Starts ``python -m veylor`` on a generated configuration (N sources whose upstream
refuses, with a long backoff so that they stay quiet; N WebSocket endpoints on one port;
N routes), scrapes ``/metrics`` and ``/graph`` repeatedly, and reports per scrape: the
wall time of the request, and the relay's CPU time (user + system, from /proc) divided by
the number of scrapes. It also times the same text made with ``prometheus_client``'s
registry (``generate_latest`` over a custom collector) in this process, for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import cpu_seconds, free_port
from harness.process import Process


def config(n: int, port: int, admin: int, dead: int) -> str:
    lines = [f'admin: {{listen: "127.0.0.1:{admin}"}}', "sources:"]
    lines += [
        f'  s{i}: {{url: "ws://127.0.0.1:{dead}/s{i}", reconnect: {{initial_delay: 600, max_delay: 600}}}}'
        for i in range(n)
    ]
    lines.append("endpoints:")
    lines += [f"  e{i}: {{websocket: {{port: {port}, path: /e{i}}}}}" for i in range(n)]
    lines.append("routes:")
    lines += [f"  r{i}: {{from: s{i}, to: e{i}, filter: {{type: text}}}}" for i in range(n)]
    return "\n".join(lines) + "\n"


def fetch(url: str) -> tuple[float, int]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        body = r.read()
    return time.perf_counter() - t, len(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    port, admin, dead = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.yaml"
        path.write_text(config(args.n, port, admin, dead))
        log = Path(d) / "veylor.log"  # a file, not a pipe nobody reads: logging would block
        proc = Process([sys.executable, "-m", "veylor", "-c", str(path), "--no-watch"], log=log)
        try:
            deadline = time.monotonic() + 60
            while "ready:" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2.0)  # the first connection attempts fail and back off
            for path_name in ("/metrics", "/graph"):
                url = f"http://127.0.0.1:{admin}{path_name}"
                fetch(url)
                before = cpu_seconds(proc.pid)
                walls, size = [], 0
                for _ in range(args.scrapes):
                    wall, size = fetch(url)
                    walls.append(wall)
                used = (cpu_seconds(proc.pid) - before) / args.scrapes
                print(
                    f"{path_name}: {args.n} sources, endpoints and routes: {size / 1024:.0f} KiB; "
                    f"request {statistics.median(walls) * 1000:.1f} ms (median of {args.scrapes}), "
                    f"relay CPU {used * 1000:.1f} ms per scrape: {used:.1%} of one CPU at one scrape a second"
                )
        finally:
            proc.terminate(10)
    reference(args.n)
    return 0


def reference(n: int) -> None:
    """The same families through prometheus_client's registry, for comparison."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self):  # type: ignore[no-untyped-def]
            for kind, label, names in (
                (
                    "source",
                    "source",
                    ("messages", "bytes", "connects", "disconnects", "attempts", "upstream_messages"),
                ),
                ("endpoint", "endpoint", ("accepted", "deliveries", "bytes", "undelivered", "slow_clients")),
                ("route", "route", ("filtered",)),
            ):
                for name in names:
                    family = CounterMetricFamily(f"veylor_{kind}_{name}", "h", labels=[label])
                    for i in range(n):
                        family.add_metric([f"{kind[0]}{i}"], i)
                    yield family
            gauge = GaugeMetricFamily("veylor_endpoint_clients", "h", labels=["endpoint"])
            for i in range(n):
                gauge.add_metric([f"e{i}"], i)
            yield gauge

    registry = CollectorRegistry()
    registry.register(Collector())
    best = min(_timed(lambda: generate_latest(registry)) for _ in range(5))
    print(f"prometheus_client generate_latest, 13 families x {n}: {best * 1000:.1f} ms (best of 5)")


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
