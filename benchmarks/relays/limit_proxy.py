"""Reference relay, the "limit proxy": the least a relay can do per message. Each upstream
message is framed once; the frames of one event-loop pass are joined and written to every
client with one transport.write. No filters, no policies, no metrics, no checks.

    python limit_proxy.py --upstream ws://127.0.0.1:9000/ (--port 8765 | --unix PATH)
"""

import argparse
import asyncio
import struct

import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


def ws_frame(data: bytes) -> bytes:
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + data
    return struct.pack("!BBQ", 0x81, 127, n) + data


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    transports: set = set()
    pending: list[bytes] = []

    def flush() -> None:
        data = b"".join(pending)
        pending.clear()
        for transport in transports:
            transport.write(data)

    async def ws_handler(conn) -> None:
        transports.add(conn.transport)
        try:
            await conn.wait_closed()
        finally:
            transports.discard(conn.transport)

    async def unix_handler(reader, writer) -> None:
        transports.add(writer.transport)
        try:
            await reader.read()
        finally:
            transports.discard(writer.transport)

    if args.unix:
        server = await asyncio.start_unix_server(unix_handler, args.unix)
        frame = lambda d: len(d).to_bytes(4, "big") + d  # noqa: E731
    else:
        server = await serve(ws_handler, "127.0.0.1", args.port, compression=None)
        frame = ws_frame
    async with connect(args.upstream, compression=None, max_size=None) as upstream:
        while True:
            data = await upstream.recv(decode=False)
            if not pending:
                loop.call_soon(flush)
            pending.append(frame(data))
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--unix")
    uvloop.run(main(parser.parse_args()))
