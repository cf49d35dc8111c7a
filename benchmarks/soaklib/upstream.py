"""The upstream: the role (a process of its own, ``soak.py upstream``) that numbers
messages at a fixed rate, and the driver's side of it (:class:`Upstream`): its sessions,
and its restarts in the middle of the stream."""

from __future__ import annotations

import argparse
import signal
import socket
import time

from common import SIZE
from harness.process import Process

from soaklib.checker import payload
from soaklib.client import Commands, say
from soaklib.context import Context, Veylor, wait_for

DOWNTIME = 2.0  # seconds an upstream stays dead before it is started again


def main(args: argparse.Namespace) -> None:
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

    async def serve_and_obey() -> None:
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

        uvloop.run(serve_and_obey())
    except ImportError:  # pragma: no cover
        asyncio.run(serve_and_obey())


class Upstream:
    """The driver's side of the upstream: its process, and its sessions, the numbers
    [first, last] each upstream process sent while Veylor was connected. A restart kills
    the upstream in the middle of its stream and starts the next one on the same port
    DOWNTIME later; the outage is announced: Veylor's ``messages_in`` counter says how many
    messages of the killed upstream reached it, so the last number sent while connected is
    known, and the next upstream numbers on from it plus what a live feed would have sent
    meanwhile."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._process: Process | None = None
        self.port = 0
        self.sessions: list[list[int]] = []
        self.messages_in = 0  # Veylor's count at the end of the previous upstream session
        self.restarts: list[dict] = []

    def start(self, port: int, first: int) -> int:
        """Start an upstream on ``port`` (0: any free one) that numbers from ``first``; its port."""
        a = self.ctx.args
        self._process = process = self.ctx.role(
            "upstream", "--port", str(port), "--start", str(first), "--rate", str(a.rate),
            "--tick-ms", str(a.tick_ms),
        )  # fmt: skip
        self.port = int(process.expect("listening", 30).split()[1])
        self.sessions.append([first, first - 1])
        return self.port

    @property
    def process(self) -> Process:
        """The upstream process running now."""
        if self._process is None:
            raise RuntimeError("the upstream was not started")
        return self._process

    def next_number(self) -> int:
        """The number of the next message the upstream sends."""
        return int(self.process.ask("seq", "seq").split()[1])

    def stop(self) -> int:
        """Stop the feed (the process stays); the last number sent, which ends the session."""
        last = int(self.process.ask("stop", "stopped").split()[1])
        self.sessions[-1][1] = last
        return last

    def restart(self, veylor: Veylor) -> None:
        """Kill the upstream in the middle of its stream; start it again DOWNTIME later."""
        ctx = self.ctx
        entry: dict = {"at_s": round(ctx.elapsed(), 1)}
        old = self.process
        disconnects = veylor.graph()["sources"]["feed"]["disconnects"]
        killed_at = time.monotonic()
        old.kill(signal.SIGKILL)
        ctx.children.remove(old)
        try:
            view = wait_for(
                "Veylor to see the upstream gone",
                lambda: (v := veylor.graph())["sources"]["feed"]["disconnects"] > disconnects and v,
                10,
                0.02,
            )
            seen = view["sources"]["feed"]["messages_in"]
            first = self.sessions[-1][0]
            last = first + (seen - self.messages_in) - 1
            self.sessions[-1][1] = last
            self.messages_in = seen
            time.sleep(max(0.0, killed_at + DOWNTIME - time.monotonic()))
            skipped = round(ctx.args.rate * (time.monotonic() - killed_at))
            nxt = last + 1 + skipped
            self.start(self.port, nxt)
            wait_for(
                "Veylor to reconnect",
                lambda: veylor.graph()["sources"]["feed"]["state"] == "connected",
                30,
                0.05,
            )
            entry.update(
                last_before=last,
                first_after=nxt,
                skipped=skipped,
                outage_s=round(time.monotonic() - killed_at, 2),
            )
            ctx.log(f"upstream restarted: last {last} before, {nxt} after, outage {entry['outage_s']}s")
        except (OSError, RuntimeError, TimeoutError) as exc:
            entry["error"] = str(exc)
            ctx.log(f"upstream restart failed: {exc}")
        self.restarts.append(entry)
