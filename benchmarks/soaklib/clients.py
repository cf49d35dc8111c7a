"""The staying clients (a process of its own, ``soak.py clients``): connected for the
whole run, each checking every message it reads."""

from __future__ import annotations

import argparse
import select
import time

from common import UNIX_HEADER, WS_HEADER
from harness import cpu_seconds, raise_nofile

from soaklib.checker import Expected
from soaklib.client import Commands, Conn, connect, say, ws_request


def main(args: argparse.Namespace) -> None:
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
