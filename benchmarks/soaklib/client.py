"""A soak client's socket (WebSocket or Unix, raw and non-blocking, checked by
:class:`~soaklib.checker.Stream`), and the control channel of the roles: commands on
standard input, answers on standard output."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import time

from common import masked

from soaklib.checker import Expected, Stream


def ws_request(port: int, path: str = "/") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class Conn:
    """One client socket (non-blocking) with its checker; WebSocket or Unix."""

    __slots__ = ("closed_at", "deadline", "eof", "fd", "hs", "kind", "mode", "sock", "stream")

    def __init__(self, sock: socket.socket, kind: str, exps: dict[str, Expected]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.kind = kind  # "ws" or "unix"
        ws = kind == "ws"
        self.hs: bytes | None = b"" if ws else None  # the handshake's response, until complete
        self.stream = Stream(exps[kind], ws, self.pong)
        self.eof = False
        self.closed_at = 0.0
        self.deadline = 0.0  # churn: when it leaves
        self.mode = ""  # churn: how it leaves

    def pong(self, body: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(masked(0xA, body))

    def readable(self) -> bool:
        """Read what is there; False when the connection ended."""
        try:
            data = self.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        if self.hs is not None:
            self.hs += data
            end = self.hs.find(b"\r\n\r\n")
            if end < 0:
                return True
            if not self.hs.startswith(b"HTTP/1.1 101"):
                self.eof = True
                return False
            data = self.hs[end + 4 :]
            self.hs = None
            if not data:
                return True
        self.stream.feed(data)
        return True


def connect(kind: str, ws_port: int, unix_path: str, rcvbuf: int = 0) -> socket.socket:
    """A connected socket (blocking connect on loopback), made non-blocking."""
    if kind == "ws":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", ws_port))
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        for attempt in range(50):  # a full backlog answers EAGAIN on Unix sockets
            try:
                sock.connect(unix_path)
                break
            except BlockingIOError:
                time.sleep(0.01 * (attempt + 1))
    sock.setblocking(False)
    return sock


def rst(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Commands:
    """Lines on standard input, read without blocking (the roles' control channel)."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.eof = False

    def lines(self) -> list[str]:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        if not data:
            self.eof = True
            return ["quit"]
        self.buf += data
        *done, self.buf = self.buf.split(b"\n")
        return [line.decode().strip() for line in done if line.strip()]


def say(obj: object) -> None:
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))) + "\n")
    sys.stdout.flush()
