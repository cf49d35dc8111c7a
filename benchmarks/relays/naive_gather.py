"""Reference relay: the naive one, `await asyncio.gather(*(c.send(m) for c in clients))`
per upstream message. What most hand-written relays look like.

    python naive_gather.py --upstream ws://127.0.0.1:9000/ (--port 8765 | --unix PATH)
"""

import argparse
import asyncio

import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


async def main(args: argparse.Namespace) -> None:
    ws_clients: set = set()
    unix_clients: set = set()

    async def ws_handler(conn) -> None:
        ws_clients.add(conn)
        try:
            await conn.wait_closed()
        finally:
            ws_clients.discard(conn)

    async def unix_handler(reader, writer) -> None:
        unix_clients.add(writer)
        try:
            await reader.read()
        finally:
            unix_clients.discard(writer)

    async def unix_send(writer, frame: bytes) -> None:
        writer.write(frame)
        await writer.drain()

    if args.unix:
        server = await asyncio.start_unix_server(unix_handler, args.unix)
    else:
        server = await serve(ws_handler, "127.0.0.1", args.port, compression=None)
    async with connect(args.upstream, compression=None, max_size=None) as upstream:
        async for message in upstream:
            if args.unix:
                data = message.encode() if isinstance(message, str) else message
                frame = len(data).to_bytes(4, "big") + data
                await asyncio.gather(*(unix_send(w, frame) for w in unix_clients), return_exceptions=True)
            else:
                await asyncio.gather(*(c.send(message) for c in ws_clients), return_exceptions=True)
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--unix")
    uvloop.run(main(parser.parse_args()))
