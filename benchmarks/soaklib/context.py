"""What every part of a soak run shares: its settings, directory, clock, events and
checks, the processes it started, and the Veylor under test."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import fd_count, rss_mib
from harness.process import Process

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]  # the checkout: ``python -m veylor`` runs from here
SOAK = ROOT / "benchmarks" / "soak.py"  # the command, which also starts the roles


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, every: float = 0.1) -> Any:
    """``predicate()``'s first true value, tried every ``every`` seconds; TimeoutError
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)


class Context:
    """One run's settings, its temporary directory (every process's log is there), its
    clock, the events it logs and the checks it records, and the processes it started:
    each in a session of its own, killed at the end, and dying with the driver."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="veylor-soak-"))
        self.children: list[Process] = []
        self.checks: list[dict] = []
        self.events: list[str] = []
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self.t0

    def log(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {text}"
        self.events.append(line)
        if self.args.verbose:
            print(line, file=sys.stderr, flush=True)

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})
        if not ok:
            self.log(f"CHECK FAILED: {name}: {detail}")
        return ok

    def spawn(self, args: list[str], log: str, cwd: Path = ROOT) -> Process:
        """Start a process of the run, its standard error appended to ``log`` in the
        run's directory, its standard output read line by line."""
        child = Process(
            args,
            cwd=cwd,
            stdin=True,
            read="stdout",
            log=self.dir / log,
            append=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            die_with_parent=True,
        )
        self.children.append(child)
        return child

    def role(self, role: str, *extra: str) -> Process:
        """Start one of the roles (``soak.py ROLE ...``)."""
        return self.spawn([PY, str(SOAK), role, *extra], log=f"{role}.log")

    def kill_children(self) -> None:
        for child in reversed(self.children):
            child.kill()


class Veylor:
    """The Veylor under test: its process, its admin endpoint, the addresses of its
    WebSocket and Unix endpoints, and its memory and file descriptors sampled as the run
    goes."""

    def __init__(self, process: Process, admin_port: int, ws_port: int, unix_path: str) -> None:
        self.process = process
        self.pid = process.pid
        self.admin_port = admin_port
        self.ws_port = ws_port
        self.unix_path = unix_path
        self.rss_samples: list[tuple[float, float]] = []  # (seconds into the run, MiB)
        self.fd_samples: list[tuple[float, int]] = []

    def request(self, method: str, path: str, timeout: float = 15.0) -> tuple[int, dict]:
        """One request to the admin endpoint: its status and JSON body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            conn.request(method, path, headers={"Connection": "close", "X-Veylor-Reload": "1"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        finally:
            conn.close()

    def graph(self) -> dict:
        """/graph, without the list of clients."""
        status, body = self.request("GET", "/graph?clients=")
        if status != 200:
            raise RuntimeError(f"/graph answered {status}")
        return body

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/graph?clients=")[0] == 200
        except (OSError, ValueError):
            return False

    def sample(self, at: float) -> None:
        """Record its RSS and file descriptors, ``at`` seconds into the run."""
        with contextlib.suppress(OSError):
            self.rss_samples.append((at, rss_mib(self.pid)))
            self.fd_samples.append((at, fd_count(self.pid)))

    def rss_now(self, n: int) -> list[float]:
        """``n`` RSS readings, a second apart."""
        out = []
        for i in range(n):
            if i:
                time.sleep(1.0)
            out.append(rss_mib(self.pid))
        return out

    def stable_fds(self, target: int | None = None, timeout: float = 10.0) -> int:
        """The fd count once stable (two equal readings 0.5 s apart), or once at target.
        An admin request's connection may still be closing: it is not a leak."""
        deadline = time.monotonic() + timeout
        last = fd_count(self.pid)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = fd_count(self.pid)
            if (target is not None and now <= target) or (target is None and now == last):
                return now
            last = now
        return last
