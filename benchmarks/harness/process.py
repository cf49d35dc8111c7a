"""The processes a benchmark starts (Veylor, the reference relays, nats-server, its own
upstream and client roles), and waiting for one of them to listen."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal

from harness import cpu_times, pin, rss_mib

Found = tuple[int, float, str]  # a line of a process's output: (index, arrival time, text)


def _die_with_parent() -> None:
    """A ``preexec_fn``: the child gets SIGKILL when the benchmark dies, however it dies (a
    test's timeout kills it with SIGKILL; nothing of the run must outlive it)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Process:
    """A process a benchmark starts, talks to, measures and stops.

    It runs in a session of its own, so that :meth:`kill` stops it with whatever it
    started (script(1)'s child, say). ``cpus`` pins it. Its standard error goes to
    ``log`` (appended to with ``append``), or nowhere. With ``stdin``, :meth:`send` writes
    it commands, one a line. ``read`` names the output that is read line by line
    (``"stdout"`` or ``"stderr"``; the other goes nowhere): a thread reads it and stamps
    each line with the monotonic time it arrived, so that how soon the benchmark looks
    does not change the times it measures. With ``die_with_parent`` it gets SIGKILL when
    the benchmark dies.
    """

    def __init__(
        self,
        args: list[str],
        *,
        cpus: set[int] | None = None,
        cwd: Path | None = None,
        stdin: bool = False,
        read: Literal["stdout", "stderr"] | None = None,
        log: Path | None = None,
        append: bool = False,
        env: dict[str, str] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        if read == "stderr" and log is not None:
            raise ValueError("standard error is either read or logged, not both")
        self.name = " ".join(Path(a).name for a in args[:3])  # for error messages
        self.lines: list[tuple[float, str]] = []  # every line read: (arrival time, text)
        self.eof = read is None  # the output read has ended
        self._taken = 0  # lines :meth:`expect` has passed
        self._changed = threading.Condition()
        self._wakers: list[Callable[[], None]] = []  # coroutines in :meth:`until`
        with open(log, "ab" if append else "wb") if log else contextlib.nullcontext() as err:
            self.popen = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if read == "stdout" else subprocess.DEVNULL,
                stderr=subprocess.PIPE if read == "stderr" else err or subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        self.pid = self.popen.pid
        if cpus is not None:
            pin(self.pid, cpus)
        stream = self.popen.stdout if read == "stdout" else self.popen.stderr
        self._reader: threading.Thread | None = None
        if stream is not None:
            self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
            self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            arrived = time.monotonic()
            with self._changed:
                self.lines.append((arrived, raw.decode(errors="replace").rstrip("\n")))
                self._changed.notify_all()
            self._wake()
        with self._changed:
            self.eof = True
            self._changed.notify_all()
        self._wake()

    def _wake(self) -> None:
        for wake in list(self._wakers):
            wake()

    # -- its output

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        """The next line that starts with ``prefix``; the lines before it are passed over."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                while self._taken < len(self.lines):
                    line = self.lines[self._taken][1]
                    self._taken += 1
                    if line.startswith(prefix):
                        return line
                if self.eof:
                    raise RuntimeError(f"{self.name} exited ({self.popen.poll()}) before {prefix!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {prefix!r} from {self.name} within {timeout:g}s")
                self._changed.wait(left)

    async def until(self, predicate: Callable[[str], bool], start: int, timeout: float) -> Found | None:
        """The first line from index ``start`` on that ``predicate`` accepts, waited for
        without blocking the event loop; None on timeout or once the output has ended."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # (the loop has closed)
                loop.call_soon_threadsafe(changed.set)

        deadline = time.monotonic() + timeout
        self._wakers.append(wake)
        try:
            while True:
                changed.clear()
                with self._changed:
                    lines, eof = self.lines, self.eof
                    for i in range(start, len(lines)):
                        if predicate(lines[i][1]):
                            return i, lines[i][0], lines[i][1]
                    start = len(lines)
                if eof:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(changed.wait(), left)
                except TimeoutError:
                    return None
        finally:
            self._wakers.remove(wake)

    def wait_output(self, timeout: float) -> None:
        """Wait (``timeout`` seconds at most) until its output has been read to the end."""
        if self._reader is not None:
            self._reader.join(timeout)

    # -- its input

    def send(self, command: str) -> None:
        """Write one command line to its standard input."""
        if self.popen.stdin is None:
            raise ValueError(f"{self.name} was started without stdin")
        self.popen.stdin.write(command.encode() + b"\n")
        self.popen.stdin.flush()

    def ask(self, command: str, prefix: str, timeout: float = 30.0) -> str:
        """Send ``command``; the next line that starts with ``prefix``."""
        self.send(command)
        return self.expect(prefix, timeout)

    # -- what it costs

    def measured(self) -> int:
        """The pid whose CPU time and memory count: under script(1) (a relay given a
        terminal), script's child."""
        pid = self.pid
        with contextlib.suppress(OSError, ValueError, IndexError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "script":
                return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
        return pid

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far: (user, system)."""
        return cpu_times(self.measured())

    def rss_mib(self) -> float:
        """Resident memory now, in MiB (NaN once gone)."""
        return rss_mib(self.measured())

    # -- stopping it

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Signal its whole session (what it started too); wait ``timeout`` seconds at most
        for it to exit."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)

    def terminate(self, grace: float) -> tuple[int | None, float]:
        """Stop it in order: SIGTERM, then SIGKILL to its session after ``grace`` seconds.
        Its exit code on SIGTERM (None when it had to be killed) and the seconds it took."""
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            code = None
            self.kill()
        return code, time.monotonic() - started


def wait_listening(port: int | None, unix: str | None = None, timeout: float = 20.0) -> None:
    """Return once something accepts connections on 127.0.0.1:``port`` (or on the Unix
    socket ``unix``); TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if unix:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(unix)
            else:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    pass
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {unix or f'127.0.0.1:{port}'} after {timeout:g} s")
