"""Memory and latency with many stalled clients: Veylor's RSS before, at peak and after.

    .venv/bin/python benchmarks/stalled.py                             # 2000 stalled, 2000 msg/s
    .venv/bin/python benchmarks/stalled.py --baseline ../veylor-old    # the same with another checkout

Starts an upstream (in this process) and Veylor (``python -m veylor``, pinned to CPU 0),
connects one reading client, then N clients that complete the handshake and never read
again (receive buffer 4 KiB, set before connecting). The upstream sends 200-byte
messages at RATE msg/s for SECONDS; then the stalled clients close their sockets.
Reported: Veylor's RSS before the stalled clients, once they are connected, at the
peak during the feed, and 3 s after they left; what the reading client received and
its largest gap between two messages. Everything on 127.0.0.1; everything started is
stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import resource
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def handshake() -> bytes:
    return (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


async def run(tree: Path, stalled: int, rate: float, seconds: float, limits: str) -> dict:
    feeds: set = set()

    async def handler(conn) -> None:  # type: ignore[no-untyped-def]
        feeds.add(conn)
        await conn.wait_closed()
        feeds.discard(conn)

    workdir = Path(tempfile.mkdtemp(prefix="veylor-stalled-"))
    port = free_port()
    async with serve(handler, "127.0.0.1", 0, compression=None) as upstream:
        up_port = next(iter(upstream.sockets)).getsockname()[1]
        config = workdir / "config.yaml"
        config.write_text(
            f"{limits}\n"
            f"sources: {{up: {{url: 'ws://127.0.0.1:{up_port}/'}}}}\n"
            f"endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}}}, max_clients: 100000}}}}\n"
            "routes: {r: {from: up, to: ws}}\n"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "veylor",
            "-c",
            str(config),
            "--no-watch",
            cwd=tree,
            stderr=asyncio.subprocess.DEVNULL,
        )
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proc.pid, {0})
        socks: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 15
            while not feeds:
                if time.monotonic() > deadline:
                    raise RuntimeError("Veylor did not connect to the upstream")
                await asyncio.sleep(0.05)
            result: dict = {"before": rss_mib(proc.pid)}
            reader = await connect(f"ws://127.0.0.1:{port}/", max_size=None, max_queue=None, compression=None)
            loop = asyncio.get_running_loop()
            for i in range(stalled):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", port))
                await loop.sock_sendall(sock, handshake())
                socks.append(sock)
                if i % 100 == 99:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(1)
            result["connected"] = rss_mib(proc.pid)
            times: list[float] = []

            async def receive() -> None:
                async for _ in reader:
                    times.append(time.monotonic())

            receiving = asyncio.create_task(receive())
            payload = "x" * 200
            sent, peak, start = 0, 0.0, time.monotonic()
            while time.monotonic() - start < seconds:
                due = int((time.monotonic() - start) * rate) - sent
                for _ in range(due):
                    for conn in list(feeds):
                        await conn.send(payload)
                    sent += 1
                await asyncio.sleep(0.005)
                peak = max(peak, rss_mib(proc.pid))
            await asyncio.sleep(1)
            peak = max(peak, rss_mib(proc.pid))
            for sock in socks:
                sock.close()
            socks.clear()
            await asyncio.sleep(3)
            result.update(
                peak=peak,
                after=rss_mib(proc.pid),
                sent=sent,
                received=len(times),
                max_gap_ms=max((b - a for a, b in itertools.pairwise(times)), default=0) * 1000,
            )
            receiving.cancel()
            await reader.close()
            return result
        finally:
            for sock in socks:
                sock.close()
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            for f in workdir.iterdir():
                f.unlink()
            workdir.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--baseline", metavar="DIR", help="also run the Veylor of this checkout")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs = [
        ("after, limits.buffered 256MiB (default)", ROOT, ""),
        ("after, limits.buffered 64MiB", ROOT, "limits: {buffered: 64MiB}"),
    ]
    if args.baseline:
        runs.insert(0, ("before", Path(args.baseline).resolve(), ""))
    print(
        f"{args.stalled} stalled clients, 1 reader, {args.rate:g} msg/s of 200 bytes for {args.seconds:g} s\n"
    )
    print(
        "| Veylor | RSS before MiB | stalled connected | peak | 3 s after they left | reader got | largest gap ms |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, tree, limits in runs:
        r = asyncio.run(run(tree, args.stalled, args.rate, args.seconds, limits))
        print(
            f"| {name} | {r['before']:.0f} | {r['connected']:.0f} | {r['peak']:.0f} | {r['after']:.0f} | "
            f"{r['received']}/{r['sent']} | {r['max_gap_ms']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
