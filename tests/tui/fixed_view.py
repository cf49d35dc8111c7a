"""A fixed state view, for pictures of the TUI that do not change from one run to the
next (snapshot tests, the README's screenshot)."""

from __future__ import annotations

import copy
from typing import Any

T0 = 1_790_000_000.0


def view(at: float, scale: int) -> dict[str, Any]:
    """The state of a small market-data deployment ``at`` seconds after T0, its counters
    grown ``scale`` times."""
    n = scale
    return {
        "schema": 1,
        "version": "2.0.0",
        "pid": 4242,
        "time": T0 + at,
        "started": T0 - 3600,
        "uptime": 3600 + at,
        "config": {"generation": 3, "digest": "4e1c0a9b27d3f00dfeedbeef"},
        "reloads": {
            "ok": 2,
            "failed": 0,
            "last": {
                "reason": "file change: 50-dashboard.yaml",
                "ok": True,
                "applied": True,
                "generation": 3,
                "digest": "4e1c0a9b27d3f00dfeedbeef",
                "changes": ["+ route dashboard-majors", "+ endpoint dashboard"],
                "steps": [],
                "problems": [],
                "error": None,
                "at": T0 - 60,
                "duration_ms": 6.0,
            },
        },
        "sources": {
            "binance": {
                "kind": "websocket",
                "state": "connected",
                "url": "wss://stream.binance.com:9443/ws/btcusdt@trade",
                "connected_since": T0 - 3000,
                "next_attempt_at": None,
                "ping_rtt": 0.012,
                "failures": 0,
                "last_error": None,
                "attempts": 2,
                "bytes_in": 9_200_000 * n,
                "connects": 2,
                "disconnects": 1,
                "invalid_utf8": 0,
                "messages_in": 120_000 * n,
                "queued_dropped": 0,
                "sent_up": 3,
                "last_message_at": T0 + at,
            },
            "kraken": {
                "kind": "websocket",
                "state": "backoff",
                "url": "wss://ws.kraken.com/",
                "connected_since": None,
                "next_attempt_at": T0 + at + 12,
                "ping_rtt": None,
                "failures": 4,
                "last_error": "connection refused",
                "attempts": 9,
                "bytes_in": 310_000,
                "connects": 5,
                "disconnects": 5,
                "invalid_utf8": 0,
                "messages_in": 4_100,
                "queued_dropped": 0,
                "sent_up": 0,
                "last_message_at": T0 - 95,
            },
            "coinbase": {
                "kind": "websocket",
                "state": "connected",
                "url": "wss://ws-feed.exchange.coinbase.com",
                "connected_since": T0 - 240,
                "next_attempt_at": None,
                "ping_rtt": 0.0,
                "failures": 0,
                "last_error": None,
                "attempts": 3,
                "bytes_in": 2_400_000 * n,
                "connects": 3,
                "disconnects": 2,
                "invalid_utf8": 0,
                "messages_in": 30_000 * n,
                "queued_dropped": 0,
                "sent_up": 0,
                "last_message_at": T0 + at,
            },
        },
        "routes": {
            "all-trades": {
                "from": "binance",
                "to": ["public", "ipc"],
                "filter": "everything",
                "upstream": True,
                "messages": 120_000 * n,
                "filtered": 0,
            },
            "dashboard-majors": {
                "from": "binance",
                "to": ["dashboard"],
                "filter": 'json s in ["BTCUSDT", "ETHUSDT"]',
                "upstream": False,
                "messages": 40_000 * n,
                "filtered": 80_000 * n,
            },
            "kraken": {
                "from": "kraken",
                "to": ["public"],
                "filter": "everything",
                "upstream": False,
                "messages": 4_100,
                "filtered": 0,
            },
            "coinbase-ticks": {
                "from": "coinbase",
                "to": ["mobile"],
                "filter": "everything",
                "upstream": False,
                "messages": 30_000 * n,
                "filtered": 0,
            },
        },
        "edges": [
            {"source": "binance", "route": "all-trades", "endpoint": "public", "messages": 120_000 * n},
            {"source": "binance", "route": "all-trades", "endpoint": "ipc", "messages": 120_000 * n},
            {
                "source": "binance",
                "route": "dashboard-majors",
                "endpoint": "dashboard",
                "messages": 40_000 * n,
            },
            {"source": "kraken", "route": "kraken", "endpoint": "public", "messages": 4_100},
            {"source": "coinbase", "route": "coinbase-ticks", "endpoint": "mobile", "messages": 30_000 * n},
        ],
        "endpoints": {
            "public": _endpoint(
                "ws://0.0.0.0:8765/ticker", 230, 124_100 * 230 * n, ["10.0.0.7:51234", "10.0.0.9:40022"], n
            ),
            "dashboard": _endpoint("ws://127.0.0.1:8766/", 12, 40_000 * 12 * n, ["127.0.0.1:60111"], n),
            "ipc": _endpoint(
                "unix:/run/veylor/ipc.sock (length-prefixed, mode 0660)",
                3,
                120_000 * 3 * n,
                ["unix#1 (pid 812, uid 998)"],
                n,
            ),
            "mobile": _endpoint(
                "ws://0.0.0.0:8767/mobile",
                40,
                30_000 * 40 * n,
                ["10.1.4.20:33010", "10.1.4.31:48822", "10.1.5.2:51002"],
                n,
                behind=[(4_300_000, 1_200 * n), (2_600_000, 0)],
            ),
        },
        "memory": {"limit": 268435456, "laggard_bytes": 0, "peak": 0, "enforced": 0, "trims": 0},
    }


def _endpoint(
    address: str,
    clients: int,
    deliveries: int,
    listed: list[str],
    n: int,
    behind: list[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """An endpoint; ``behind``: the (buffered bytes, dropped) of its first listed clients."""
    behind = behind or []
    slow = [(b, d) for b, d in behind if b >= 4 * 1024 * 1024]
    return {
        "kind": "unix" if address.startswith("unix:") else "websocket",
        "address": address,
        "clients": clients,
        "accepted": clients + 5,
        "refused": 1,
        "messages": deliveries // max(clients, 1),
        "messages_out": deliveries,
        "bytes_out": deliveries * 80,
        "received": 3,
        "discarded": 0,
        "client_list": [
            {
                "client": c,
                "connected_since": T0 - 600 * (i + 1),
                "messages": 50_000 * n - i,
                "dropped": behind[i][1] if i < len(behind) else 0,
                "buffered": behind[i][0] if i < len(behind) else 0,
            }
            for i, c in enumerate(listed)
        ],
        "clients_not_listed": 0,
        "client_buffer": 4 * 1024 * 1024,
        "slow_clients": len(slow),
        "dropped": (0 if clients < 100 else 7 * n) + sum(d for _, d in slow),
        "lost_slow": 0,
    }


TAPPED = [
    '{"e":"trade","s":"BTCUSDT","p":"67012.10","q":"0.004"}',
    '{"e":"trade","s":"ETHUSDT","p":"3120.55","q":"1.200"}',
    "<binary, 24 bytes> 00 01 02 03 04 05 06 07",
]


class FixedReader:
    """A reader that gives the same two snapshots, a second apart, then the second again."""

    where = "fixed (demo data)"
    clients_of: str | bool | None = None
    tap: str | None = None

    def __init__(self) -> None:
        self.views = [view(0.0, 10), view(1.0, 11)]

    async def read(self) -> dict[str, Any]:
        view = copy.deepcopy(self.views.pop(0) if len(self.views) > 1 else self.views[0])
        if self.tap is not None:
            view["tap"] = {"route": self.tap, "seen": 42, "messages": TAPPED}
        return view

    async def reload(self) -> dict[str, Any]:
        return {"changes": [], "problems": [], "error": None}

    async def close(self) -> None:
        pass
