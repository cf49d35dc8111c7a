#!/usr/bin/env python3
"""A stand-in upstream feed: streams trade-like JSON and echoes what clients send.

python examples/demo_upstream.py --port 9000 --rate 20
# then point a source at ws://127.0.0.1:9000/
"""

import argparse
import asyncio
import itertools
import json
import random
import time

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

PRICES = {"BTCUSDT": 64000.0, "ETHUSDT": 3400.0, "SOLUSDT": 150.0}


async def handler(conn: ServerConnection, rate: float) -> None:
    async def stream() -> None:
        for seq in itertools.count(1):
            symbol = random.choice(list(PRICES))
            PRICES[symbol] *= 1 + random.uniform(-0.0005, 0.0005)
            trade = {
                "e": "trade",
                "s": symbol,
                "p": round(PRICES[symbol], 2),
                "seq": seq,
                "T": int(time.time() * 1000),
            }
            await conn.send(json.dumps(trade))
            await asyncio.sleep(1 / rate)

    streaming = asyncio.create_task(stream())
    try:
        async for message in conn:
            await conn.send(
                json.dumps({"e": "echo", "data": message if isinstance(message, str) else message.hex()})
            )
    except ConnectionClosed:
        pass
    finally:
        streaming.cancel()


async def main(host: str, port: int, rate: float) -> None:
    async with serve(lambda c: handler(c, rate), host, port):
        print(f"demo upstream on ws://{host}:{port}/ ({rate:g} msg/s)", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--rate", type=float, default=10.0)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.host, args.port, args.rate))
    except KeyboardInterrupt:
        pass
