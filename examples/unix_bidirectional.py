#!/usr/bin/env python3
"""Send each line of standard input upstream over a Veylor Unix socket; print what comes back.

Length-prefixed framing (Veylor 1.x) in both directions. The route to this endpoint
must have `upstream: true` (Veylor 1.x files always do).

    python examples/unix_bidirectional.py /run/veylor/ticker.sock
"""

import argparse
import asyncio
import struct
import sys


async def main(path: str) -> None:
    reader, writer = await asyncio.open_unix_connection(path)

    async def printer() -> None:
        while True:
            (length,) = struct.unpack("!I", await reader.readexactly(4))
            print((await reader.readexactly(length)).decode(errors="replace"), flush=True)

    printing = asyncio.create_task(printer())
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        payload = line.rstrip("\n").encode()
        writer.write(struct.pack("!I", len(payload)) + payload)
        await writer.drain()
    await asyncio.sleep(1)  # let the last answers arrive
    printing.cancel()
    writer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    path = parser.parse_args().path
    try:
        asyncio.run(main(path))
    except (KeyboardInterrupt, asyncio.IncompleteReadError):
        pass
    except OSError as exc:
        sys.exit(f"{path}: {exc.strerror or exc}")
