"""The churn (a process of its own, ``soak.py churn``): connections that come and go,
some of them aborting the opening at every stage."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import select
import struct
import time
from collections import Counter

from common import UNIX_HEADER, WS_HEADER, masked
from harness import cpu_seconds, raise_nofile

from soaklib.checker import Expected
from soaklib.client import Commands, Conn, connect, rst, say, ws_request

TCP_ABORTS = (
    "fin-at-once",
    "rst-at-once",
    "fin-mid-request",
    "rst-mid-request",
    "fin-after-request",
    "rst-after-request",
)
LEAVES = ("close-frame", "fin", "rst")


def main(args: argparse.Namespace) -> None:
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
