"""The benchmark's clients: N WebSocket or Unix connections in one process, cheaply.

    python benchmarks/loadclient.py --url ws://127.0.0.1:8765/ -n 1000
    python benchmarks/loadclient.py --unix /tmp/v.sock -n 1000

Every benchmark frame has the same length (see common.py), so a read of k whole
frames is accounted for by looking at its first and last frame only: their headers,
their sequence numbers (gaps and reorders), and the last one's send timestamp (a
latency sample). Anything else (a ping, a reorder, a foreign frame) takes the slow
path that parses every frame. Pings are answered.

Prints ``ready N`` once every connection is open, then obeys standard input:
``reset [LO HI]`` (zero the counters; count only sequence numbers LO..HI),
``report`` (print one JSON line), ``blip N AWAY`` (N readers drop their connection and
come back AWAY seconds later with ``?since=`` the last number they read: resume),
``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import time

from common import FRAME, HEADER, SIZE, UNIX_HEADER, WS_HEADER, frame_head, masked, seq_of, ts_of
from harness import raise_nofile

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

MAX_SAMPLES = 200_000
DISCARD = False  # --discard: count the bytes read, nothing else (frames of any size, compressed)
OFFER = ""  # --deflate: the Sec-WebSocket-Extensions header offered
SPARSE = (
    False  # --sparse: numbers may skip (a conflated stream); a read of whole frames in order is counted whole
)


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self, lo: int = 0, hi: int = 2**62) -> None:
        self.lo, self.hi = lo, hi  # only messages with lo <= seq <= hi are counted
        self.samples: list[int] = []
        self.first_ns = 0
        self.last_ns = 0
        self.pings = 0
        self.foreign = 0
        self.slow_paths = 0
        self.bytes = 0  # (--discard) bytes read after the handshakes


class Client(asyncio.Protocol):
    __slots__ = (
        "carry",
        "closed",
        "count",
        "expected",
        "gaps",
        "handshake",
        "header",
        "ready",
        "reorders",
        "stall",
        "stats",
        "transport",
    )

    def __init__(self, stats: Stats, header: bytes, handshake: bytes | None, stall: bool) -> None:
        self.stats = stats
        self.header = header
        self.handshake = handshake  # request bytes for WebSocket; None for Unix
        self.stall = stall
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.carry = b""
        self.count = 0
        self.expected = -1
        self.gaps = 0
        self.reorders = 0
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        if self.handshake is not None:
            transport.write(self.handshake)
            self.handshake = b""  # now: bytes of the response read so far
        else:
            self._set_ready()

    def _set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        if self.stall:
            self.transport.pause_reading()

    def connection_lost(self, exc) -> None:  # type: ignore[no-untyped-def]
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during handshake: {exc}"))

    def data_received(self, data: bytes) -> None:
        if self.handshake is not None:
            self.handshake += data
            end = self.handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.handshake.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(self.handshake.split(b"\r\n")[0].decode()))
                self.transport.close()
                return
            data = self.handshake[end + 4 :]
            self.handshake = None
            self._set_ready()
            if not data:
                return
        if DISCARD:
            self.stats.bytes += len(data)
            return
        buf = self.carry + data if self.carry else data
        n, rem = divmod(len(buf), FRAME)
        if n == 0:
            self.carry = buf
            return
        last = (n - 1) * FRAME
        header = self.header
        if buf[:HEADER] == header and buf[last : last + HEADER] == header:
            first_seq = seq_of(buf, HEADER)
            last_seq = seq_of(buf, last + HEADER)
            dense = last_seq - first_seq == n - 1 and (first_seq == self.expected or self.expected < 0)
            sparse = SPARSE and last_seq - first_seq >= n - 1 and first_seq >= self.expected
            if dense or sparse:
                self.carry = buf[n * FRAME :] if rem else b""
                self.expected = last_seq + 1
                stats = self.stats
                counted = min(last_seq, stats.hi) - max(first_seq, stats.lo) + 1
                if sparse and not dense:  # (a conflated stream: n frames, numbers apart)
                    counted = n if first_seq >= stats.lo and last_seq <= stats.hi else 0
                if counted > 0:
                    self.count += counted
                    if last_seq <= stats.hi:
                        self._sample(ts_of(buf, last + HEADER))
                return
        self._slow(buf)

    def _sample(self, ts: int) -> None:
        stats = self.stats
        now = time.time_ns()
        if not stats.first_ns:
            stats.first_ns = now
        stats.last_ns = now
        if len(stats.samples) < MAX_SAMPLES:
            stats.samples.append(now - ts)
        elif random.random() < 0.01:
            stats.samples[random.randrange(MAX_SAMPLES)] = now - ts

    def _slow(self, buf: bytes) -> None:
        """Parse frame by frame (pings, unexpected sizes, gaps, reorders)."""
        self.stats.slow_paths += 1
        pos, end = 0, len(buf)
        ws = self.header != UNIX_HEADER
        last_ts = 0
        while (head := frame_head(buf, pos, ws)) is not None:
            opcode, start, length = head
            if end - start < length:
                break
            payload = buf[start : start + length]
            pos = start + length
            if opcode in (1, 2) and length == SIZE:
                seq = seq_of(payload)
                if self.expected >= 0 and seq != self.expected:
                    if seq > self.expected:
                        self.gaps += seq - self.expected
                    else:
                        self.reorders += 1
                self.expected = seq + 1
                if self.stats.lo <= seq <= self.stats.hi:
                    self.count += 1
                    last_ts = ts_of(payload)
            elif opcode == 9:  # ping: answer with a masked pong
                self.stats.pings += 1
                self.transport.write(masked(0xA, payload))
            elif opcode == 8:
                self.closed = True
            else:
                self.stats.foreign += 1
        self.carry = buf[pos:]
        if last_ts:
            self._sample(last_ts)


def ws_request(url: str) -> tuple[str, int, bytes]:
    assert url.startswith(("ws://", "wss://"))
    hostport, _, path = url.partition("://")[2].partition("/")
    host, _, port = hostport.partition(":")
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        + (f"Sec-WebSocket-Extensions: {OFFER}\r\n" if OFFER else "")
        + "\r\n"
    )
    return host, int(port or 80), request.encode()


def percentile(sorted_values: list[int], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))] / 1e6  # ms


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    loop = asyncio.get_running_loop()
    stats = Stats()
    clients: list[Client] = []
    tls = None
    if args.url and args.url.startswith("wss://"):  # (a benchmark's own certificate: not checked)
        import ssl

        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE

    async def open_one(i: int) -> None:
        stall = i < args.stall
        if args.unix:
            client = Client(stats, UNIX_HEADER, None, stall)
            for attempt in range(100):  # a full listen backlog answers EAGAIN on Unix sockets
                try:
                    await loop.create_unix_connection(lambda: client, args.unix)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.01 * (attempt + 1))
        else:
            host, port, request = ws_request(args.url)
            client = Client(stats, WS_HEADER, request, stall)
            await loop.create_connection(lambda: client, host, port, ssl=tls)
        clients.append(client)
        await asyncio.wait_for(client.ready, 30)

    async def come_back(old: Client) -> None:
        """A reader that dropped connects again, asking for what it missed: the messages after
        the last it read (its counters go on: a gap or a duplicate shows there)."""
        host, port, request = ws_request(
            f"{args.url}{'&' if '?' in args.url else '?'}since={old.expected - 1}"
        )
        new = Client(stats, WS_HEADER, request, False)
        new.count, new.expected, new.gaps, new.reorders = old.count, old.expected, old.gaps, old.reorders
        await loop.create_connection(lambda: new, host, port)
        await asyncio.wait_for(new.ready, 30)
        clients[clients.index(old)] = new

    for start in range(0, args.n, 200):
        await asyncio.gather(*(open_one(i) for i in range(start, min(args.n, start + 200))))
    print(f"ready {len(clients)}", flush=True)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while words := (await reader.readline()).decode().split():
        if words[0] == "reset":
            stats.reset(*map(int, words[1:3]))
            for c in clients:
                c.count = c.gaps = c.reorders = 0
            print("ok", flush=True)
        elif words[0] == "reset-window":  # narrow the counted range without zeroing
            stats.lo, stats.hi = int(words[1]), int(words[2])
        elif words[0] == "report":
            readers = [c for c in clients if not c.stall]
            counts = [c.count for c in readers]
            samples = sorted(stats.samples)
            span = (stats.last_ns - stats.first_ns) / 1e9
            report = {
                "clients": len(clients),
                "open": sum(not c.closed for c in clients),
                "stalled_open": sum(not c.closed for c in clients if c.stall),
                "delivered": sum(counts),
                "min_per_client": min(counts, default=0),
                "max_per_client": max(counts, default=0),
                "gaps": sum(c.gaps for c in readers),
                "reorders": sum(c.reorders for c in readers),
                "span_s": span,
                "p50_ms": percentile(samples, 0.50),
                "p99_ms": percentile(samples, 0.99),
                "max_ms": samples[-1] / 1e6 if samples else float("nan"),
                "samples": len(samples),
                "pings": stats.pings,
                "slow_paths": stats.slow_paths,
                "bytes": stats.bytes,
            }
            print(json.dumps(report), flush=True)
        elif words[0] == "blip":  # blip N AWAY: N readers drop, and come back AWAY s later with ?since=
            gone = [c for c in clients if not c.stall][: int(words[1])]
            for c in gone:
                c.transport.abort()
            await asyncio.sleep(float(words[2]))
            await asyncio.gather(*(come_back(c) for c in gone))
            print(f"blipped {len(gone)}", flush=True)
        elif words[0] == "quit":
            break
    for c in clients:
        if c.transport is not None:
            c.transport.abort()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url")
    target.add_argument("--unix")
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--stall", type=int, default=0, help="this many clients never read")
    parser.add_argument(
        "--sparse", action="store_true", help="numbers may skip (conflation): count reads whole"
    )
    parser.add_argument("--discard", action="store_true", help="count bytes only (any frames, compressed)")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    arguments = parser.parse_args()
    SPARSE = arguments.sparse
    DISCARD = arguments.discard
    OFFER = "permessage-deflate; client_max_window_bits" if arguments.deflate else ""
    if uvloop is not None:
        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
