"""The benchmark's upstream feed: numbered, timestamped 200-byte messages, at a fixed rate
or as fast as the relay reads them.

    python benchmarks/upstream.py --port 9000 [--keys N]

With ``--keys N`` the symbol of message ``seq`` is ``K`` and six digits of ``seq % N``
(the same width as BTCUSDT): N keys, updated in turn, for latest-value delivery.

It prints ``listening PORT``, then ``relay connected`` for each connection, then reads
commands on standard input:

    go SECONDS RATE     send for SECONDS at RATE messages/s (0: as fast as possible),
                        then print {"sent": N, "first": SEQ, "last": SEQ, "seconds": T}
    seq                 print the next sequence number
    quit
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import time

from common import SIZE, SYMBOLS, message
from websockets.asyncio.server import ServerConnection, serve

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

WS_TEXT_HEADER = bytes((0x81, 126)) + SIZE.to_bytes(2, "big")


def realistic(kind: str, count: int = 512) -> list[bytes]:
    """Frames of a feed whose content compresses as a real one does (the benchmark's own
    messages are padded with one repeated byte): ``tick``, 200-byte trades, or ``book``,
    4 KiB order books (50 levels a side, prices and sizes on a random walk)."""
    rng = random.Random(7)
    price = 64_000.0
    out = []
    for i in range(count):
        price += rng.uniform(-5, 5)
        if kind == "tick":
            doc = (
                f'{{"e":"trade","E":{1764100000000 + i * 7},"s":"BTCUSDT","t":{381_000_000 + i},'
                f'"p":"{price:.2f}","q":"{rng.uniform(0.0001, 2):.5f}","T":{1764100000000 + i * 7 - 2},'
                f'"m":{"true" if rng.random() < 0.5 else "false"},"b":{rng.randrange(10**9)},"a":{rng.randrange(10**9)}}}'
            )
            size = SIZE
        else:
            bids = ",".join(
                f'["{price - k * 0.5 - rng.random():.2f}","{rng.uniform(0.001, 9):.4f}"]' for k in range(50)
            )
            asks = ",".join(
                f'["{price + k * 0.5 + rng.random():.2f}","{rng.uniform(0.001, 9):.4f}"]' for k in range(50)
            )
            doc = f'{{"e":"depthUpdate","E":{1764100000000 + i * 100},"s":"BTCUSDT","u":{i},"b":[{bids}],"a":[{asks}]}}'
            size = BOOK_SIZE
        payload = doc.encode()[:size].ljust(size)  # (JSON allows trailing spaces; cut: still a benchmark)
        out.append(bytes((0x81, 126)) + size.to_bytes(2, "big") + payload)
    return out


BOOK_SIZE = 4096


class Feed:
    def __init__(self, keys: int = 0, kind: str = "") -> None:
        self.relays: list[ServerConnection] = []
        self.seq = 0
        self.keys = keys
        self.pool = realistic(kind) if kind else []

    async def handler(self, conn: ServerConnection) -> None:
        # A small send buffer keeps backpressure tight: the feed cannot run megabytes
        # ahead of a slow relay into the kernel, and "sent" means handed to the relay.
        conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        self.relays.append(conn)
        print("relay connected", flush=True)
        try:
            await conn.wait_closed()
        finally:
            self.relays.remove(conn)

    def batch(self, n: int) -> bytes:
        if (
            self.pool
        ):  # (no number, no timestamp: what the relay does with its bytes is measured at the relay)
            pool = self.pool
            start = self.seq
            self.seq += n
            return b"".join(pool[(start + k) % len(pool)] for k in range(n))
        ts = time.time_ns()
        parts = []
        for _ in range(n):
            self.seq += 1
            symbol = b"K%06d" % (self.seq % self.keys) if self.keys else SYMBOLS[self.seq & 1]
            parts.append(WS_TEXT_HEADER + message(self.seq, ts, symbol))
        return b"".join(parts)

    async def write(self, data: bytes, deadline: float) -> bool:
        """Write to every relay; False when the deadline passed while a relay pushed back."""
        for conn in list(self.relays):
            conn.transport.write(data)  # whole frames; nothing else writes on this connection meanwhile
            try:
                await asyncio.wait_for(conn.drain(), max(0.001, deadline - time.monotonic()))
            except TimeoutError:
                return False
        return True

    async def run(self, seconds: float, rate: float) -> dict[str, float]:
        start = time.monotonic()
        deadline = start + seconds
        first_seq = self.seq
        if rate <= 0:  # as fast as the relay reads: TCP backpressure sets the pace
            while time.monotonic() < deadline:
                if not await self.write(self.batch(64), deadline):
                    break
        else:
            tick = 0.001
            while (elapsed := time.monotonic() - start) < seconds:
                due = int(elapsed * rate) - (self.seq - first_seq)
                if due > 0 and not await self.write(self.batch(due), deadline):
                    break
                await asyncio.sleep(tick)
        return {
            "sent": self.seq - first_seq,
            "first": first_seq + 1,
            "last": self.seq,
            "seconds": time.monotonic() - start,
        }


async def main(port: int, keys: int = 0, kind: str = "") -> None:
    feed = Feed(keys, kind)
    async with serve(
        feed.handler, "127.0.0.1", port, compression=None, ping_interval=None, max_size=2**20
    ) as server:
        print(f"listening {next(iter(server.sockets)).getsockname()[1]}", flush=True)
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        while line := (await reader.readline()).decode().split():
            if line[0] == "go":
                result = await feed.run(float(line[1]), float(line[2]))
                print(json.dumps(result), flush=True)
            elif line[0] == "seq":
                print(f"seq {feed.seq + 1}", flush=True)
            elif line[0] == "quit":
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--keys", type=int, default=0, help="symbols K000000.. cycling over N keys")
    parser.add_argument(
        "--feed", choices=["tick", "book"], default="", help="realistic content (compression)"
    )
    args = parser.parse_args()
    if uvloop is not None:
        uvloop.run(main(args.port, args.keys, args.feed))
    else:
        asyncio.run(main(args.port, args.keys, args.feed))
