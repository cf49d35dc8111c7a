"""The slow-client benchmark's laggard: one WebSocket client that stops reading, then reads
again, and checks that it caught up (``slow_client: conflate``).

    python benchmarks/staller.py --url ws://127.0.0.1:8765/slow --keys 1000

It connects with a small receive buffer and reads nothing (the kernel's buffers fill,
then Veylor's), prints ``ready``, then obeys standard input:

``resume S``  read again, every frame parsed; the feed had sent up to message ``S``
              (the key of message ``seq`` is ``seq % keys``), so the latest value of
              key ``k`` then was message ``S - (S - k) % keys``. Print one JSON line once
              every key is at least there (or after 30 s): the seconds it took, the
              messages read, and any key that went back (an older value after a newer
              one); then read live for 2 s more and report gaps there.
``quit``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time

from common import frame_head, masked, seq_of
from loadclient import ws_request

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


class Staller(asyncio.Protocol):
    def __init__(self, keys: int, request: bytes) -> None:
        self.keys = keys
        self.request: bytes | None = request
        self.head = b""
        self.buf = bytearray()
        self.latest = [0] * keys  # the newest message number read of each key
        self.backwards = 0  # a key's value older than one read before
        self.read = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last = 0  # the last message number read

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc) -> None:  # type: ignore[no-untyped-def]
        self.closed = True

    def data_received(self, data: bytes) -> None:
        if self.request is not None:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.request = None
            data = self.head[end + 4 :]
            self.transport.pause_reading()  # it stalls
            self.ready.set_result(None)
        self.buf += data
        pos, buf = 0, self.buf
        while (head := frame_head(buf, pos, True)) is not None:
            opcode, start, length = head
            if len(buf) - start < length:
                break
            payload = bytes(buf[start : start + length])
            pos = start + length
            if opcode == 1:
                seq = seq_of(payload)
                key = seq % self.keys
                if seq <= self.latest[key]:
                    self.backwards += 1
                self.latest[key] = seq
                self.last = seq
                self.read += 1
            elif opcode == 9:
                self.transport.write(masked(0xA, payload))
        del buf[:pos]

    def caught_up(self, sent: int) -> bool:
        keys = self.keys
        latest = self.latest
        return all(latest[k] >= sent - (sent - k) % keys for k in range(keys))


async def main(url: str, keys: int, rcvbuf: int) -> None:
    loop = asyncio.get_running_loop()
    host, port, request = ws_request(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, port))
    staller = Staller(keys, request)
    await loop.create_connection(lambda: staller, sock=sock)
    await asyncio.wait_for(staller.ready, 30)
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while words := (await reader.readline()).decode().split():
        if words[0] == "resume":
            sent = int(words[1])
            started = time.monotonic()
            staller.transport.resume_reading()
            while not staller.caught_up(sent) and time.monotonic() - started < 30 and not staller.closed:
                await asyncio.sleep(0.005)
            took = time.monotonic() - started
            done = staller.caught_up(sent)
            read = staller.read
            before = staller.last
            await asyncio.sleep(2.0)  # live again
            print(
                json.dumps(
                    {
                        "caught_up": done,
                        "seconds": took,
                        "read_to_catch_up": read,
                        "backwards": staller.backwards,
                        "live_read": staller.read - read,
                        "live_last": staller.last,
                        "last_before_live": before,
                        "open": not staller.closed,
                    }
                ),
                flush=True,
            )
        elif words[0] == "quit":
            break
    if staller.transport is not None:
        staller.transport.abort()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--keys", type=int, default=1000)
    # (not smaller: over loopback, a window that reopens by less than its 64 KiB segment is
    # not announced, and the relay learns of it at its zero-window probes, seconds apart)
    parser.add_argument("--rcvbuf", type=int, default=262144)
    args = parser.parse_args()
    (uvloop.run if uvloop is not None else asyncio.run)(main(args.url, args.keys, args.rcvbuf))
