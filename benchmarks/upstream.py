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


class Feed:
    def __init__(self, keys: int = 0) -> None:
        self.relays: list[ServerConnection] = []
        self.seq = 0
        self.keys = keys

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


async def main(port: int, keys: int = 0) -> None:
    feed = Feed(keys)
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
    args = parser.parse_args()
    if uvloop is not None:
        uvloop.run(main(args.port, args.keys))
    else:
        asyncio.run(main(args.port, args.keys))
