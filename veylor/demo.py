"""``veylor demo``: a synthetic ticker upstream on loopback, relayed by a real Veylor.

The demo goes through the same path as production: it writes a configuration file,
loads and validates it with the normal loader, and runs the normal runtime.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import random
import shutil
import socket
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

from websockets.asyncio.server import Server as UpstreamServer
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from .server import Server

log = logging.getLogger("veylor.demo")

SYMBOLS = {"BTCUSDT": 64000.0, "ETHUSDT": 3400.0, "SOLUSDT": 150.0, "XRPUSDT": 0.6}


def ticks(rng: random.Random) -> Iterator[str]:
    """An endless stream of trade-like JSON messages (a random walk per symbol)."""
    prices = dict(SYMBOLS)
    for seq in itertools.count(1):
        symbol = rng.choice(list(prices))
        prices[symbol] *= 1 + rng.uniform(-0.0005, 0.0005)
        yield json.dumps(
            {
                "e": "trade",
                "s": symbol,
                "p": round(prices[symbol], 4),
                "q": round(rng.uniform(0.001, 2), 4),
                "seq": seq,
                "T": int(time.time() * 1000),
            },
            separators=(",", ":"),
        )


async def demo_upstream(host: str = "127.0.0.1", port: int = 0, rate: float = 10.0) -> UpstreamServer:
    """A WebSocket server that streams ticks to each connection at ``rate`` messages/s and
    echoes what it receives as ``{"e": "echo", "data": ...}``."""

    async def handler(conn: ServerConnection) -> None:
        rng = random.Random()
        stream = ticks(rng)

        async def produce() -> None:
            while True:
                await conn.send(next(stream))
                await asyncio.sleep(1 / rate)

        producer = asyncio.create_task(produce())
        try:
            async for message in conn:
                text = message if isinstance(message, str) else message.decode(errors="replace")
                await conn.send(json.dumps({"e": "echo", "data": text}))
        except ConnectionClosed:
            pass
        finally:
            producer.cancel()

    return await ws_serve(handler, host, port, logger=logging.getLogger("veylor.demo.upstream"))


DEMO_CONFIG = """\
# Written by `veylor demo`: the demo's configuration, loaded like any other.
sources:
  demo:
    url: ws://127.0.0.1:{upstream_port}/
    on_connect:
      - {{op: subscribe, channel: trades}}
    reconnect: {{initial_delay: 0.2, max_delay: 2}}
admin: {{listen: "127.0.0.1:{admin_port}"}}  # /metrics, /graph, POST /reload; `veylor status`
endpoints:
  ticker:
    websocket: {{host: 127.0.0.1, port: {port}, path: /ticker}}
  btc:
    websocket: {{host: 127.0.0.1, port: {port}, path: /btc}}
  ipc:
    unix: {{path: {sock}}}
routes:
  everything:
    from: demo
    to: [ticker, ipc]
    upstream: true          # clients of /ticker and the socket may talk to the upstream
  btc-only:
    from: demo
    to: btc
    filter: {{json: {{path: s, equals: BTCUSDT}}}}
"""


def _shortest(path: str) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full)
    return rel if not rel.startswith("..") else full


def python_command() -> str:
    """How to run this Python from where the user stands: ``python3`` only when that is
    the one on PATH (a virtual environment's python is not, unless activated)."""
    on_path = shutil.which("python3")
    if on_path and os.path.realpath(on_path) == os.path.realpath(sys.executable):
        return "python3"
    return _shortest(sys.executable)


def _free_port() -> int:
    """A port nobody listens on now, for the demo's admin endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def veylor_command() -> str:
    """How to run this Veylor from where the user stands (``veylor``, ``.venv/bin/veylor``
    or ``python -m veylor``), as it was started."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "veylor":
        on_path = shutil.which("veylor")
        if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
            return "veylor"
        return _shortest(argv0)
    return f"{python_command()} -m veylor"


async def run_demo(port: int, rate: float, tui: bool = False) -> int:
    upstream = await demo_upstream(rate=rate)
    upstream_port = next(iter(upstream.sockets)).getsockname()[1]
    workdir = Path(tempfile.mkdtemp(prefix="veylor-demo-"))
    sock = workdir / "demo.sock"
    config_path = workdir / "config.yaml"
    admin_port = _free_port()
    config_path.write_text(
        DEMO_CONFIG.format(upstream_port=upstream_port, port=port, sock=sock, admin_port=admin_port)
    )
    server = Server.load(str(config_path), watch="off")
    py = python_command()
    veylor = veylor_command()
    unix_client = Path("examples/unix_client.py")
    unix_hint = (
        f"{py} {unix_client} {sock}"
        if unix_client.exists()
        else f"socat - UNIX-CONNECT:{sock}  (1.x length-prefixed)"
    )

    def ready(_server: Server) -> None:
        print(
            textwrap.dedent(
                f"""
                Veylor demo: a synthetic ticker (ws://127.0.0.1:{upstream_port}/, {rate:g} msg/s) relayed to:

                  every trade, and you can type messages upstream (echoed back):
                    {py} -m websockets ws://127.0.0.1:{port}/ticker
                  BTCUSDT trades only (a JSON filter):
                    {py} -m websockets ws://127.0.0.1:{port}/btc
                  every trade over a Unix socket (Veylor 1.x framing):
                    {unix_hint}

                The configuration is {config_path} (try: {veylor} check -c {config_path}).
                Its state, once (status: {veylor} status -c {config_path}), or live in the terminal UI:
                  {veylor} top -c {config_path}
                Its metrics:
                  curl -s http://127.0.0.1:{admin_port}/metrics
                (Or run the demo with the terminal UI in this terminal: {veylor} demo --tui)
                Press Ctrl-C to stop.
                """
            ),
            flush=True,
        )

    try:
        if tui:
            from .tui.run import in_process

            code = await server.serve(on_ready=in_process)
        else:
            code = await server.serve(on_ready=ready)
        if code == 1:
            log.error("is port %d taken? run the demo on another one: %s demo --port PORT", port, veylor)
        return code
    finally:
        upstream.close()
        await upstream.wait_closed()
        for path in (sock, config_path):
            path.unlink(missing_ok=True)
        workdir.rmdir()
