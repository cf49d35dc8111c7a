"""Reference for memory: a bare websockets server that holds connections and does nothing.

python bare_websockets.py --upstream IGNORED --port 8765
"""

import argparse
import asyncio

import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


async def main(args: argparse.Namespace) -> None:
    async def handler(conn) -> None:
        await conn.wait_closed()

    # It connects upstream only so that the harness sees a relay connect.
    async with (
        serve(handler, "127.0.0.1", args.port, compression=None),
        connect(args.upstream, compression=None),
    ):
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--unix")
    uvloop.run(main(parser.parse_args()))
