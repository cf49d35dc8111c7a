"""Veylor's soak test: a long run under churn, reloads, stalled clients and upstream restarts.

    .venv/bin/python benchmarks/soak.py                  # 30 minutes, the issue's figures
    .venv/bin/python benchmarks/soak.py --minutes 2 --json
    .venv/bin/python benchmarks/soak.py --rate 500 --ws-clients 50 --unix-clients 20

One upstream (a process of its own, numbered 200-byte messages at ``--rate`` msg/s) feeds
Veylor (``python -m veylor -c CONFIG``, a real subprocess, admin endpoint on 127.0.0.1),
which relays to ``--ws-clients`` WebSocket and ``--unix-clients`` Unix clients that stay
connected for the whole run (one process, raw non-blocking sockets on one epoll). Meanwhile:

- churn (another process): ``--churn-rate`` connections a second come and go; a quarter of
  them (``--abort-share``) abort the opening: TCP connect then FIN or RST before, in the
  middle of, or right after sending the HTTP upgrade request; Unix connect then close at
  once. The others complete the handshake, read for 0.2-3 s and leave with a close frame,
  a FIN or an RST (Unix: close);
- a reload every ``--reload-every`` seconds, alternating two configurations that differ in
  one route (a drop-in renamed into place, then POST /reload and SIGHUP in turn; each
  reload is checked applied: generation + 1, the route present or absent in /graph).
  Veylor runs with ``--no-watch``, so that each reload is exactly the one triggered;
- a stalled client every ``--stall-every`` seconds (WebSocket and Unix in turn: it connects
  and never reads); Veylor must drop it: its ``stall_timeout`` (10 s) or its ``slow_client``
  policy (``disconnect``), whichever comes first;
- an upstream restart every ``--restart-every`` seconds: the upstream process is killed
  (SIGKILL, in the middle of its stream) and started again on the same port 2 s later.
  The outage is announced: Veylor's ``messages_in`` counter says how many messages of the
  killed upstream reached it (the last ones written may die in the kernel), so the last
  number sent while connected, L, is known; the new upstream numbers from
  L + 1 + rate x downtime (the messages a live feed would have sent meanwhile, not
  expected).

Every message is a pure function of its number (common.py's layout, timestamp 0), so a
client checks what it reads byte for byte against the expected stream (one ``bytes``
comparison per read; frames are parsed only at a ping or a discontinuity). A staying
client must have received every number from the start of the measured window to its end,
in order, without duplicates, with discontinuities only at the announced outages, from
L to the next upstream's first number.

Measured at the start, during the run and after it. The start is taken after a warm-up
that does each activity once (both configurations by both triggers, ``--warmup`` seconds
of churn, one stalled client until Veylor drops it): the first stalled client raises the
allocator's high-water mark by about 6 MiB that glibc keeps and later stalls reuse (Veylor
calls ``malloc_trim`` only after laggards held 32 MiB), a one-time cost, not growth; RSS
at launch and once the staying clients are connected are reported too. The end is taken
after the churn has stopped and the last stalled client is gone, then ``--settle``
seconds of the steady feed with nothing else (memory is left to settle by itself: nothing
can make Veylor collect or trim from outside). Reported: Veylor's RSS (start, peak, end:
the median of the last 5 one-second samples of the settle; the end must be within 10% of
the start), its open file descriptors and /graph's ``tasks`` (back to the start), and the
clients Veylor reports (/graph) against the connections it really holds (its socket fds
from /proc/PID/fd matched with /proc/PID/net/tcp, tcp6 and unix: established TCP
connections on the WebSocket port, connected Unix sockets at the endpoint's path, and no
socket that no table lists, such as a connection reset by its peer but never closed) and
against the clients known to be connected, at a checkpoint every minute (churn paused
for about a second) and at the end. A human report, or JSON with ``--json``; the exit
status is 1 if any check fails. Everything runs on 127.0.0.1 and in a temporary
directory (kept, with every process's log, when a check fails); every process started is
killed on exit (Ctrl-C, SIGTERM, and the driver's own death included).

Internal roles, started by the driver: ``soak.py upstream|clients|churn ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import os
import platform
import queue
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import FRAME, SEQ_AT, SEQ_LEN, SIZE, SYMBOLS, UNIX_HEADER, WS_HEADER, message  # noqa: E402
from harness import fd_count, free_port, rss_mib  # noqa: E402

PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")
DOWNTIME = 2.0  # seconds an upstream stays dead before it is started again
STALL_DEADLINE = 60.0  # seconds a stalled client may stay connected (at least) before that is a failure
STALL_BYTES = 6 * 2**20  # what a stalled client takes before its policy applies: client_buffer (4 MiB),
# the kernel's send buffer (64 KiB, doubled by Linux) and its receive buffer, with a margin (its
# stall_timeout, 10 s, may come first)
RSS_TOLERANCE = 0.10  # end RSS within 10% of the start
DEAD_SOCKET_GRACE = 15.0  # seconds Veylor may keep a socket that is no longer a connection
MAX_RUNS = 10_000  # discontinuities kept per client (a broken relay must not exhaust memory)


def payload(seq: int) -> bytes:
    """Message number ``seq``: always the same bytes (timestamp 0)."""
    return message(seq, 0, SYMBOLS[seq & 1])


# ---------------------------------------------------------------------------- the checker


class Expected:
    """The byte stream a client should read, one wire's framing: frames of consecutive
    numbers, made in chunks on demand and shared by every client of that wire."""

    CHUNK = 4096  # frames per chunk (about 2 s at 2,000 msg/s)
    KEEP = 12  # chunks kept (oldest made first out)

    def __init__(self, header: bytes) -> None:
        self.header = header
        self.chunks: dict[int, bytes] = {}

    def chunk(self, i: int) -> bytes:
        c = self.chunks.get(i)
        if c is None:
            header = self.header
            base = i * self.CHUNK
            c = b"".join([header + payload(s) for s in range(base, base + self.CHUNK)])
            if len(self.chunks) >= self.KEEP:
                del self.chunks[next(iter(self.chunks))]
            self.chunks[i] = c
        return c

    def get(self, seq: int, off: int, n: int) -> bytes:
        """``n`` bytes of the expected stream from byte ``off`` of frame ``seq``."""
        i, r = divmod(seq, self.CHUNK)
        start = r * FRAME + off
        c = self.chunk(i)
        end = start + n
        if end <= len(c):
            return c[start:end]
        parts = [c[start:]]
        need = end - len(c)
        while need > 0:
            i += 1
            c = self.chunk(i)
            parts.append(c[:need])
            need -= len(c)
        return b"".join(parts)


class Stream:
    """What one client read, checked against :class:`Expected`.

    ``runs``: the contiguous ranges of numbers received, in order ([first, last] each); a
    new run starts at each discontinuity. ``back``: frames whose number did not go up (a
    duplicate or a reorder); ``corrupt``: frames that are not exactly the expected bytes.
    """

    __slots__ = (
        "back",
        "carry",
        "closed",
        "corrupt",
        "e",
        "exp",
        "foreign",
        "off",
        "pings",
        "pong",
        "runs",
        "ws",
    )

    def __init__(self, exp: Expected, ws: bool, pong) -> None:  # type: ignore[no-untyped-def]
        self.exp = exp
        self.ws = ws
        self.pong = pong
        self.e: int | None = None  # the next number expected
        self.off = 0  # bytes of frame e already read (and matched)
        self.carry = b""  # bytes not yet understood (slow path)
        self.runs: list[list[int]] = []
        self.back = 0
        self.corrupt = 0
        self.foreign = 0
        self.pings = 0
        self.closed = False  # a close frame came

    def feed(self, data: bytes) -> None:
        e = self.e
        if e is not None and not self.carry:
            if data == self.exp.get(e, self.off, len(data)):  # nearly always: one memcmp
                n, self.off = divmod(self.off + len(data), FRAME)
                if n:
                    self.e = e + n
                    self.runs[-1][1] = e + n - 1
                return
            if self.off:
                data = self.exp.get(e, 0, self.off) + data  # back to the frame's start
                self.off = 0
        elif self.carry:
            data = self.carry + data
            self.carry = b""
        self._slow(data)

    def _slow(self, buf: bytes) -> None:
        pos, end = 0, len(buf)
        while True:
            if self.ws:
                if end - pos < 2:
                    break
                b0, b1 = buf[pos], buf[pos + 1]
                opcode, length, start = b0 & 0x0F, b1 & 0x7F, pos + 2
                if length == 126:
                    if end - pos < 4:
                        break
                    (length,) = struct.unpack_from("!H", buf, pos + 2)
                    start = pos + 4
                elif length == 127:
                    if end - pos < 10:
                        break
                    (length,) = struct.unpack_from("!Q", buf, pos + 2)
                    start = pos + 10
            else:
                if end - pos < 4:
                    break
                (length,) = struct.unpack_from("!I", buf, pos)
                opcode, start = 1, pos + 4
            if end - start < length:
                break
            body = buf[start : start + length]
            frame_end = start + length
            if opcode == 1 and length == SIZE:
                try:
                    seq = int(body[SEQ_AT : SEQ_AT + SEQ_LEN])
                except ValueError:
                    seq = -1
                if seq < 0 or buf[pos:frame_end] != self.exp.get(seq, 0, FRAME):
                    self.corrupt += 1
                else:
                    self._number(seq)
            elif opcode == 9:
                self.pings += 1
                self.pong(body)
            elif opcode == 8:
                self.closed = True
            elif opcode != 10:
                self.foreign += 1
            pos = frame_end
        rem = buf[pos:]
        if rem and self.e is not None and rem == self.exp.get(self.e, 0, len(rem)):
            self.off = len(rem)
        else:
            self.carry = rem

    def _number(self, seq: int) -> None:
        e = self.e
        if e is not None and seq == e:
            self.runs[-1][1] = seq
        else:
            if e is not None and seq < e:
                self.back += 1
            if len(self.runs) < MAX_RUNS:
                self.runs.append([seq, seq])
        self.e = seq + 1


def ws_request(port: int, path: str = "/") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def masked(opcode: int, body: bytes) -> bytes:
    """A client-to-server frame (masked), for pongs and close frames (< 126 bytes)."""
    mask = os.urandom(4)
    return (
        bytes((0x80 | opcode, 0x80 | len(body))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(body))
    )


class Conn:
    """One client socket (non-blocking) with its checker; WebSocket or Unix."""

    __slots__ = ("closed_at", "deadline", "eof", "fd", "hs", "kind", "mode", "sock", "stream")

    def __init__(self, sock: socket.socket, kind: str, exps: dict[str, Expected]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.kind = kind  # "ws" or "unix"
        ws = kind == "ws"
        self.hs: bytes | None = b"" if ws else None  # the handshake's response, until complete
        self.stream = Stream(exps[kind], ws, self.pong)
        self.eof = False
        self.closed_at = 0.0
        self.deadline = 0.0  # churn: when it leaves
        self.mode = ""  # churn: how it leaves

    def pong(self, body: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(masked(0xA, body))

    def readable(self) -> bool:
        """Read what is there; False when the connection ended."""
        try:
            data = self.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        if self.hs is not None:
            self.hs += data
            end = self.hs.find(b"\r\n\r\n")
            if end < 0:
                return True
            if not self.hs.startswith(b"HTTP/1.1 101"):
                self.eof = True
                return False
            data = self.hs[end + 4 :]
            self.hs = None
            if not data:
                return True
        self.stream.feed(data)
        return True


def connect(kind: str, ws_port: int, unix_path: str, rcvbuf: int = 0) -> socket.socket:
    """A connected socket (blocking connect on loopback), made non-blocking."""
    if kind == "ws":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", ws_port))
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        for attempt in range(50):  # a full backlog answers EAGAIN on Unix sockets
            try:
                sock.connect(unix_path)
                break
            except BlockingIOError:
                time.sleep(0.01 * (attempt + 1))
    sock.setblocking(False)
    return sock


def rst(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int | str = "self") -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Commands:
    """Lines on standard input, read without blocking (the roles' control channel)."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.eof = False

    def lines(self) -> list[str]:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        if not data:
            self.eof = True
            return ["quit"]
        self.buf += data
        *done, self.buf = self.buf.split(b"\n")
        return [line.decode().strip() for line in done if line.strip()]


def say(obj: object) -> None:
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------- role: upstream


def upstream_main(args: argparse.Namespace) -> None:
    """Numbered messages at a fixed rate to every relay connected, from ``--start``.

    Prints ``listening PORT``; ``relay connected`` per connection. Commands: ``seq``
    (prints ``seq N``: the next number), ``stop`` (stops sending; prints ``stopped LAST``)."""
    import asyncio

    from websockets.asyncio.server import serve

    header = bytes((0x81, 126)) + SIZE.to_bytes(2, "big")
    relays: list = []
    state = {"next": args.start, "stopped": False}

    async def handler(conn) -> None:  # type: ignore[no-untyped-def]
        conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 18)
        relays.append(conn)
        say("relay connected")
        try:
            await conn.wait_closed()
        finally:
            relays.remove(conn)

    async def send() -> None:
        rate = args.rate
        base_t = base_seq = None
        while True:
            await asyncio.sleep(args.tick_ms / 1000)  # what is due, in one write: one fan-out pass
            if not relays or state["stopped"]:
                base_t = None
                continue
            now = time.monotonic()
            if base_t is None:
                base_t, base_seq = now, state["next"]
            due = int((now - base_t) * rate) - (state["next"] - base_seq)
            if due <= 0:
                continue
            first = state["next"]
            state["next"] = first + due
            data = b"".join([header + payload(s) for s in range(first, first + due)])
            for conn in list(relays):
                conn.transport.write(data)  # whole frames; nothing else writes meanwhile

    async def main() -> None:
        async with serve(
            handler, "127.0.0.1", args.port, compression=None, ping_interval=None, max_size=2**20
        ) as server:
            say(f"listening {next(iter(server.sockets)).getsockname()[1]}")
            sender = asyncio.create_task(send())
            commands = Commands()
            while not commands.eof:
                for line in commands.lines():
                    if line == "seq":
                        say(f"seq {state['next']}")
                    elif line == "stop":
                        state["stopped"] = True
                        say(f"stopped {state['next'] - 1}")
                    elif line == "quit":
                        commands.eof = True
                await asyncio.sleep(0.02)
            sender.cancel()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover
        asyncio.run(main())


# ---------------------------------------------------------------------------- role: clients


def clients_main(args: argparse.Namespace) -> None:
    """The staying clients: ``--ws`` WebSocket and ``--unix`` Unix connections on one epoll.

    Prints ``ready N``. Commands: ``progress`` (the lowest and highest next number
    expected, clients open), ``report`` (every client's runs and counters), ``quit``.
    Reads in batches: after each poll it sleeps ``--batch-ms``, so that each read takes
    tens of frames at once (few system calls; one comparison per read)."""
    raise_nofile()
    exps = {"ws": Expected(WS_HEADER), "unix": Expected(UNIX_HEADER)}
    conns: list[Conn] = []
    for i in range(args.ws + args.unix):
        kind = "ws" if i < args.ws else "unix"
        sock = connect(kind, args.port, args.path)
        c = Conn(sock, kind, exps)
        if kind == "ws":
            sock.send(ws_request(args.port))
        conns.append(c)
    ep = select.epoll()
    by_fd = {c.fd: c for c in conns}
    for c in conns:
        ep.register(c.fd, select.EPOLLIN)
    deadline = time.monotonic() + 60
    while any(c.hs is not None and not c.eof for c in conns):
        if time.monotonic() > deadline:
            say("failed: handshakes did not complete")
            return
        for fd, _ in ep.poll(0.1):
            c = by_fd[fd]
            if not c.readable():
                ep.unregister(fd)
                c.closed_at = time.time()
    failed = sum(c.eof for c in conns)
    say(f"ready {len(conns) - failed}" if not failed else f"failed: {failed} handshakes refused")
    commands = Commands()
    ep.register(commands.fd, select.EPOLLIN)
    batch = args.batch_ms / 1000
    cpu0 = cpu_seconds()
    t0 = time.monotonic()
    while True:
        started = time.monotonic()
        for fd, _ in ep.poll(1.0):
            c = by_fd.get(fd)
            if c is not None:
                if not c.readable():
                    ep.unregister(fd)
                    c.closed_at = time.time()
                continue
            for line in commands.lines():
                if line == "progress":
                    nexts = [c.stream.e or 0 for c in conns]
                    say(
                        {
                            "min_next": min(nexts),
                            "max_next": max(nexts),
                            "open": sum(not c.eof for c in conns),
                        }
                    )
                elif line == "report":
                    say(
                        {
                            "cpu_s": cpu_seconds() - cpu0,
                            "wall_s": time.monotonic() - t0,
                            "clients": [
                                {
                                    "kind": c.kind,
                                    "runs": c.stream.runs,
                                    "back": c.stream.back,
                                    "corrupt": c.stream.corrupt,
                                    "foreign": c.stream.foreign,
                                    "pings": c.stream.pings,
                                    "close_frame": c.stream.closed,
                                    "closed_at": c.closed_at if c.eof else None,
                                }
                                for c in conns
                            ],
                        }
                    )
                elif line == "quit":
                    for c in conns:
                        c.sock.close()
                    return
        spent = time.monotonic() - started
        if spent < batch:
            time.sleep(batch - spent)


# ---------------------------------------------------------------------------- role: churn

TCP_ABORTS = (
    "fin-at-once",
    "rst-at-once",
    "fin-mid-request",
    "rst-mid-request",
    "fin-after-request",
    "rst-after-request",
)
LEAVES = ("close-frame", "fin", "rst")


def churn_main(args: argparse.Namespace) -> None:
    """Clients that come and go, ``--rate`` a second (see the module docstring).

    Commands: ``pause`` (no new connections; the open ones are closed now; prints
    ``paused``), ``resume``, ``report``, ``quit``."""
    raise_nofile()
    rnd = random.Random(args.seed)
    exps = {"ws": Expected(WS_HEADER), "unix": Expected(UNIX_HEADER)}
    request = ws_request(args.port)
    ep = select.epoll()
    conns: dict[int, Conn] = {}
    made: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    gaps: Counter[tuple[int, int]] = Counter()  # (last before, first after) of every discontinuity
    totals = Counter()
    paused = args.paused
    interval = 1.0 / args.rate
    next_at = time.monotonic()
    commands = Commands()
    ep.register(commands.fd, select.EPOLLIN)

    def finish(c: Conn) -> None:
        s = c.stream
        runs = s.runs
        for a, b in itertools.pairwise(runs):
            gaps[(a[1], b[0])] += 1
        totals["frames"] += sum(b - a + 1 for a, b in runs)
        totals["back"] += s.back
        totals["corrupt"] += s.corrupt
        totals["foreign"] += s.foreign
        totals["pings"] += s.pings
        if s.closed and c.mode != "close-frame":
            problems["closed by Veylor (close frame)"] += 1

    def drop(c: Conn, how: str) -> None:
        with contextlib.suppress(KeyError, OSError):
            ep.unregister(c.fd)
        conns.pop(c.fd, None)
        finish(c)
        if how == "rst" and c.kind == "ws":
            rst(c.sock)
        else:
            c.sock.close()

    def start_one() -> None:
        kind = "unix" if rnd.random() < args.unix_share else "ws"
        abort = rnd.random() < args.abort_share
        try:
            sock = connect(kind, args.port, args.path)
        except OSError as exc:
            problems[f"connect failed: {exc.strerror or exc}"] += 1
            return
        if abort:
            if kind == "unix":
                made["unix abort: close at once"] += 1
                sock.close()
                return
            mode = rnd.choice(TCP_ABORTS)
            made[f"ws abort: {mode}"] += 1
            with contextlib.suppress(OSError):
                if "mid-request" in mode:
                    sock.send(request[: rnd.randrange(1, len(request) - 4)])
                elif "after-request" in mode:
                    sock.send(request)
            if mode.startswith("rst"):
                rst(sock)
            else:
                sock.close()
            return
        c = Conn(sock, kind, exps)
        c.mode = rnd.choice(LEAVES) if kind == "ws" else "fin"
        c.deadline = time.monotonic() + rnd.uniform(0.2, 3.0)
        made[f"{kind} full: leaves with {c.mode}"] += 1
        if kind == "ws":
            try:
                sock.send(request)
            except OSError:
                problems["send of the request failed"] += 1
                sock.close()
                return
        conns[c.fd] = c
        ep.register(c.fd, select.EPOLLIN)

    def leave(c: Conn) -> None:
        if c.mode == "close-frame" and c.hs is None and not c.eof and c.deadline > 0:
            with contextlib.suppress(OSError):
                c.sock.send(masked(0x8, struct.pack("!H", 1000)))
            c.deadline = -(time.monotonic() + 1.0)  # now wait (1 s at most) for Veylor to close
            return
        drop(c, c.mode)

    while True:
        now = time.monotonic()
        while not paused and now >= next_at:
            start_one()
            next_at += interval
            if now - next_at > 1.0:  # fell behind (a busy machine): do not burst
                next_at = now
        for c in list(conns.values()):
            if 0 < c.deadline <= now or (c.deadline < 0 and -c.deadline <= now):
                leave(c) if c.deadline > 0 else drop(c, "fin")
        for fd, _ in ep.poll(0.02):
            c = conns.get(fd)
            if c is not None:
                was_handshaking = c.hs is not None
                if not c.readable():
                    if c.deadline < 0:
                        drop(c, "fin")  # Veylor closed after our close frame: as expected
                    else:
                        problems[
                            "handshake refused or closed" if was_handshaking else "closed by Veylor"
                        ] += 1
                        drop(c, "fin")
                continue
            for line in commands.lines():
                if line == "pause":
                    paused = True
                    for c in list(conns.values()):
                        drop(c, "fin")
                    say("paused")
                elif line == "resume":
                    paused = False
                    next_at = time.monotonic()
                elif line == "report":
                    say(
                        {
                            "made": dict(made),
                            "connections": sum(made.values()),
                            "problems": dict(problems),
                            "gaps": [[a, b, n] for (a, b), n in gaps.items()],
                            "open": len(conns),
                            "cpu_s": cpu_seconds(),
                            **totals,
                        }
                    )
                elif line == "quit":
                    for c in list(conns.values()):
                        drop(c, "fin")
                    return


# ---------------------------------------------------------------------------- the driver


def die_with_parent() -> None:
    """A ``preexec_fn``: the child gets SIGKILL when the driver dies, however it dies (a
    test's timeout kills the driver with SIGKILL; nothing of the run must outlive it)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Child:
    """A process of this run: own session (killed as a group), stdout lines on a queue;
    it dies with the driver."""

    def __init__(self, args: list[str], log: Path | None = None, cwd: Path = ROOT) -> None:
        self.p = subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log, "ab") if log else None,  # noqa: SIM115
            start_new_session=True,
            preexec_fn=die_with_parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.pid = self.p.pid
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.p.stdout:  # type: ignore[union-attr]
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put("")  # EOF

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no {prefix!r} from {self.p.args[1:3]} within {timeout:g}s") from None
            if line == "" and self.p.poll() is not None:
                raise RuntimeError(f"{self.p.args[1:3]} exited ({self.p.returncode}) before {prefix!r}")
            if line.startswith(prefix):
                return line

    def ask(self, command: str, prefix: str, timeout: float = 30.0) -> str:
        self.send(command)
        return self.expect(prefix, timeout)

    def send(self, command: str) -> None:
        self.p.stdin.write(command.encode() + b"\n")  # type: ignore[union-attr]
        self.p.stdin.flush()  # type: ignore[union-attr]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.p.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.p.wait(10)


TCP_STATES = {
    "01": "established",
    "02": "syn_sent",
    "03": "syn_recv",
    "04": "fin_wait1",
    "05": "fin_wait2",
    "06": "time_wait",
    "07": "close",
    "08": "close_wait",
    "09": "last_ack",
    "0A": "listen",
    "0B": "closing",
}


def held_sockets(pid: int, ws_port: int, unix_path: str) -> dict:
    """The client connections Veylor really holds: its socket fds (/proc/PID/fd) matched
    with the kernel's tables; TCP by state (local port = the WebSocket port, listener
    excluded), Unix connected sockets at the endpoint's path (an accepted Unix socket
    carries its listener's path). ``unlisted``: sockets it holds that no table lists, such
    as a TCP socket reset by its peer and never closed (a leaked connection)."""
    by_inode: dict[int, int] = {}
    fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                by_inode[int(link[8:-1])] = int(fd)
    inodes = by_inode.keys()
    listed: set[int] = set()
    tcp: Counter[str] = Counter()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as fh:
            next(fh)
            for line in fh:
                f = line.split()
                inode = int(f[9])
                if inode not in inodes:
                    continue
                listed.add(inode)
                if int(f[1].rsplit(":", 1)[1], 16) == ws_port and f[3] != "0A":
                    tcp[TCP_STATES.get(f[3], f[3])] += 1
    unix = 0
    with open(f"/proc/{pid}/net/unix") as fh:
        next(fh)
        for line in fh:
            f = line.split()
            inode = int(f[6])
            if inode not in inodes:
                continue
            listed.add(inode)
            if len(f) >= 8 and f[7] == unix_path and f[5] == "03":
                unix += 1
    for table, column in (("udp", 9), ("udp6", 9), ("netlink", 9), ("raw", 9), ("raw6", 9), ("packet", 8)):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as fh:
            next(fh)
            for line in fh:
                f = line.split()
                if len(f) > column and f[column].isdigit() and int(f[column]) in inodes:
                    listed.add(int(f[column]))
    return {
        "tcp": dict(tcp),
        "unix": unix,
        "fds": fds,
        "sockets": len(inodes),
        "unlisted": sorted(by_inode[i] for i in inodes - listed),
    }


def describe_socket(pid: int, fd: int) -> str | None:
    """What Veylor's socket ``fd`` is, from a copy of it (pidfd_getfd, Linux 5.6; Veylor is
    our child): for a socket no /proc table lists, the only way to say which it is. None
    when the fd is already closed (it was closing at the moment of the scan)."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        return f"fd {fd}: {exc}"
    try:
        copy = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
        if copy < 0:
            code = ctypes.get_errno()
            return None if code == errno.EBADF else f"fd {fd}: pidfd_getfd: {os.strerror(code)}"
        sock = socket.socket(fileno=copy)
        try:
            text = f"fd {fd}: {sock.family.name} {sock.type.name}, local {sock.getsockname()}"
            try:
                text += f", peer {sock.getpeername()}"
            except OSError as exc:
                text += f", peer: {exc.strerror}"
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            text += f", SO_ERROR {errno.errorcode.get(err, err) if err else 0}"
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
                text += f", TCP state {TCP_STATES.get(f'{state:02X}', state)}"
            return text
        finally:
            sock.close()
    finally:
        os.close(pidfd)


def veylor_holds(pid: int, ws_port: int, client_port: int) -> bool:
    """Whether Veylor's process holds the server side of the TCP connection from
    ``client_port`` to ``ws_port`` (its socket's inode among its fds)."""
    inode = 0
    with open(f"/proc/{pid}/net/tcp") as fh:
        next(fh)
        for line in fh:
            f = line.split()
            if int(f[1].rsplit(":", 1)[1], 16) == ws_port and int(f[2].rsplit(":", 1)[1], 16) == client_port:
                inode = int(f[9])
                if inode:
                    break
    if not inode:
        return False
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return True
    return False


class Admin:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, timeout: float = 15.0) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, headers={"Connection": "close", "X-Veylor-Reload": "1"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def graph(self) -> dict:
        status, body = self.request("GET", "/graph?clients=")
        if status != 200:
            raise RuntimeError(f"/graph answered {status}")
        return body


MAIN_CONFIG = """\
# The soak's main file (benchmarks/soak.py); routes.d/50-alt.yaml alternates.
sources:
  feed:
    url: "ws://127.0.0.1:{upstream}/"
    reconnect: {{initial_delay: 0.2, max_delay: 1}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {ws}}}, max_clients: 100000}}
  ipc: {{unix: {{path: "{unix}"}}, max_clients: 100000}}
  side: {{websocket: {{host: 127.0.0.1, port: {ws}, path: /side}}}}
routes:
  main: {{from: feed, to: [ws, ipc]}}
admin: {{listen: "127.0.0.1:{admin}"}}
"""
ALT = {  # the two configurations differ in one route: present (A) or not (B)
    "A": "routes:\n  alt: {from: feed, to: side, filter: {json: {path: s, equals: BTCUSDT}}}\n",
    "B": "# configuration B: no route alt\nroutes: {}\n",
}


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="veylor-soak-"))
        self.children: list[Child] = []
        self.checks: list[dict] = []
        self.events: list[str] = []
        self.veylor: Child | None = None
        self.upstream: Child | None = None
        self.t0 = time.monotonic()
        self.rss_samples: list[tuple[float, float]] = []
        self.fd_samples: list[tuple[float, int]] = []
        self.tasks_samples: list[tuple[float, int]] = []
        self.reloads: list[dict] = []
        self.stalls: list[dict] = []
        self.restarts: list[dict] = []
        self.checkpoints: list[dict] = []
        self.sessions: list[list[int]] = []  # [first, last] numbers each upstream sent while connected
        self.config_now = "A"
        # A stalled client fills its buffers at the feed's rate: at 2,000 msg/s in about 15 s.
        self.stall_deadline = max(STALL_DEADLINE, 2 * STALL_BYTES / (args.rate * FRAME) + 10)
        self.stalled: tuple | None = None  # (socket, poller, since, entry) of the stalled client now
        self.stall_checked = 0.0
        self.generation = 0
        self.messages_in = 0  # Veylor's count at the end of the previous upstream session

    # -- small helpers

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {text}"
        self.events.append(line)
        if self.args.verbose:
            print(line, file=sys.stderr, flush=True)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})
        if not ok:
            self.log(f"CHECK FAILED: {name}: {detail}")
        return ok

    def spawn(self, role_args: list[str], log: str | None = None, cwd: Path = ROOT) -> Child:
        child = Child(role_args, self.dir / log if log else None, cwd)
        self.children.append(child)
        return child

    def role(self, role: str, *extra: str) -> Child:
        return self.spawn([PY, str(Path(__file__).resolve()), role, *extra], log=f"{role}.log")

    def start_upstream(self, port: int, start: int) -> int:
        self.upstream = self.role(
            "upstream", "--port", str(port), "--start", str(start), "--rate", str(self.args.rate),
            "--tick-ms", str(self.args.tick_ms),
        )  # fmt: skip
        return int(self.upstream.expect("listening", 30).split()[1])

    def sample(self) -> None:
        pid = self.veylor.pid  # type: ignore[union-attr]
        now = time.monotonic() - self.t0
        with contextlib.suppress(OSError):
            self.rss_samples.append((now, rss_mib(pid)))
            self.fd_samples.append((now, fd_count(pid)))

    def wait_for(self, what: str, predicate, timeout: float, every: float = 0.1):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(every)

    def stable_fds(self, target: int | None = None, timeout: float = 10.0) -> int:
        """The fd count once stable (two equal readings 0.5 s apart), or once at target.
        An admin request's connection may still be closing: it is not a leak."""
        pid = self.veylor.pid  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        last = fd_count(pid)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = fd_count(pid)
            if (target is not None and now <= target) or (target is None and now == last):
                return now
            last = now
        return last

    # -- the activities

    def reload(self, target: str, trigger: str) -> None:
        drop_in = self.dir / "routes.d" / "50-alt.yaml"
        tmp = drop_in.with_name(".50-alt.yaml.tmp")
        tmp.write_text(ALT[target])
        os.replace(tmp, drop_in)  # renamed into place, as docs/operations.md says
        started = time.monotonic()
        want = self.generation + 1
        entry = {"to": target, "trigger": trigger, "ok": False}
        try:
            if trigger == "POST":
                status, body = self.admin.request("POST", "/reload")
                entry["changes"] = body.get("changes")
                if status != 200 or not body.get("ok") or not body.get("applied"):
                    raise RuntimeError(f"POST /reload answered {status}: {json.dumps(body)[:300]}")
                view = self.admin.graph()
            else:
                os.kill(self.veylor.pid, signal.SIGHUP)  # type: ignore[union-attr]
                view = self.wait_for(
                    "the SIGHUP reload",
                    lambda: (v := self.admin.graph())["config"]["generation"] >= want and v,
                    10,
                    0.05,
                )
                last = view["reloads"]["last"]
                entry["changes"] = last and last.get("changes")
                if not last or not last["ok"]:
                    raise RuntimeError(f"the SIGHUP reload failed: {json.dumps(last)[:300]}")
            generation = view["config"]["generation"]
            has_alt = "alt" in view["routes"]
            if generation != want or has_alt != (target == "A"):
                raise RuntimeError(
                    f"not applied: generation {generation} (want {want}), route alt present: {has_alt}"
                )
            self.generation = generation
            self.config_now = target
            entry["ok"] = True
        except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
            entry["error"] = str(exc)
            self.log(f"reload to {target} by {trigger} failed: {exc}")
            with contextlib.suppress(Exception):  # resynchronise with what runs
                view = self.admin.graph()
                self.generation = view["config"]["generation"]
        entry["ms"] = round((time.monotonic() - started) * 1000, 1)
        self.reloads.append(entry)

    def stall(self, kind: str, warmup: bool = False) -> None:
        """A client that connects and never reads (receive buffer 4 KiB)."""
        entry = {"kind": kind, "at_s": round(time.monotonic() - self.t0, 1), "disconnected_after_s": None}
        if warmup:
            entry["warmup"] = True
        try:
            sock = connect(kind, self.ws_port, self.unix_path, rcvbuf=4096)
            sock.setblocking(True)
            if kind == "ws":
                sock.sendall(ws_request(self.ws_port))
                sock.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(1)  # the response only: nothing after it is read
                    if not chunk:
                        raise ConnectionError("closed during the handshake")
                    head += chunk
                if not head.startswith(b"HTTP/1.1 101"):
                    raise ConnectionError(head.split(b"\r\n")[0].decode())
        except OSError as exc:
            entry["error"] = f"could not connect: {exc}"
            self.stalls.append(entry)
            return
        poller = select.poll()
        poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        self.stalled = (sock, poller, time.monotonic(), entry)
        self.stalls.append(entry)
        self.log(f"stalled {kind} client connected")

    def watch_stalled(self, final: bool = False) -> None:
        """Whether Veylor let go of the stalled client. A Unix client sees its end at once;
        a TCP client may not: Veylor's socket, closed with a megabyte of unsent data, stays
        in the kernel (FIN_WAIT1, an orphan no process holds) until the client reads or the
        kernel gives up, so what counts is that Veylor no longer holds it (/proc)."""
        if self.stalled is None:
            return
        sock, poller, since, entry = self.stalled
        now = time.monotonic()
        how = ""
        if poller.poll(0):
            how = "closed"
        elif entry["kind"] == "ws" and (final or now - self.stall_checked >= 0.5):
            self.stall_checked = now
            if not veylor_holds(self.veylor.pid, self.ws_port, sock.getsockname()[1]):  # type: ignore[union-attr]
                how = "released (its socket no longer in Veylor's fds)"
        if how:
            entry["disconnected_after_s"] = round(now - since, 1)
            entry["how"] = how
            self.log(f"stalled {entry['kind']} client {how} by Veylor after {entry['disconnected_after_s']}s")
        elif now - since > self.stall_deadline or final:
            entry["error"] = f"still connected after {now - since:.0f}s"
            self.log(f"stalled {entry['kind']} client: {entry['error']}")
        else:
            return
        sock.close()
        self.stalled = None

    def restart_upstream(self) -> None:
        """Kill the upstream in the middle of its stream; start it again DOWNTIME later."""
        entry: dict = {"at_s": round(time.monotonic() - self.t0, 1)}
        old = self.upstream
        assert old is not None
        disconnects = self.admin.graph()["sources"]["feed"]["disconnects"]
        killed_at = time.monotonic()
        old.kill(signal.SIGKILL)
        self.children.remove(old)
        try:
            view = self.wait_for(
                "Veylor to see the upstream gone",
                lambda: (v := self.admin.graph())["sources"]["feed"]["disconnects"] > disconnects and v,
                10,
                0.02,
            )
            seen = view["sources"]["feed"]["messages_in"]
            first = self.sessions[-1][0]
            last = first + (seen - self.messages_in) - 1
            self.sessions[-1][1] = last
            self.messages_in = seen
            time.sleep(max(0.0, killed_at + DOWNTIME - time.monotonic()))
            skipped = round(self.args.rate * (time.monotonic() - killed_at))
            nxt = last + 1 + skipped
            self.start_upstream(self.up_port, nxt)
            self.sessions.append([nxt, nxt - 1])
            self.wait_for(
                "Veylor to reconnect",
                lambda: self.admin.graph()["sources"]["feed"]["state"] == "connected",
                30,
                0.05,
            )
            entry.update(
                last_before=last,
                first_after=nxt,
                skipped=skipped,
                outage_s=round(time.monotonic() - killed_at, 2),
            )
            self.log(f"upstream restarted: last {last} before, {nxt} after, outage {entry['outage_s']}s")
        except (OSError, RuntimeError, TimeoutError) as exc:
            entry["error"] = str(exc)
            self.log(f"upstream restart failed: {exc}")
        self.restarts.append(entry)

    def counts(self, expected: int, where: str) -> dict:
        """Veylor's client count (/graph) against the connections it holds (/proc) and
        the clients known to be connected. Churn must be paused. Retried for 3 s: a
        stalled client may be aborted between two readings. A socket Veylor holds that is
        no longer a connection (closed by the kernel, in no table; or a TCP connection not
        established) is given DEAD_SOCKET_GRACE to be let go: a connection being closed
        may wait for a deadline (up to 10 s in Veylor); one held longer fails the check."""
        started = time.monotonic()
        dead_seen: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            before = held_sockets(self.veylor.pid, self.ws_port, self.unix_path)  # type: ignore[union-attr]
            view = self.admin.graph()
            after = held_sockets(self.veylor.pid, self.ws_port, self.unix_path)  # type: ignore[union-attr]
            reported = {n: e["clients"] for n, e in view["endpoints"].items()}
            tcp = after["tcp"]
            entry = {
                "where": where,
                "reported": sum(reported.values()),
                "reported_by_endpoint": reported,
                "held": tcp.get("established", 0) + after["unix"],
                "held_tcp_by_state": tcp,
                "held_unix": after["unix"],
                "held_unlisted": len(after["unlisted"]),
                "known": expected,
                "tasks": view["tasks"],
            }
            stable = before["tcp"] == after["tcp"] and before["unix"] == after["unix"]
            counted = stable and entry["reported"] == entry["held"] == expected
            dead = bool(after["unlisted"]) or sum(tcp.values()) != tcp.get("established", 0)
            entry["ok"] = counted and not dead
            if dead and not dead_seen:
                pid = self.veylor.pid  # type: ignore[union-attr]
                held = [d for fd in after["unlisted"][:5] if (d := describe_socket(pid, fd)) is not None]
                if held or not after["unlisted"]:  # (fds already closed: they were closing just then)
                    dead_seen = held or [f"TCP sockets on the WebSocket port by state: {tcp}"]
                    self.log(
                        f"checkpoint {where}: Veylor holds sockets that are not connections: {dead_seen}"
                    )
            waited = time.monotonic() - started
            if entry["ok"] or waited > (DEAD_SOCKET_GRACE if counted else 3.0):
                break
            time.sleep(0.5)
        entry["attempts"] = attempt
        if dead_seen:
            entry["dead_sockets"] = dead_seen
            entry["dead_released_after_s"] = round(waited, 1) if entry["ok"] else None
        return entry

    def checkpoint(self, where: str, resume: bool = True) -> dict:
        self.churn.ask("pause", "paused")
        time.sleep(1.0)  # Veylor processes the churn clients' last closes
        self.watch_stalled()
        entry = self.counts(self.args.ws_clients + self.args.unix_clients + (self.stalled is not None), where)
        self.tasks_samples.append((time.monotonic() - self.t0, entry["tasks"]))
        progress = json.loads(self.clients.ask("progress", "{"))
        nxt = int(self.upstream.ask("seq", "seq").split()[1])  # type: ignore[union-attr]
        entry["lag_messages"] = nxt - progress["min_next"]
        entry["staying_open"] = progress["open"]
        if resume:
            self.churn.send("resume")
        self.checkpoints.append(entry)
        self.log(
            f"checkpoint {where}: reported {entry['reported']}, held {entry['held']}, known {entry['known']}, "
            f"tasks {entry['tasks']}, clients {entry['lag_messages']} messages behind"
        )
        return entry

    # -- the run

    def run(self) -> dict:
        a = self.args
        raise_nofile()
        (self.dir / "routes.d").mkdir()
        self.up_port = self.start_upstream(0, 1)
        self.sessions.append([1, 0])
        self.ws_port, admin_port = free_port(), free_port()
        self.unix_path = str(self.dir / "feed.sock")
        self.admin = Admin(admin_port)
        config = self.dir / "config.yaml"
        config.write_text(
            MAIN_CONFIG.format(upstream=self.up_port, ws=self.ws_port, unix=self.unix_path, admin=admin_port)
        )
        (self.dir / "routes.d" / "50-alt.yaml").write_text(ALT["A"])
        tree = Path(a.veylor_dir).resolve() if a.veylor_dir else ROOT
        self.veylor = self.spawn(
            [PY, "-m", "veylor", "-c", str(config), "--no-watch"], log="veylor.log", cwd=tree
        )
        self.upstream.expect("relay connected", 30)  # type: ignore[union-attr]
        self.wait_for("the admin endpoint", lambda: self._healthy(), 30)
        view = self.admin.graph()
        self.generation = view["config"]["generation"]
        rss_launch = rss_mib(self.veylor.pid)
        self.log(f"Veylor {view['version']} pid {self.veylor.pid} up, RSS {rss_launch:.1f} MiB")
        if a.pin:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.veylor.pid, {0})

        self.clients = self.role(
            "clients",
            "--port",
            str(self.ws_port),
            "--path",
            self.unix_path,
            "--ws",
            str(a.ws_clients),
            "--unix",
            str(a.unix_clients),
            "--batch-ms",
            str(a.batch_ms),
        )
        ready = self.clients.expect("", 120)
        while not (ready.startswith("ready") or ready.startswith("failed")):
            ready = self.clients.expect("", 120)
        if not ready.startswith("ready"):
            raise RuntimeError(f"staying clients: {ready}")
        self.churn = self.role(
            "churn",
            "--port",
            str(self.ws_port),
            "--path",
            self.unix_path,
            "--rate",
            str(a.churn_rate),
            "--abort-share",
            str(a.abort_share),
            "--unix-share",
            str(a.unix_share),
            "--seed",
            str(a.seed),
            "--paused",
        )
        if a.pin:
            for child in (self.clients, self.churn, self.upstream):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(child.pid, {1})  # type: ignore[union-attr]
        self.log(f"{ready}; warming up")

        # Warm-up: each activity once (both configurations, both triggers, churn, a stalled
        # client until Veylor drops it, /graph), so that the start figures are those of a
        # process that has done everything once: the first stalled client raises the
        # allocator's high-water mark by a few MiB that glibc keeps (Veylor trims only after
        # laggards held 32 MiB) and later ones reuse; that is not growth over the run.
        rss_connected = rss_mib(self.veylor.pid)
        self.reload("B", "POST")
        self.reload("A", "SIGHUP")
        self.churn.send("resume")
        warm_from = time.monotonic()
        if a.stall_every > 0:
            self.stall("ws", warmup=True)
        while time.monotonic() - warm_from < a.warmup or self.stalled is not None:
            self.watch_stalled()
            time.sleep(0.1)
        self.churn.ask("pause", "paused")
        time.sleep(2.0)
        first = int(self.upstream.ask("seq", "seq").split()[1])  # type: ignore[union-attr]
        start = self.checkpoint("start", resume=False)
        start_rss = statistics.median(self._rss_now(3))
        start_fds = self.stable_fds()
        start_tasks = start["tasks"]
        veylor_cpu0 = cpu_seconds(self.veylor.pid)
        self.churn.send("resume")
        self.log(
            f"start: window from message {first}, RSS {start_rss:.1f} MiB, {start_fds} fds, {start_tasks} tasks"
        )

        # The run.
        duration = a.minutes * 60
        t_run = time.monotonic()
        never = float("inf")  # an interval of 0: never
        schedule = {
            "reload": a.reload_every or never,
            "stall": a.stall_every / 2 or never,
            "restart": a.restart_every or never,
            "checkpoint": 60.0 - 15.0,
            "sample": 0.0,
        }
        stall_kinds = ["unix", "ws"]  # the warm-up stalled a WebSocket client
        trigger = ["POST", "SIGHUP"]
        n_reload = n_stall = 0
        while (elapsed := time.monotonic() - t_run) < duration:
            if elapsed >= schedule["sample"]:
                self.sample()
                schedule["sample"] += 1.0
            if elapsed >= schedule["reload"]:
                self.reload("B" if self.config_now == "A" else "A", trigger[n_reload % 2])
                n_reload += 1
                schedule["reload"] += a.reload_every
            if elapsed >= schedule["stall"]:
                if self.stalled is None and elapsed < duration - 25:
                    self.stall(stall_kinds[n_stall % 2])
                    n_stall += 1
                schedule["stall"] += a.stall_every
            if elapsed >= schedule["restart"]:
                if elapsed < duration - 20:
                    self.restart_upstream()
                schedule["restart"] += a.restart_every
            if elapsed >= schedule["checkpoint"]:
                if elapsed < duration - 10:
                    self.checkpoint(f"{elapsed:.0f}s")
                schedule["checkpoint"] += 60.0
            self.watch_stalled()
            if (
                self.churn.p.poll() is not None
                or self.clients.p.poll() is not None
                or self.veylor.p.poll() is not None
            ):
                raise RuntimeError("a process of the run exited (see the logs)")
            time.sleep(0.05)

        # After the run: churn stops, the last stalled client goes, then the settle.
        run_span = (t_run - self.t0, time.monotonic() - self.t0)
        self.churn.ask("pause", "paused")
        churn = json.loads(self.churn.ask("report", "{"))
        self.log("churn stopped")
        if self.stalled is not None:
            with contextlib.suppress(TimeoutError):
                self.wait_for(
                    "the last stalled client",
                    lambda: (self.watch_stalled(), self.stalled is None)[1],
                    45,
                    0.2,
                )
            self.watch_stalled(final=True)
        settle_from = time.monotonic()
        while time.monotonic() - settle_from < a.settle:
            self.sample()
            time.sleep(1.0)
        end_rss_samples = self._rss_now(5)
        end_rss = statistics.median(end_rss_samples)
        end_fds = self.stable_fds(target=start_fds)
        end = self.checkpoint("end", resume=False)
        hwm = rss_mib(self.veylor.pid, "VmHWM:")
        veylor_cpu = cpu_seconds(self.veylor.pid) - veylor_cpu0
        run_s = time.monotonic() - t_run

        # Stop the feed; wait until the staying clients have read its last message.
        last = int(self.upstream.ask("stop", "stopped").split()[1])  # type: ignore[union-attr]
        self.sessions[-1][1] = last
        with contextlib.suppress(TimeoutError):
            self.wait_for(
                "the clients to read the last message",
                lambda: json.loads(self.clients.ask("progress", "{"))["min_next"] > last,
                30,
                0.2,
            )
        view = self.admin.graph()
        report = json.loads(self.clients.ask("report", "{", 60))
        self.clients.send("quit")

        # Veylor stops in order on SIGTERM (exit 0 within 5 s).
        stop_started = time.monotonic()
        self.veylor.p.send_signal(signal.SIGTERM)
        try:
            code = self.veylor.p.wait(10)
        except subprocess.TimeoutExpired:
            code = None
        stop_s = time.monotonic() - stop_started

        return self.analyse(
            first=first,
            last=last,
            report=report,
            churn=churn,
            view=view,
            start=start,
            end=end,
            rss={
                "launch": rss_launch,
                "connected": rss_connected,
                "start": start_rss,
                "peak": max(v for _, v in self.rss_samples),
                "hwm": hwm,
                "end": end_rss,
                "end_samples": end_rss_samples,
                "growth_mib_per_min": slope(
                    [(t, v) for t, v in self.rss_samples if run_span[0] <= t <= run_span[1]]
                ),
            },
            fds={"start": start_fds, "end": end_fds, "peak": max(v for _, v in self.fd_samples)},
            tasks={"start": start_tasks, "end": end["tasks"], "peak": max(v for _, v in self.tasks_samples)},
            cpu={"veylor_s": veylor_cpu, "run_s": run_s},
            stop={"code": code, "seconds": stop_s},
        )

    def _healthy(self) -> bool:
        try:
            return self.admin.request("GET", "/graph?clients=")[0] == 200
        except (OSError, ValueError):
            return False

    def _rss_now(self, n: int) -> list[float]:
        out = []
        for i in range(n):
            if i:
                time.sleep(1.0)
            out.append(rss_mib(self.veylor.pid))  # type: ignore[union-attr]
        return out

    # -- the verdict

    def analyse(self, **m) -> dict:  # type: ignore[no-untyped-def]
        a = self.args
        first, last = m["first"], m["last"]
        # What each staying client must have: every number of every session inside the window.
        sessions = [[max(s, first), min(e, last)] for s, e in self.sessions if min(e, last) >= max(s, first)]
        per_client = sum(e - s + 1 for s, e in sessions)
        outages = {(self.sessions[i][1], self.sessions[i + 1][0]) for i in range(len(self.sessions) - 1)}
        clients = m["report"]["clients"]
        delivered = 0
        bad: list[str] = []
        disconnected = back = corrupt = foreign = unexpected_gaps = 0
        for i, c in enumerate(clients):
            runs = c["runs"]
            inside = [[max(s, first), min(e, last)] for s, e in runs if min(e, last) >= max(s, first)]
            delivered += sum(e - s + 1 for s, e in inside)
            gaps = [(x[1], y[0]) for x, y in itertools.pairwise(runs)]
            odd = [g for g in gaps if g not in outages]
            unexpected_gaps += len(odd)
            back += c["back"]
            corrupt += c["corrupt"]
            foreign += c["foreign"]
            problems = []
            if c["closed_at"] is not None or c["close_frame"]:
                disconnected += 1
                problems.append("disconnected")
            if inside != sessions:
                problems.append(
                    f"received {inside[:4]}{'...' if len(inside) > 4 else ''}, expected {sessions}"
                )
            if odd:
                problems.append(f"unannounced discontinuities {odd[:3]}")
            if c["back"] or c["corrupt"]:
                problems.append(f"{c['back']} duplicates or reorders, {c['corrupt']} corrupt frames")
            if problems and len(bad) < 10:
                bad.append(f"client {i} ({c['kind']}): " + "; ".join(problems))
        expected = per_client * len(clients)
        # Veylor's own count of what the last upstream sent it: all of it (no kill at the end).
        received = m["view"]["sources"]["feed"]["messages_in"] - self.messages_in
        sent = self.sessions[-1][1] - self.sessions[-1][0] + 1
        if received != sent:
            bad.append(f"Veylor received {received:,} messages from the last upstream, which sent {sent:,}")
        self.check(
            "messages",
            delivered == expected and not bad,
            f"{delivered:,} delivered of {expected:,} expected ({len(clients)} staying clients x {per_client:,} messages"
            f" in {len(sessions)} upstream sessions); {unexpected_gaps} unannounced gaps, {back} duplicates or"
            f" reorders, {corrupt} corrupt frames, {disconnected} staying clients disconnected"
            + (f"; {bad}" if bad else ""),
        )
        churn = m["churn"]
        churn_gaps = [(x, y, n) for x, y, n in churn["gaps"] if (x, y) not in outages]
        self.check(
            "churn clients",
            not churn["problems"] and not churn_gaps and not churn.get("back") and not churn.get("corrupt"),
            f"{churn['connections']:,} connections; problems {churn['problems'] or 'none'}; "
            f"{sum(n for *_, n in churn_gaps)} unannounced gaps; {churn.get('back', 0)} duplicates or reorders; "
            f"{churn.get('corrupt', 0)} corrupt frames; {churn.get('frames', 0):,} messages read",
        )
        rss = m["rss"]
        growth = (rss["end"] - rss["start"]) / rss["start"]
        self.check(
            "memory",
            growth <= RSS_TOLERANCE,
            f"RSS start {rss['start']:.1f} MiB, peak {rss['peak']:.1f}, end {rss['end']:.1f} ({growth:+.1%}; at most +{RSS_TOLERANCE:.0%})",
        )
        fds = m["fds"]
        self.check(
            "file descriptors",
            fds["end"] <= fds["start"],
            f"start {fds['start']}, peak {fds['peak']}, end {fds['end']}",
        )
        tasks = m["tasks"]
        self.check(
            "asyncio tasks",
            tasks["end"] <= tasks["start"],
            f"start {tasks['start']}, peak {tasks['peak']}, end {tasks['end']}",
        )
        bad_points = [c for c in self.checkpoints if not c["ok"]]
        slow_release = [
            f"{c['where']}: {c['dead_sockets']} let go after {c['dead_released_after_s']} s"
            for c in self.checkpoints
            if c["ok"] and c.get("dead_sockets")
        ]
        self.check(
            "client counts",
            not bad_points,
            f"{len(self.checkpoints)} checkpoints (churn paused): Veylor's count = sockets it holds = clients"
            f" connected"
            + (f"; mismatches: {bad_points[:3]}" if bad_points else f" (end: {m['end']['reported']})")
            + (f"; dead sockets held for a while: {slow_release}" if slow_release else ""),
        )
        failed_reloads = [r for r in self.reloads if not r["ok"]]
        self.check(
            "reloads",
            not failed_reloads and len(self.reloads) >= 2,
            f"{len(self.reloads)} reloads (POST /reload and SIGHUP in turn), each applied (generation + 1, route alt"
            f" as configured)" + (f"; failed: {failed_reloads[:3]}" if failed_reloads else ""),
        )
        stalls = self.stalls
        bad_stalls = [s for s in stalls if s.get("error") or s["disconnected_after_s"] is None]
        endpoints = m["view"]["endpoints"]
        slow = sum(e.get("slow_disconnects", 0) + e.get("stalled_closed", 0) for e in endpoints.values())
        self.check(
            "stalled clients",
            not bad_stalls and slow == len(stalls),
            f"{len(stalls)} stalled, each disconnected by Veylor (stall_timeout or slow_client: disconnect) after "
            f"{', '.join(str(s['disconnected_after_s']) for s in stalls) or '-'} s; Veylor counted {slow} slow or "
            "stalled disconnects" + (f"; problems: {bad_stalls}" if bad_stalls else ""),
        )
        bad_restarts = [r for r in self.restarts if r.get("error")]
        self.check(
            "upstream restarts",
            not bad_restarts,
            f"{len(self.restarts)} restarts, outages {', '.join(str(r.get('outage_s')) for r in self.restarts) or '-'} s"
            + (f"; problems: {bad_restarts}" if bad_restarts else ""),
        )
        stop = m["stop"]
        self.check(
            "shutdown",
            stop["code"] == 0 and stop["seconds"] <= 5.5,
            f"SIGTERM: exit {stop['code']} in {stop['seconds']:.1f} s",
        )
        lags = [c["lag_messages"] for c in self.checkpoints]
        cpu = m["cpu"]
        result = {
            "ok": all(c["ok"] for c in self.checks),
            "checks": self.checks,
            "settings": {
                k: getattr(a, k)
                for k in (
                    "minutes",
                    "rate",
                    "ws_clients",
                    "unix_clients",
                    "churn_rate",
                    "abort_share",
                    "unix_share",
                    "reload_every",
                    "stall_every",
                    "restart_every",
                    "settle",
                    "warmup",
                    "batch_ms",
                    "tick_ms",
                    "pin",
                    "seed",
                )
            },
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "kernel": platform.release(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            },
            "messages": {
                "window": [first, last],
                "sessions": sessions,
                "outages": sorted(outages),
                "staying_clients": len(clients),
                "per_client": per_client,
                "expected": expected,
                "delivered": delivered,
                "missing": expected - delivered,
                "unannounced_gaps": unexpected_gaps,
                "duplicates_or_reorders": back,
                "corrupt": corrupt,
                "foreign_frames": foreign,
                "pings_answered": sum(c["pings"] for c in clients),
                "staying_disconnected": disconnected,
                "problems": bad,
                "deliveries_per_s": delivered / cpu["run_s"],
                "max_lag_messages": max(lags) if lags else None,
            },
            "rss_mib": {
                k: (round(v, 3 if k.startswith("growth") else 1) if isinstance(v, float) else v)
                for k, v in rss.items()
            },
            "rss_end_vs_start": round(growth, 4),
            "rss_timeline": [[round(t), v] for t, v in self.rss_samples[::10]],
            "fds": fds,
            "tasks": tasks,
            "checkpoints": self.checkpoints,
            "reloads": {
                "count": len(self.reloads),
                "failed": len(failed_reloads),
                "ms_p50": statistics.median(r["ms"] for r in self.reloads) if self.reloads else None,
                "ms_max": max((r["ms"] for r in self.reloads), default=None),
            },
            "stalls": stalls,
            "restarts": self.restarts,
            "churn": churn,
            "cpu": {
                "veylor_percent": round(100 * cpu["veylor_s"] / cpu["run_s"], 1),
                "clients_percent": round(100 * m["report"]["cpu_s"] / m["report"]["wall_s"], 1),
                "churn_percent": round(100 * churn["cpu_s"] / max(1.0, cpu["run_s"] + a.warmup), 1),
            },
            "veylor_endpoints": {
                n: {k: v for k, v in e.items() if isinstance(v, int) and v} for n, e in endpoints.items()
            },
            "veylor_source": {k: v for k, v in m["view"]["sources"]["feed"].items() if isinstance(v, int)},
            "run_seconds": round(cpu["run_s"], 1),
            "events": self.events[-200:],
        }
        return result

    def cleanup(self) -> None:
        for child in reversed(self.children):
            child.kill()
        if self.stalled is not None:
            self.stalled[0].close()


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute: how fast RSS
    grew during the run (information; a leak shows as a steady slope)."""
    if len(points) < 10:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return round(60 * sum((t - mt) * (v - mv) for t, v in points) / var, 3) if var else None


def human(r: dict) -> str:
    s, m = r["settings"], r["messages"]
    out = [
        f"Veylor soak: {s['minutes']:g} min, {s['rate']:g} msg/s to {s['ws_clients']} WebSocket + {s['unix_clients']} Unix"
        f" staying clients; churn {s['churn_rate']:g}/s ({s['abort_share']:.0%} aborted); reload every"
        f" {s['reload_every']:g} s; stalled client every {s['stall_every']:g} s; upstream restart every {s['restart_every']:g} s",
        f"machine: {r['machine']['cpus']} CPUs, Python {r['machine']['python']}, Linux {r['machine']['kernel']}, {r['machine']['date']}",
        "",
        f"messages   {m['delivered']:,} delivered / {m['expected']:,} expected  ({m['staying_clients']} clients x {m['per_client']:,};"
        f" window {m['window'][0]}..{m['window'][1]}; outages {m['outages'] or 'none'})",
        f"           {m['deliveries_per_s']:,.0f} deliveries/s; clients at most {m['max_lag_messages']} messages behind at checkpoints",
        f"RSS MiB    launch {r['rss_mib']['launch']}, clients connected {r['rss_mib']['connected']}, start {r['rss_mib']['start']}, peak {r['rss_mib']['peak']}"
        f" (high-water {r['rss_mib']['hwm']}), end {r['rss_mib']['end']} ({r['rss_end_vs_start']:+.1%});"
        f" during the run {r['rss_mib']['growth_mib_per_min']} MiB/min",
        f"fds        start {r['fds']['start']}, peak {r['fds']['peak']}, end {r['fds']['end']}",
        f"tasks      start {r['tasks']['start']}, peak {r['tasks']['peak']}, end {r['tasks']['end']}",
        f"CPU        Veylor {r['cpu']['veylor_percent']}% of a core, staying clients {r['cpu']['clients_percent']}%,"
        f" churn {r['cpu']['churn_percent']}%",
        f"reloads    {r['reloads']['count']} ({r['reloads']['failed']} failed), p50 {r['reloads']['ms_p50']} ms, max {r['reloads']['ms_max']} ms",
        f"churn      {r['churn']['connections']:,} connections: "
        + ", ".join(f"{k} {v}" for k, v in sorted(r["churn"]["made"].items())),
        "",
    ]
    for c in r["checks"]:
        out.append(f"{'PASS' if c['ok'] else 'FAIL'}  {c['name']}: {c['detail']}")
    out.append("")
    out.append("OK" if r["ok"] else "FAILED")
    return "\n".join(out)


def driver_main(args: argparse.Namespace) -> int:
    soak = Soak(args)
    keep = args.keep

    def stop(signum, frame) -> None:  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with SIGINT ignored (a background job)
    result: dict | None = None
    try:
        result = soak.run()
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        keep = True
        return 130
    except (OSError, RuntimeError, TimeoutError, ValueError, KeyError) as exc:
        keep = True
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "checks": soak.checks,
            "events": soak.events[-50:],
        }
        print(f"soak failed: {exc}", file=sys.stderr)
    finally:
        soak.cleanup()
        if result is not None and not result.get("ok"):
            keep = True
        if keep:
            print(f"logs kept in {soak.dir}", file=sys.stderr)
        else:
            shutil.rmtree(soak.dir, ignore_errors=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        print(json.dumps(result, indent=1))
    elif "error" in result:
        print("\n".join(result["events"]))
    else:
        print(human(result))
    return 0 if result.get("ok") else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="role")
    up = sub.add_parser("upstream")
    up.add_argument("--port", type=int, default=0)
    up.add_argument("--start", type=int, default=1)
    up.add_argument("--rate", type=float, default=2000)
    up.add_argument("--tick-ms", type=float, default=2)
    for name in ("clients", "churn"):
        p = sub.add_parser(name)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--path", required=True)
    cl = sub.choices["clients"]
    cl.add_argument("--ws", type=int, default=200)
    cl.add_argument("--unix", type=int, default=50)
    cl.add_argument("--batch-ms", type=float, default=10)
    ch = sub.choices["churn"]
    ch.add_argument("--rate", type=float, default=10)
    ch.add_argument("--abort-share", type=float, default=0.25)
    ch.add_argument("--unix-share", type=float, default=0.2)
    ch.add_argument("--seed", type=int, default=1)
    ch.add_argument("--paused", action="store_true")

    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=2000, help="upstream messages a second (default 2000)")
    parser.add_argument("--ws-clients", type=int, default=200, help="staying WebSocket clients (200)")
    parser.add_argument("--unix-clients", type=int, default=50, help="staying Unix clients (50)")
    parser.add_argument("--churn-rate", type=float, default=10, help="churning connections a second (10)")
    parser.add_argument(
        "--abort-share", type=float, default=0.25, help="share of them aborting the opening (0.25)"
    )
    parser.add_argument(
        "--unix-share", type=float, default=0.2, help="share of them on the Unix endpoint (0.2)"
    )
    parser.add_argument(
        "--reload-every", type=float, default=10, help="seconds between reloads (10; 0: none)"
    )
    parser.add_argument(
        "--stall-every", type=float, default=60, help="seconds between stalled clients (60; 0: none)"
    )
    parser.add_argument(
        "--restart-every", type=float, default=300, help="seconds between upstream restarts (300; 0: none)"
    )
    parser.add_argument(
        "--settle", type=float, default=20, help="seconds of steady feed before the end figures (20)"
    )
    parser.add_argument("--warmup", type=float, default=5, help="seconds of churn in the warm-up (5)")
    parser.add_argument(
        "--batch-ms", type=float, default=10, help="the staying clients' read batching (10 ms)"
    )
    parser.add_argument(
        "--tick-ms",
        type=float,
        default=2,
        help="the upstream writes the messages due every TICK ms (2 ms: 4 messages at 2,000 msg/s), "
        "so each tick is one pass of Veylor's fan-out, one write per client",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pin", action="store_true", help="Veylor on CPU 0, the rest on CPU 1")
    parser.add_argument("--veylor-dir", help="run the Veylor of this checkout (python -m veylor from there)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--json-out", metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs) even on success"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log events to stderr as they happen")
    args = parser.parse_args()
    if args.role == "upstream":
        upstream_main(args)
        return 0
    if args.role == "clients":
        clients_main(args)
        return 0
    if args.role == "churn":
        churn_main(args)
        return 0
    return driver_main(args)


if __name__ == "__main__":
    sys.exit(main())
