"""Many stalled clients: what they make Veylor and the kernel hold, and what a reader sees.

    .venv/bin/python benchmarks/stalled.py                             # 2000 stalled, 2000 msg/s of 1 KiB
    .venv/bin/python benchmarks/stalled.py --baseline ../veylor-old    # the same with another checkout
    .venv/bin/python benchmarks/stalled.py --stalled 500 --policy drop # fewer clients, one policy

Starts an upstream (in this process) and Veylor (``python -m veylor``, pinned to CPU 0,
default settings but for ``slow_client``), connects one reading client, then N clients
that complete the handshake and never read again (receive buffer 4 KiB and an MSS of
1,400 bytes, set before connecting: a window and segments like an Internet client's).
The upstream sends messages of SIZE bytes at RATE msg/s for SECONDS; then the stalled
clients close their sockets.

Reported per run: Veylor's RSS (MiB) before the stalled clients, at the peak and 3 s
after they left; the host's TCP memory (``/proc/net/sockstat``, ``TCP: mem``, shared
with everything else on the host) above what it was before, at its peak; the peak of
what the kernel holds for Veylor's sockets on the port (``ss -tm``: receive, send,
in transmission, reserved); the stalled clients Veylor still held when the feed ended;
the clients Veylor closed, by reason (``/metrics``); what the reading client received
and its largest gap between two messages. Everything on 127.0.0.1; everything started
is stopped.

Mind the host: before issue 22, each stalled client could make the kernel hold 1 MiB
(2,000: 2 GiB, past a 24 GiB host's ``tcp_mem`` pressure line), which every TCP user of
the host feels. Run ``--baseline`` with fewer clients on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import RELAY_CPU, free_port, raise_nofile, rss_mib
from harness.process import Process
from harness.report import log_path
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PAGE = os.sysconf("SC_PAGE_SIZE")


def tcp_mem() -> int:
    """The host's TCP memory in bytes (``TCP: mem``, in pages)."""
    with open("/proc/net/sockstat") as fh:
        for line in fh:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1]) * PAGE
    return 0


def held_by_sockets(port: int) -> tuple[int, int]:
    """Veylor's established sockets on ``port``: how many, and what the kernel holds for them."""
    out = subprocess.run(
        ["ss", "-tmnH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    count = held = 0
    for skmem in re.findall(r"skmem:\(([^)]*)\)", out):
        fields = {m.group(1): int(m.group(2)) for m in re.finditer(r"([a-z]+)(\d+)", skmem)}
        count += 1
        held += sum(fields.get(k, 0) for k in ("r", "t", "f", "w"))
    return count, held


def closed_by_reason(admin: int) -> dict[str, int]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read().decode()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for m in re.finditer(
        r'^veylor_endpoint_(closed_clients|slow_clients)_total\{[^}]*(?:reason|action)="(\w+)"\} (\d+)',
        text,
        re.M,
    ):
        if int(m.group(3)):
            key = m.group(2) if m.group(1) == "closed_clients" else f"slow_{m.group(2)}"
            out[key] = out.get(key, 0) + int(m.group(3))
    return out


def handshake() -> bytes:
    return (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


async def run(tree: Path, stalled: int, rate: float, seconds: float, size: int, policy: str) -> dict:
    feeds: set = set()

    async def handler(conn) -> None:  # type: ignore[no-untyped-def]
        feeds.add(conn)
        await conn.wait_closed()
        feeds.discard(conn)

    workdir = Path(tempfile.mkdtemp(prefix="veylor-stalled-"))
    port, admin = free_port(), free_port()
    async with serve(handler, "127.0.0.1", 0, compression=None) as upstream:
        up_port = next(iter(upstream.sockets)).getsockname()[1]
        config = workdir / "config.yaml"
        config.write_text(
            f"sources: {{up: {{url: 'ws://127.0.0.1:{up_port}/'}}}}\n"
            f"endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}}}, max_clients: 100000, "
            f"slow_client: {policy}}}}}\n"
            "routes: {r: {from: up, to: ws}}\n"
            f'admin: {{listen: "127.0.0.1:{admin}"}}\n'
        )
        proc = Process(
            [sys.executable, "-m", "veylor", "-c", str(config), "--no-watch"],
            cpus=RELAY_CPU,
            cwd=tree,
            log=log_path(f"stalled-{tree.name}-{policy}.log"),
        )
        socks: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 15
            while not feeds:
                if time.monotonic() > deadline:
                    raise RuntimeError("Veylor did not connect to the upstream")
                await asyncio.sleep(0.05)
            result: dict = {"before": rss_mib(proc.pid)}
            tcp_before = tcp_mem()
            reader = await connect(f"ws://127.0.0.1:{port}/", max_size=None, max_queue=None, compression=None)
            loop = asyncio.get_running_loop()
            for i in range(stalled):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", port))
                await loop.sock_sendall(sock, handshake())
                socks.append(sock)
                if i % 100 == 99:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(1)
            times: list[float] = []

            async def receive() -> None:
                async for _ in reader:
                    times.append(time.monotonic())

            async def sample() -> None:
                while True:
                    result["peak"] = max(result.get("peak", 0.0), rss_mib(proc.pid))
                    result["tcp_peak"] = max(result.get("tcp_peak", 0), tcp_mem() - tcp_before)
                    _, held = await asyncio.to_thread(held_by_sockets, port)
                    result["held_peak"] = max(result.get("held_peak", 0), held)
                    await asyncio.sleep(0.2)

            receiving = asyncio.create_task(receive())
            sampling = asyncio.create_task(sample())
            payload = "x" * size
            sent, start = 0, time.monotonic()
            while time.monotonic() - start < seconds:
                due = int((time.monotonic() - start) * rate) - sent
                for _ in range(due):
                    for conn in list(feeds):
                        await conn.send(payload)
                    sent += 1
                await asyncio.sleep(0.005)
            await asyncio.sleep(1)
            result["still_held"] = held_by_sockets(port)[0] - 1  # (the reader)
            sampling.cancel()
            for sock in socks:
                sock.close()
            socks.clear()
            await asyncio.sleep(3)
            result.update(
                after=rss_mib(proc.pid),
                sent=sent,
                received=len(times),
                max_gap_ms=max((b - a for a, b in itertools.pairwise(times)), default=0) * 1000,
                closed=closed_by_reason(admin),
            )
            receiving.cancel()
            await reader.close()
            return result
        finally:
            for sock in socks:
                sock.close()
            await asyncio.to_thread(proc.terminate, 10)  # (its upstream is served meanwhile)
            for f in workdir.iterdir():
                f.unlink()
            workdir.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--size", type=int, default=1024, help="bytes per message")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--policy", choices=["disconnect", "drop", "both"], default="both")
    parser.add_argument("--baseline", metavar="DIR", help="also run the Veylor of this checkout")
    args = parser.parse_args()
    raise_nofile()
    policies = ["disconnect", "drop"] if args.policy == "both" else [args.policy]
    runs = [("after", ROOT)]
    if args.baseline:
        runs.insert(0, ("before", Path(args.baseline).resolve()))
    print(
        f"{args.stalled} stalled clients, 1 reader, {args.rate:g} msg/s of {args.size} bytes for {args.seconds:g} s; "
        "default settings but slow_client\n"
    )
    print(
        "| Veylor | slow_client | RSS MiB: before, peak, 3 s after | host TCP memory, peak above before | "
        "kernel for Veylor's sockets, peak | stalled still held at the end | closed by reason | reader got | "
        "largest gap ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, tree), policy in itertools.product(runs, policies):
        r = asyncio.run(run(tree, args.stalled, args.rate, args.seconds, args.size, policy))
        closed = ", ".join(f"{k} {v}" for k, v in sorted(r["closed"].items())) or "none"
        print(
            f"| {name} | {policy} | {r['before']:.0f}, {r['peak']:.0f}, {r['after']:.0f} | "
            f"{r['tcp_peak'] / 2**20:.0f} MiB | {r['held_peak'] / 2**20:.0f} MiB | {r['still_held']} | {closed} | "
            f"{r['received']}/{r['sent']} | {r['max_gap_ms']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
