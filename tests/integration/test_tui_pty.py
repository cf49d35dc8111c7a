"""`veylor --tui` on a pseudo-terminal the test holds, to do what a real terminal does
to it and tmux will not: stop reading (a stalled ssh connection), or go away without a
SIGHUP (no controlling terminal). The relay shares the TUI's event loop: neither may
stall a client, and a terminal gone for good must stop Veylor in order."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest
from helpers import eventually, free_port
from test_tui_terminal import config, feed
from websockets.asyncio.client import connect

pytest.importorskip("textual")


class Pty:
    """Veylor with a pseudo-terminal as stdin, stdout and stderr; the test holds the
    master side and reads the screen's bytes only when it chooses to."""

    def __init__(self, tmp_path, args: list[str], columns: int = 160) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, columns, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "TMUX")}
        # A new session with no controlling terminal: closing the master sends no SIGHUP.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "veylor", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env={**env, "TERM": "xterm-256color"},
            cwd=tmp_path,
        )
        os.close(slave)
        os.set_blocking(self.master, False)
        self.seen = b""

    def drain(self) -> bytes:
        """What the terminal has been sent since the last read."""
        out = b""
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            out += chunk
        self.seen = (self.seen + out)[-200_000:]
        return out

    async def until(self, text: bytes, what: str, timeout: float = 20.0) -> None:
        """Read until ``text`` appears in what is read from now on."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        got = b""
        while text not in got:
            got = (got + self.drain())[-200_000:]
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    async def exit_code(self, timeout: float = 15.0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.proc.poll() is None:
            if loop.time() > deadline:
                raise AssertionError("Veylor did not exit")
            with contextlib.suppress(OSError):
                self.drain()
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.master)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.mark.slow  # (a terminal that stops reading for seconds: 9 s)
async def test_a_terminal_that_stops_reading_stalls_no_client_and_is_repainted_when_it_reads(
    tmp_path, upstream
):
    """The screen's writes fill the terminal (a stalled ssh connection): the relay, on the
    same event loop, keeps delivering; SIGTERM still stops it in order; and a terminal
    that reads again gets the whole screen, not a torn one."""
    port, sock = free_port(), tmp_path / "ipc.sock"
    (tmp_path / "config.yaml").write_text(config(upstream, port, sock))
    term = Pty(tmp_path, ["--tui", "-c", "config.yaml", "--no-watch"])
    stop = asyncio.Event()
    feeding = None
    try:
        await term.until(b"\xe2\x86\x92 all", "the graph")  # "→ all"
        await upstream.wait_connected()
        # The terminal stops reading; help on and off repaints the whole screen (tens of
        # kilobytes each time): the pseudo-terminal's buffer fills within a few.
        for _ in range(40):
            term.type("?")
            await asyncio.sleep(0.05)
            term.type("\x1b")
            await asyncio.sleep(0.05)
        async with connect(f"ws://127.0.0.1:{port}/ws") as client:
            feeding = asyncio.create_task(feed(upstream, stop))
            for _ in range(100):  # 2 s of the feed, every message, while the screen is stuck
                message = await asyncio.wait_for(client.recv(), 5)
                assert message.startswith("m")
            # It reads again: a whole screen comes (the graph's text, not just the cells
            # that changed since).
            await term.until(b"\xe2\x86\x92 all", "the screen repainted whole after the stall")
            for _ in range(10):  # and the relay still delivers
                await asyncio.wait_for(client.recv(), 5)
        # Stuck again, then SIGTERM: an orderly stop all the same.
        for _ in range(40):
            term.type("?\x1b")
            await asyncio.sleep(0.02)
        term.proc.terminate()
        assert await term.exit_code() == 0
        assert not sock.exists()
    finally:
        stop.set()
        if feeding is not None:
            await feeding
        term.close()


async def test_a_terminal_gone_without_a_sighup_stops_veylor_in_order(tmp_path, upstream):
    """The terminal goes away and no SIGHUP comes (Veylor is not its session's leader):
    the failed writes stop Veylor in order instead of leaving it running, holding its
    ports, for no one."""
    port, sock = free_port(), tmp_path / "ipc.sock"
    (tmp_path / "config.yaml").write_text(config(upstream, port, sock))
    term = Pty(tmp_path, ["--tui", "-c", "config.yaml", "--no-watch"])
    try:
        await term.until(b"\xe2\x86\x92 all", "the graph")
        assert sock.exists()
        os.close(term.master)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while term.proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.1)
        assert term.proc.poll() is not None, "Veylor kept running after its terminal went away"
        await eventually(lambda: not sock.exists(), 5, what="the socket file removed")
    finally:
        term.close()
