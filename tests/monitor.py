"""The witness of the hostile-input tests, in a process of its own: an upstream feed and a
control client, so that what an attack costs Veylor is measured where the attack
cannot reach (the test process is busy attacking).

    python tests/monitor.py

Prints ``upstream PORT`` once its upstream listens. Then reads commands on stdin:

- ``connect URL``: connect the control client to Veylor; prints ``connected``;
- ``reset``: forget what was received so far (the measure starts now);
- ``report``: prints one JSON line: messages sent and received, lost (sequence
  numbers missing), reordered, the largest gap between two deliveries in ms, and on
  the upstream's side: connections made, messages received from Veylor, and the
  connections that ended with an error (an invalid UTF-8 text frame: 1007);
- ``send TEXT``: send this text message to every Veylor connection of the upstream;
- ``raw HEX``: send these bytes as one raw WebSocket frame to every Veylor
  connection of the upstream (a faulty upstream: invalid UTF-8 in a text frame...);
- ``feed RATE PAD``: from now on, RATE messages a second, each padded to about PAD
  bytes (``feed 200 100`` is the default);
- ``quit``.

The feed: one text message every 5 ms (200 msg/s), ``{"seq": N, ...}``, on every
connection to the upstream, whatever its path.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

INTERVAL = 0.005


class Monitor:
    def __init__(self) -> None:
        self.feeds: set[ServerConnection] = set()
        self.sent = 0
        self.seqs: list[int] = []
        self.times: list[float] = []
        self.client_task: asyncio.Task[None] | None = None
        self.closed: str | None = None
        self.connections = 0  # to the upstream, ever
        self.upstream_received = 0  # messages Veylor sent upstream
        self.upstream_errors: list[str] = []  # connections to the upstream that ended badly
        self.interval = INTERVAL
        self.pad = "x" * 100

    async def handler(self, conn: ServerConnection) -> None:
        self.feeds.add(conn)
        self.connections += 1
        try:
            async for _ in conn:  # what clients send upstream (websockets checks UTF-8)
                self.upstream_received += 1
        except ConnectionClosed:
            pass
        finally:
            self.feeds.discard(conn)
            if conn.close_code not in (1000, 1001):
                self.upstream_errors.append(f"{conn.close_code} {conn.close_reason}")

    async def pump(self) -> None:
        start, base = time.monotonic(), 0
        interval = self.interval
        while True:
            if interval != self.interval:  # (feed): the new rate counts from now
                start, base, interval = time.monotonic(), self.sent, self.interval
            due = base + int((time.monotonic() - start) / interval) - self.sent
            for _ in range(due):
                self.sent += 1
                text = json.dumps({"seq": self.sent, "s": "BTCUSDT", "pad": self.pad})
                for conn in list(self.feeds):
                    try:
                        await conn.send(text)
                    except ConnectionClosed:
                        pass
            await asyncio.sleep(INTERVAL / 2)

    async def receive(self, url: str, ready: asyncio.Event) -> None:
        async with connect(url, open_timeout=10, max_size=None, max_queue=None) as ws:
            ready.set()
            try:
                async for message in ws:
                    now = time.monotonic()
                    try:
                        seq = json.loads(message)["seq"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    self.seqs.append(seq)
                    self.times.append(now)
            except ConnectionClosed as exc:
                self.closed = f"closed: {exc}"

    def report(self) -> dict[str, object]:
        seqs = self.seqs
        lost = (seqs[-1] - seqs[0] + 1 - len(set(seqs))) if seqs else 0
        reordered = sum(1 for a, b in itertools.pairwise(seqs) if b < a)
        gaps = [b - a for a, b in itertools.pairwise(self.times)]
        silent = time.monotonic() - self.times[-1] if self.times else 0.0
        return {
            "sent": self.sent,
            "received": len(seqs),
            "lost": lost,
            "reordered": reordered,
            "max_gap_ms": round(max([*gaps, silent]) * 1000, 1),
            "closed": self.closed,
            "connections": self.connections,
            "upstream_received": self.upstream_received,
            "upstream_errors": self.upstream_errors,
        }


async def main() -> None:
    monitor = Monitor()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with serve(monitor.handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"upstream {port}", flush=True)
        pump = asyncio.create_task(monitor.pump())
        while line := (await reader.readline()).decode().strip():
            command, _, arg = line.partition(" ")
            if command == "connect":
                ready = asyncio.Event()
                monitor.client_task = asyncio.create_task(monitor.receive(arg, ready))
                await asyncio.wait_for(ready.wait(), 10)
                print("connected", flush=True)
            elif command == "reset":
                monitor.seqs, monitor.times = monitor.seqs[-1:], monitor.times[-1:]
                print("ok", flush=True)
            elif command == "report":
                print(json.dumps(monitor.report()), flush=True)
            elif command == "raw":
                frame = bytes.fromhex(arg)
                for conn in list(monitor.feeds):
                    conn.transport.write(frame)
                print("ok", flush=True)
            elif command == "send":
                for conn in list(monitor.feeds):
                    await conn.send(arg)
                print("ok", flush=True)
            elif command == "feed":
                rate, pad = arg.split()
                monitor.interval, monitor.pad = 1 / float(rate), "x" * int(pad)
                print("ok", flush=True)
            elif command == "quit":
                break
        pump.cancel()


if __name__ == "__main__":
    asyncio.run(main())
