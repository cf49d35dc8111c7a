"""The snapshot benchmark's joiners: N WebSocket clients that connect at once, read their
snapshot up to the end marker, then the live stream for a while, and check each one.

    python benchmarks/joiners.py --url ws://127.0.0.1:8765/ -n 100 --keys 10000 --live 2

A snapshot is complete and consistent when it holds every key once, each with its
latest value at the cut: the feed numbers its messages 1, 2, 3, ... and gives message
``seq`` the key ``seq % keys``, so the snapshot of a cut after message ``c`` is
exactly the messages ``c - keys + 1 .. c``. No gap and no duplicate: the first live
message is ``c + 1``, and live messages follow one another. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from common import seq_of
from websockets.asyncio.client import connect

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


async def one(url: str, keys: int, live_s: float) -> dict[str, object]:
    started = time.monotonic()
    async with connect(url, compression=None, max_size=None, max_queue=None, open_timeout=60) as ws:
        snap: list[int] = []
        while (message := await asyncio.wait_for(ws.recv(decode=False), 60)) != b"END":
            snap.append(seq_of(message))
        took = time.monotonic() - started
        live: list[int] = []
        deadline = time.monotonic() + live_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                live.append(seq_of(await asyncio.wait_for(ws.recv(decode=False), left)))
            except TimeoutError:
                break
    cut = max(snap, default=0)
    complete = len(snap) == keys and sorted(snap) == list(range(cut - keys + 1, cut + 1))
    continuous = bool(live) and live[0] == cut + 1 and live == list(range(live[0], live[0] + len(live)))
    return {"complete": complete, "continuous": continuous, "keys": len(snap), "snapshot_s": took}


async def main(url: str, n: int, keys: int, live_s: float) -> None:
    results = await asyncio.gather(*(one(url, keys, live_s) for _ in range(n)))
    took = sorted(float(r["snapshot_s"]) for r in results)  # type: ignore[arg-type]
    print(
        json.dumps(
            {
                "joiners": n,
                "complete": sum(1 for r in results if r["complete"]),
                "continuous": sum(1 for r in results if r["continuous"]),
                "keys_min": min(int(r["keys"]) for r in results),  # type: ignore[call-overload]
                "snapshot_s_p50": took[len(took) // 2],
                "snapshot_s_max": took[-1],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--live", type=float, default=2.0, help="seconds of live stream to check")
    args = parser.parse_args()
    runner = uvloop.run if uvloop is not None else asyncio.run
    runner(main(args.url, args.n, args.keys, args.live))
