#!/usr/bin/env python3
"""Print every message a Veylor WebSocket endpoint sends.

python examples/ws_client.py ws://127.0.0.1:8765/ticker [--count N]
"""

import argparse
import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidHandshake, InvalidStatus, InvalidURI


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
    except InvalidStatus as exc:
        code = exc.response.status_code
        hint = {404: " (no Veylor endpoint at this path)", 503: " (the endpoint is full: max_clients)"}
        sys.exit(f"{args.url}: the server answered HTTP {code}{hint.get(code, '')}")
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        sys.exit(f"{args.url}: cannot connect: {exc}")
    except ConnectionClosedError as exc:
        sys.exit(f"{args.url}: connection closed: {exc}")
