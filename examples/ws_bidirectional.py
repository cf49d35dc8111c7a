#!/usr/bin/env python3
"""Send each line of standard input upstream through Veylor and print what comes back.

The route to this endpoint must have `upstream: true`.

    python examples/ws_bidirectional.py ws://127.0.0.1:8765/ticker
"""

import argparse
import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidHandshake, InvalidStatus, InvalidURI


async def main(url: str) -> None:
    async with connect(url) as ws:

        async def printer() -> None:
            async for message in ws:
                print(message, flush=True)

        printing = asyncio.create_task(printer())
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            await ws.send(line.rstrip("\n"))
        await asyncio.sleep(1)  # let the last answers arrive
        printing.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    url = parser.parse_args().url
    try:
        asyncio.run(main(url))
    except KeyboardInterrupt:
        pass
    except InvalidStatus as exc:
        code = exc.response.status_code
        hint = {404: " (no Veylor endpoint at this path)", 503: " (the endpoint is full: max_clients)"}
        sys.exit(f"{url}: the server answered HTTP {code}{hint.get(code, '')}")
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        sys.exit(f"{url}: cannot connect: {exc}")
    except ConnectionClosedError as exc:
        sys.exit(f"{url}: connection closed: {exc}")
