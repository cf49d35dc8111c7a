"""permessage-deflate at fan-out cost (issue 27): no compression, ``compression: shared``
(each message compressed once for all) and ``compression: true`` (once per client), in
one run, on two feeds.

    .venv/bin/python benchmarks/compression.py [--seconds 8] [--clients 1000]

Feeds (``upstream.py --feed``): ``tick``, 200-byte trades, and ``book``, 4 KiB order
books, whose content compresses as a real feed's does (prices and sizes on a random
walk; the fan-out benchmark's messages are padded with one repeated byte). The
upstream sends as fast as Veylor reads; 1,000 clients (``loadclient.py --discard
--deflate``: they offer permessage-deflate and count the bytes they read) take what
comes; ``slow_client: drop`` keeps them all connected, and what they miss is counted.

For each run, from Veylor's own counters (the admin endpoint's ``/graph``) over the
window: deliveries a second, bytes on the wire per delivered message, Veylor's CPU,
messages dropped for clients that fell behind, and how many clients took the shared
frame. The issue's target for 4 KiB JSON at 1,000 clients: ``shared`` holds at least
0.7x the uncompressed max rate, with at most 40% of the bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness import LOAD_CPU, free_port
from harness.stage import Stage

HERE = Path(__file__).resolve().parent
PY = sys.executable
MIN_SIZE = 64  # compression_min_size: the 200-byte ticks compressed too (the default, 256, sends them plain)

CONFIG = """
limits: {{buffered: 4GiB}}
admin: {{listen: "127.0.0.1:{admin}"}}
sources: {{feed: {{url: "ws://127.0.0.1:{upstream}/"}}}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {port}}}, client_buffer: 8MiB, slow_client: drop,
        compression: {mode}, compression_min_size: {min_size}, stall_timeout: null}}
routes: {{all: {{from: feed, to: ws}}}}
"""


def graph(admin: int) -> dict[str, Any]:
    # (a long timeout: with compression: true, one pass of 64 messages to 1,000 clients holds
    # the loop for seconds)
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/graph", timeout=120) as r:
        view: dict[str, Any] = json.load(r)["endpoints"]["ws"]
    return view


def run(feed: str, mode: str, clients: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"feed": feed, "mode": mode, "clients": clients}
    stage = Stage("veylor-deflate-")
    try:
        upstream, up_port = stage.upstream("--feed", feed)
        port, admin = free_port(), free_port()
        config = CONFIG.format(upstream=up_port, port=port, admin=admin, mode=mode, min_size=MIN_SIZE)
        relay = stage.veylor(config, upstream, port)
        load = stage.start(
            [PY, str(HERE / "loadclient.py"), "--url", f"ws://127.0.0.1:{port}/", "-n", str(clients),
             "--discard", "--deflate"],
            cpus=LOAD_CPU, stdin=True, read="stdout",
        )  # fmt: skip
        load.expect("ready", 120)
        upstream.send("go 1 20")  # warm up
        upstream.expect("{", 60)
        time.sleep(0.5)
        before, cpu0, t0 = graph(admin), relay.cpu(), time.monotonic()
        upstream.send(f"go {seconds} 0")  # as fast as Veylor reads
        went = json.loads(upstream.expect("{", seconds + 60))
        # (over the window Veylor was busy: with compression: true it is still at work on
        # what it read when the upstream stops)
        after, cpu1 = graph(admin), relay.cpu()
        span = max(time.monotonic() - t0, 1e-9)
        delivered = after["messages_out"] - before["messages_out"]
        out.update(
            sent=went["sent"],
            msgs_s=(after["messages"] - before["messages"]) / span,
            deliveries_s=delivered / span,
            bytes_per_delivery=(after["bytes_out"] - before["bytes_out"]) / max(delivered, 1),
            dropped=after["dropped"] - before["dropped"],
            cpu_pct=100 * ((cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1])) / span,
            open=after["clients"],
            shared_clients=after.get("compression_shared", 0),
        )
        return out
    except (TimeoutError, RuntimeError, OSError) as exc:
        out["note"] = f"failed: {exc}"
        return out
    finally:
        stage.stop()


def verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}: {text}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--feeds", default="tick,book")
    args = parser.parse_args()
    failed = False
    print(
        "| feed | compression | msg/s in | deliveries/s | bytes per delivery | Veylor CPU | dropped | clients (shared) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for feed in args.feeds.split(","):
        for mode in ("false", "shared", "true"):
            r = results[feed, mode] = run(feed, mode, args.clients, args.seconds)
            print(
                f"| {feed} | {mode} | {r.get('msgs_s', 0):,.0f} | {r.get('deliveries_s', 0):,.0f} | "
                f"{r.get('bytes_per_delivery', 0):,.0f} | {r.get('cpu_pct', 0):.0f}% | {r.get('dropped', 0):,} | "
                f"{r.get('open', 0)} ({r.get('shared_clients', 0)}) |"
                + (f" {r['note']}" if "note" in r else ""),
                flush=True,
            )
    print()
    if ("book", "false") in results and ("book", "shared") in results:
        plain, shared = results["book", "false"], results["book", "shared"]
        rate = shared.get("deliveries_s", 0) / max(plain.get("deliveries_s", 0), 1e-9)
        size = shared.get("bytes_per_delivery", 1e9) / max(plain.get("bytes_per_delivery", 0), 1e-9)
        for ok, text in (
            (rate >= 0.7, f"4 KiB JSON, shared: {rate:.2f}x the uncompressed deliveries/s (at least 0.7x)"),
            (
                size <= 0.4,
                f"4 KiB JSON, shared: {size:.0%} of the uncompressed bytes per delivery (at most 40%)",
            ),
        ):
            print(f"- {verdict(ok, text)}")
            failed |= not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
