#!/usr/bin/env python3
"""Print every message a Veylor Unix socket endpoint sends (length-prefixed framing).

This is the Veylor 1.x wire format, so clients written for 1.1 look like this one:
every message is a 4-byte big-endian length, then the payload.

    python examples/unix_client.py /run/veylor/ticker.sock [--count N]
"""

import argparse
import socket
import struct
import sys


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("Veylor closed the connection")
        data += chunk
    return data


def main(path: str, count: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        received = 0
        while count == 0 or received < count:
            (length,) = struct.unpack("!I", recv_exactly(sock, 4))
            print(recv_exactly(sock, length).decode(errors="replace"), flush=True)
            received += 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages (0: never)")
    args = parser.parse_args()
    try:
        main(args.path, args.count)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        sys.exit(f"{args.path}: {exc.strerror or exc}")
    except EOFError:
        sys.exit(f"{args.path}: Veylor closed the connection")
