"""Stalled clients, one at a time, WebSocket and Unix in turn: a client that connects
and never reads, which Veylor must drop, at its ``stall_timeout`` (10 s) or by its
``slow_client`` policy (``disconnect``), whichever comes first."""

from __future__ import annotations

import select
import socket
import time

from common import FRAME

from soaklib.client import connect, ws_request
from soaklib.context import Context, Veylor
from soaklib.held import veylor_holds

STALL_DEADLINE = 60.0  # seconds a stalled client may stay connected (at least) before that is a failure
STALL_BYTES = 6 * 2**20  # what a stalled client takes before its policy applies: client_buffer (4 MiB),
# the kernel's send buffer (64 KiB, doubled by Linux) and its receive buffer, with a margin (its
# stall_timeout, 10 s, may come first)


class Stalls:
    """The stalled clients of the run: ``entries`` says when each came, and after how
    long and how Veylor let it go (or that it did not)."""

    def __init__(self, ctx: Context, veylor: Veylor) -> None:
        self.ctx = ctx
        self.veylor = veylor
        self.entries: list[dict] = []
        # (socket, poller, since, entry) of the stalled client now
        self.current: tuple[socket.socket, select.poll, float, dict] | None = None
        self.checked = 0.0  # when Veylor's fds were last looked at for it
        # A stalled client fills its buffers at the feed's rate: at 2,000 msg/s in about 15 s.
        self.deadline = max(STALL_DEADLINE, 2 * STALL_BYTES / (ctx.args.rate * FRAME) + 10)

    def start(self, kind: str, warmup: bool = False) -> None:
        """A client that connects and never reads (receive buffer 4 KiB)."""
        veylor = self.veylor
        entry = {"kind": kind, "at_s": round(self.ctx.elapsed(), 1), "disconnected_after_s": None}
        if warmup:
            entry["warmup"] = True
        try:
            sock = connect(kind, veylor.ws_port, veylor.unix_path, rcvbuf=4096)
            sock.setblocking(True)
            if kind == "ws":
                sock.sendall(ws_request(veylor.ws_port))
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
            self.entries.append(entry)
            return
        poller = select.poll()
        poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        self.current = (sock, poller, time.monotonic(), entry)
        self.entries.append(entry)
        self.ctx.log(f"stalled {kind} client connected")

    def watch(self, final: bool = False) -> None:
        """Whether Veylor let go of the stalled client. A Unix client sees its end at once;
        a TCP client may not: Veylor's socket, closed with a megabyte of unsent data, stays
        in the kernel (FIN_WAIT1, an orphan no process holds) until the client reads or the
        kernel gives up, so what counts is that Veylor no longer holds it (/proc)."""
        if self.current is None:
            return
        sock, poller, since, entry = self.current
        now = time.monotonic()
        how = ""
        if poller.poll(0):
            how = "closed"
        elif entry["kind"] == "ws" and (final or now - self.checked >= 0.5):
            self.checked = now
            if not veylor_holds(self.veylor.pid, self.veylor.ws_port, sock.getsockname()[1]):
                how = "released (its socket no longer in Veylor's fds)"
        if how:
            entry["disconnected_after_s"] = round(now - since, 1)
            entry["how"] = how
            self.ctx.log(
                f"stalled {entry['kind']} client {how} by Veylor after {entry['disconnected_after_s']}s"
            )
        elif now - since > self.deadline or final:
            entry["error"] = f"still connected after {now - since:.0f}s"
            self.ctx.log(f"stalled {entry['kind']} client: {entry['error']}")
        else:
            return
        sock.close()
        self.current = None

    def close(self) -> None:
        """Close the stalled client now, if any (the run is over)."""
        if self.current is not None:
            self.current[0].close()
