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

Internal roles, started by the driver: ``soak.py upstream|clients|churn ...``. The parts
are in benchmarks/soaklib/: the checker and the client sockets, one module per role and
per activity (reloads, stalled clients, upstream restarts, checkpoints), the driver and
the verdict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from soaklib import churn, clients, driver, upstream  # noqa: E402

ROLES = {"upstream": upstream.main, "clients": clients.main, "churn": churn.main}


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
    if args.role in ROLES:
        ROLES[args.role](args)
        return 0
    return driver.main(args)


if __name__ == "__main__":
    sys.exit(main())
