#!/usr/bin/env python3
"""Print every message a Veylor WebSocket endpoint sends.

python examples/ws_client.py ws://127.0.0.1:8765/ticker [--count N]
"""

import argparse
import asyncio

from websockets.asyncio.client import connect


async def main(url: str, count: int) -> None:
    async with connect(url) as ws:
        received = 0
        async for message in ws:
            print(
                message if isinstance(message, str) else f"<{len(message)} binary bytes> {message!r}",
                flush=True,
            )
            received += 1
            if received == count:
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages (0: never)")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.url, args.count))
    except KeyboardInterrupt:
        pass
