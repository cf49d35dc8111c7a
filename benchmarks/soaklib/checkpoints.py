"""Checkpoints: once a minute (churn paused for about a second), at the start and at the
end, the clients Veylor reports (/graph) against the connections it really holds (/proc)
and the clients known to be connected, its asyncio tasks, and how far behind the staying
clients are."""

from __future__ import annotations

import json
import time

from harness.process import Process

from soaklib.context import Context, Veylor
from soaklib.held import describe_socket, held_sockets
from soaklib.stalls import Stalls
from soaklib.upstream import Upstream

DEAD_SOCKET_GRACE = 15.0  # seconds Veylor may keep a socket that is no longer a connection


class Checkpoints:
    """The run's checkpoints (``entries``) and its /graph task counts (``tasks_samples``)."""

    def __init__(
        self,
        ctx: Context,
        veylor: Veylor,
        upstream: Upstream,
        stalls: Stalls,
        clients: Process,
        churn: Process,
    ) -> None:
        self.ctx = ctx
        self.veylor = veylor
        self.upstream = upstream
        self.stalls = stalls
        self.clients = clients
        self.churn = churn
        self.entries: list[dict] = []
        self.tasks_samples: list[tuple[float, int]] = []

    def counts(self, expected: int, where: str) -> dict:
        """Veylor's client count (/graph) against the connections it holds (/proc) and
        the clients known to be connected. Churn must be paused. Retried for 3 s: a
        stalled client may be aborted between two readings. A socket Veylor holds that is
        no longer a connection (closed by the kernel, in no table; or a TCP connection not
        established) is given DEAD_SOCKET_GRACE to be let go: a connection being closed
        may wait for a deadline (up to 10 s in Veylor); one held longer fails the check."""
        veylor = self.veylor
        started = time.monotonic()
        dead_seen: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            before = held_sockets(veylor.pid, veylor.ws_port, veylor.unix_path)
            view = veylor.graph()
            after = held_sockets(veylor.pid, veylor.ws_port, veylor.unix_path)
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
                held = [
                    d for fd in after["unlisted"][:5] if (d := describe_socket(veylor.pid, fd)) is not None
                ]
                if held or not after["unlisted"]:  # (fds already closed: they were closing just then)
                    dead_seen = held or [f"TCP sockets on the WebSocket port by state: {tcp}"]
                    self.ctx.log(
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

    def take(self, where: str, resume: bool = True) -> dict:
        """One checkpoint, churn paused (and resumed after it unless ``resume`` is False)."""
        a = self.ctx.args
        self.churn.ask("pause", "paused")
        time.sleep(1.0)  # Veylor processes the churn clients' last closes
        self.stalls.watch()
        entry = self.counts(a.ws_clients + a.unix_clients + (self.stalls.current is not None), where)
        self.tasks_samples.append((self.ctx.elapsed(), entry["tasks"]))
        progress = json.loads(self.clients.ask("progress", "{"))
        nxt = self.upstream.next_number()
        entry["lag_messages"] = nxt - progress["min_next"]
        entry["staying_open"] = progress["open"]
        if resume:
            self.churn.send("resume")
        self.entries.append(entry)
        self.ctx.log(
            f"checkpoint {where}: reported {entry['reported']}, held {entry['held']}, known {entry['known']}, "
            f"tasks {entry['tasks']}, clients {entry['lag_messages']} messages behind"
        )
        return entry
