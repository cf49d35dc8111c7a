"""Test doubles that are real: an upstream WebSocket server, Veylor as a subprocess or
in-process, WebSocket and Unix clients. Everything on 127.0.0.1 or temporary Unix paths."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from veylor.config import load_config
from veylor.control import Controller
from veylor.graph import build_graph
from veylor.runtime import Runtime

_PR_CAPBSET_DROP = 24
_FILE_CAPS = (1, 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


def obey_file_permissions() -> None:
    """A ``preexec_fn``: the child obeys file permissions even when it runs as root (the
    CI does): it loses the capabilities that let root read what it may not. A test
    that chmods a file to 000 then sees what an unprivileged Veylor would."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _FILE_CAPS:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def can_drop_file_permissions() -> bool:
    """Whether a child started with :func:`obey_file_permissions` is refused a file with
    mode 000 here (as root it needs CAP_SETPCAP to drop the capabilities)."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        os.chmod(f.name, 0)
        try:
            result = subprocess.run(
                [sys.executable, "-c", f"open({f.name!r}).read()"],
                preexec_fn=obey_file_permissions,
                capture_output=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError):
            return False
    return result.returncode != 0 and b"PermissionError" in result.stderr


# Ports for listeners the tests start, below the kernel's ephemeral range (32768-60999:
# where connections' own local ports come from, so a port picked there can be taken by a
# client's connection before the listener binds it), one block of 800 per xdist worker
# (parallel workers never pick each other's), from a random place in the block (runs in
# other checkouts at the same time rarely meet), each checked free before it is given.
_PORT_BLOCK = 800
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 15
_next_port = random.randrange(_PORT_BLOCK)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (see above)."""
    global _next_port
    base = 20000 + _WORKER * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        port = base + _next_port % _PORT_BLOCK
        _next_port += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}-{base + _PORT_BLOCK - 1}")


async def eventually(
    predicate, timeout: float = 5.0, interval: float = 0.01, what: str = "condition"
) -> None:
    """Wait until ``predicate()`` is true, or fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


class Upstream:
    """A real upstream WebSocket server that counts its connections, records what it
    receives, and sends what the test tells it to, to every connected relay."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server: Server | None = None
        self.connections: list[ServerConnection] = []
        self.connects = 0
        self.received: list[str | bytes] = []
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.close_immediately = False

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/feed"

    async def _handler(self, conn: ServerConnection) -> None:
        self.connects += 1
        self.headers.append({k.lower(): v for k, v in conn.request.headers.raw_items()})
        self.paths.append(conn.request.path)
        if self.close_immediately:
            await conn.close()
            return
        self.connections.append(conn)
        try:
            async for message in conn:
                self.received.append(message)
        except ConnectionClosed:
            pass
        finally:
            if conn in self.connections:
                self.connections.remove(conn)

    async def start(self) -> Upstream:
        self.server = await serve(self._handler, "127.0.0.1", self.port, compression=None)
        return self

    async def stop(self, abort: bool = False) -> None:
        """Stop the server; ``abort`` drops connections without a close frame (1006)."""
        if self.server is None:
            return
        if abort:
            for conn in list(self.connections):
                conn.transport.abort()
            self.server.close(close_connections=False)
        else:
            self.server.close()
        await self.server.wait_closed()
        self.server = None
        self.connections.clear()

    async def send(self, message: str | bytes) -> None:
        for conn in list(self.connections):
            await conn.send(message)

    async def wait_connected(self, count: int = 1, timeout: float = 10.0) -> None:
        await eventually(
            lambda: len(self.connections) >= count, timeout, what=f"{count} upstream connections"
        )


@contextlib.asynccontextmanager
async def veylor_inprocess(tmp_path: Path, config: str, name: str = "config.yaml") -> AsyncIterator[Runtime]:
    """Run a Veylor runtime for ``config`` (YAML text) in this event loop."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(config))
    graph = build_graph(load_config(path, env={}))
    runtime = Runtime()
    controller = Controller(runtime)  # (the admin endpoint, if the config has one)
    await controller.start(graph)
    try:
        yield runtime
    finally:
        await controller.stop()


class VeylorProcess:
    """``python -m veylor ARGS`` as a real subprocess, with its stderr collected."""

    def __init__(
        self,
        *args: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        obey_permissions: bool = False,
    ) -> None:
        self.args = args
        self.preexec = obey_file_permissions if obey_permissions else None
        self.cwd = cwd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self.stdout = ""

    async def start(self, ready: str | None = "ready:", timeout: float = 15.0) -> VeylorProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "veylor",
            *self.args,
            cwd=self.cwd,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=self.preexec,
        )
        self._reader = asyncio.create_task(self._read())
        if ready is not None:
            await self.wait_for(ready, timeout)
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, text: str, timeout: float = 10.0, count: int = 1) -> str:
        """The ``count``-th line (from the start) that contains ``text``, when it comes."""

        async def found() -> str:
            while True:
                seen = 0
                for line in self.lines:
                    if text in line:
                        seen += 1
                        if seen == count:
                            return line
                if self.proc is not None and self.proc.returncode is not None and self._reader.done():
                    raise AssertionError(
                        f"veylor exited ({self.proc.returncode}) before {text!r}:\n{self.log}"
                    )
                await asyncio.sleep(0.02)

        try:
            return await asyncio.wait_for(found(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {text!r} in veylor's log within {timeout}s:\n{self.log}") from None

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 10.0) -> int:
        assert self.proc is not None and self._reader is not None
        out = await asyncio.wait_for(self.proc.stdout.read(), timeout)  # type: ignore[union-attr]
        self.stdout = out.decode(errors="replace")
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, timeout)
        return code

    async def stop(self) -> None:
        """Kill it if it is still running (test cleanup)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


def raw_handshake(path: str = "/") -> bytes:
    """The opening handshake of a hand-made WebSocket client (no extensions offered)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def stalled_ws_client(port: int, path: str = "/") -> socket.socket:
    """A WebSocket client that completes the handshake, then never reads nor answers pings
    (blocking: call it with ``asyncio.to_thread``)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(raw_handshake(path))
    sock.settimeout(5)
    assert sock.recv(1024).startswith(b"HTTP/1.1 101")
    return sock


async def pump(upstream: Upstream, stop: asyncio.Event, size: int, burst: int) -> None:
    """Send numbered messages (an 8-digit counter, then ``size`` bytes of padding) from the
    upstream in bursts of ``burst``, as fast as it can, until ``stop`` is set."""
    conn = upstream.connections[0]
    i = 0
    while not stop.is_set():
        await asyncio.gather(*(conn.send(f"{i + k:08d}" + "x" * size) for k in range(burst)))
        i += burst


class UnixClient:
    """A Veylor 1.x style Unix socket client: 4-byte big-endian length, then the payload."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: str | Path) -> UnixClient:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def recv(self, timeout: float = 5.0) -> bytes:
        header = await asyncio.wait_for(self.reader.readexactly(4), timeout)
        (n,) = struct.unpack("!I", header)
        return await asyncio.wait_for(self.reader.readexactly(n), timeout)

    async def send(self, payload: bytes) -> None:
        self.writer.write(struct.pack("!I", len(payload)) + payload)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def ws_client(url: str, **kwargs):
    return await connect(url, open_timeout=5, compression=None, **kwargs)


NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def quiet_veylor(*args: str, env: dict[str, str] | None = None) -> VeylorProcess:
    """A Veylor process that sees exactly the systemd notify variables given in ``env``
    (none inherited from a test runner that itself runs under systemd)."""
    proc = VeylorProcess(*args, env=env)
    for name in NOTIFY_VARS:
        if name not in (env or {}):
            proc.env.pop(name, None)
    return proc


# ------------------------------------------------------------------ a test PKI


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(where: Path, name: str = "ca") -> Path:
    """A test certificate authority (EC P-256, two days)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    where.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=Veylor test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=where,
    )  # fmt: skip
    return where / f"{name}.pem"


def make_cert(where: Path, ca: Path, name: str) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 and localhost, signed by ``ca``."""
    (where / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", "/CN=127.0.0.1", cwd=where,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca), "-CAkey", str(ca.with_suffix(".key")),
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=where,
    )  # fmt: skip
    return where / f"{name}.pem", where / f"{name}.key"


def docs_generator() -> Any:
    """docs/gen_configuration.py, a script rather than a module of the package (loaded
    once, shared by the docs' tests)."""
    if "gen_configuration" in sys.modules:
        return sys.modules["gen_configuration"]
    path = Path(__file__).resolve().parents[1] / "docs" / "gen_configuration.py"
    spec = importlib.util.spec_from_file_location("gen_configuration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_configuration"] = module
    spec.loader.exec_module(module)
    return module


class Clock:
    """A clock the test moves by hand (``clock.now += 1.5``), for the pure cores that take
    one (sequence tracking, the buffer budget)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
