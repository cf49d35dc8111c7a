"""Real nats-server processes on 127.0.0.1 for the scale-out tests: one server, or a
cluster of several (routes between all of them), each node killable and restartable.

Uses Debian's ``nats-server`` (2.9); tests that need it are skipped where it is not
installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from helpers import free_port

NATS_SERVER = shutil.which("nats-server")
needs_nats = pytest.mark.skipif(
    NATS_SERVER is None, reason="nats-server is not installed (apt-get install nats-server)"
)


class Node:
    """One nats-server process."""

    def __init__(
        self, name: str, port: int, cluster_port: int, routes: list[int], store: Path | None
    ) -> None:
        self.name = name
        self.port = port
        self.cluster_port = cluster_port
        self.routes = routes
        self.store = store
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path: Path | None = None
        self.args_extra: list[str] = []  # more nats-server options (--user, --pass)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        assert NATS_SERVER is not None
        args = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-n", self.name]
        if self.routes:
            args += [
                "--cluster_name",
                "veylor-test",
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
                "--routes",
                ",".join(f"nats://127.0.0.1:{p}" for p in self.routes),
            ]
        if self.store is not None:
            args += ["-js", "-sd", str(self.store)]
        return args + self.args_extra

    async def start(self, log_dir: Path) -> None:
        self.log_path = log_dir / f"{self.name}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = await asyncio.create_subprocess_exec(*self.args(), stdout=log, stderr=log)
        log.close()
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            if self.proc.returncode is not None or asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"nats-server {self.name} did not start:\n{self.log_path.read_text()}")
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path is not None else ""


class Cluster:
    """``size`` nats-server nodes on loopback ports, routed to each other (a full mesh)."""

    def __init__(self, size: int, workdir: Path, jetstream: bool = False) -> None:
        ports = [free_port() for _ in range(size)]
        cluster_ports = [free_port() for _ in range(size)] if size > 1 else [0]
        self.workdir = workdir
        self.nodes = [
            Node(
                f"n{i + 1}",
                ports[i],
                cluster_ports[i],
                [p for j, p in enumerate(cluster_ports) if j != i] if size > 1 else [],
                (workdir / f"js{i + 1}") if jetstream else None,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    async def start(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(*(n.start(self.workdir) for n in self.nodes))
        if len(self.nodes) > 1:
            await self.wait_routed()
        return self

    async def wait_routed(self, timeout: float = 15.0) -> None:
        """Until a message published on each node reaches a subscriber on every other."""
        import nats

        clients = [await nats.connect(n.url, allow_reconnect=False) for n in self.nodes if n.proc is not None]
        try:
            subs = [await c.subscribe("_test.routed") for c in clients]
            for c in clients:
                await c.flush()
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                for c in clients:
                    await c.publish("_test.routed", b"x")
                    await c.flush()
                try:
                    for s in subs:
                        for _ in range(len(clients)):
                            await s.next_msg(timeout=0.3)
                    return
                except Exception:  # (not yet: routes still forming)
                    if asyncio.get_running_loop().time() > deadline:
                        raise AssertionError("the NATS cluster did not form") from None
                    for s in subs:  # drain what came
                        while True:
                            try:
                                await s.next_msg(timeout=0.01)
                            except Exception:
                                break
        finally:
            for c in clients:
                await c.close()

    async def stop(self) -> None:
        await asyncio.gather(*(n.kill() for n in self.nodes))


@contextlib.asynccontextmanager
async def nats_cluster(workdir: Path, size: int = 1, jetstream: bool = False) -> AsyncIterator[Cluster]:
    cluster = await Cluster(size, workdir, jetstream).start()
    try:
        yield cluster
    finally:
        await cluster.stop()


class Proxy:
    """A TCP relay on 127.0.0.1 in front of one NATS server that can freeze: bytes stop
    flowing both ways on every connection (none is closed), and new connections are
    accepted but not relayed, until it thaws. What a dead route, a firewall that forgot
    the connection or a hung server look like to a client."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        for t in list(self.tasks):
            t.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.flowing.wait()
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self.writers.append(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except Exception:
            pass
        finally:
            self.tasks.discard(task)
            writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
