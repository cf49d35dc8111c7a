"""The TUI in a real terminal (tmux): `veylor --tui` with a real feed, and `veylor top`
attached to a running daemon. What a user sees, read with `capture-pane`."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest
from helpers import VeylorProcess, free_port
from websockets.exceptions import ConnectionClosed

pytest.importorskip("textual")
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (.ci/run installs it)")


class Tmux:
    """A detached tmux session of its own (its own server socket) running one command."""

    def __init__(self, tmp_path, command: list[str], size: tuple[int, int] = (160, 45)) -> None:
        self.socket = str(tmp_path / "tmux.sock")
        self.exit_file = tmp_path / "exit-code"
        line = f"{shlex.join(command)}; echo $? > {shlex.quote(str(self.exit_file))}; sleep 30"
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "TMUX")}
        subprocess.run(
            [
                "tmux",
                "-S",
                self.socket,
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                str(size[0]),
                "-y",
                str(size[1]),
                line,
            ],
            check=True,
            env={**env, "TERM": "xterm-256color"},
            cwd=tmp_path,
        )

    def screen(self) -> str:
        out = subprocess.run(
            ["tmux", "-S", self.socket, "capture-pane", "-p", "-t", "t"], capture_output=True, text=True
        )
        return out.stdout

    def press(self, key: str) -> None:
        subprocess.run(["tmux", "-S", self.socket, "send-keys", "-t", "t", key], check=True)

    async def until(self, predicate, what: str, timeout: float = 20.0) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen}")
            await asyncio.sleep(0.2)

    async def exit_code(self, timeout: float = 10.0) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.exit_file.exists() or not self.exit_file.read_text().strip():
            if loop.time() > deadline:
                raise AssertionError(f"the command did not exit; the screen:\n{self.screen()}")
            await asyncio.sleep(0.1)
        return int(self.exit_file.read_text())

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


def edge_total(screen: str) -> int:
    """The total of the feed -> all -> ws edge on the screen (totals shown: t); -1 while
    it shows "-" (not known yet: the screen was drawn before the first sample)."""
    for line in screen.splitlines():
        if "→ all" in line and "→ ws" in line:
            # msgs, then filtered: the last two columns; 160 columns: each a total with
            # its rate beside it, "30 (12/s)"
            cells = re.split(r"\s{2,}", re.split("[│┃]", line)[1].strip())
            total = cells[-2].split(" (")[0]
            return -1 if total == "-" else int(total.replace(",", ""))
    raise AssertionError(f"no edge line on the screen:\n{screen}")


def config(upstream, port: int, sock, extra: str = "") -> str:
    return (
        textwrap.dedent(
            f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints:
          ws: {{websocket: {{port: {port}, path: /ws}}}}
          ipc: {{unix: {{path: {sock}}}}}
        routes: {{all: {{from: feed, to: [ws, ipc]}}}}
        """
        )
        + extra
    )


async def feed(upstream, stop: asyncio.Event) -> None:
    """Messages from the upstream until ``stop`` (or until Veylor, quitting, hangs up)."""
    i = 0
    while not stop.is_set():
        try:
            await upstream.send(f"m{i}")
        except ConnectionClosed:
            return
        i += 1
        await asyncio.sleep(0.02)


async def test_tui_in_a_terminal_shows_the_graph_counts_and_quits_cleanly(tmp_path, upstream):
    port, sock = free_port(), tmp_path / "ipc.sock"
    main = tmp_path / "config.yaml"
    main.write_text(config(upstream, port, sock))
    term = Tmux(tmp_path, [sys.executable, "-m", "veylor", "--tui", "-c", str(main), "--no-watch"])
    stop = asyncio.Event()
    feeding = None
    try:
        await term.until(lambda s: "feed" in s and "→ all" in s and "→ ws" in s and "→ ipc" in s, "the graph")
        await upstream.wait_connected()
        feeding = asyncio.create_task(feed(upstream, stop))
        term.press("t")  # totals
        await term.until(lambda s: "filtered " in s, "totals shown")
        first = edge_total(
            await term.until(
                lambda s: "● connected" in s and "→ ws" in s and edge_total(s) >= 0, "the source connected"
            )
        )
        await term.until(lambda s: edge_total(s) > first, "the edge's total to move")
        assert sock.exists()
        term.press("q")  # (--tui asks first: quitting stops Veylor)
        await asyncio.sleep(0.3)
        term.press("q")
        assert await term.exit_code() == 0
        assert not sock.exists()  # shut down in order: the socket file is gone
        # The stderr log handler is back once the TUI has let the terminal go.
        assert "stopped" in term.screen()
    finally:
        stop.set()
        if feeding is not None:
            await feeding
        term.kill()


async def test_at_80x24_every_source_and_endpoint_is_on_the_screen_and_why_one_is_down(tmp_path, upstream):
    """Issue 25, point 1: at 80x24 the tables showed their headers and no rows. Three
    sources (two that cannot connect) and four endpoints: every name is on the screen,
    with the state, the last error and the drops, and the summary counts the sources up."""
    dead = [free_port(), free_port()]  # nothing listens there: connection refused
    ports = [free_port(), free_port()]
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(
            f"""
            sources:
              feed: {{url: "{upstream.url}"}}
              flaky: {{url: "ws://127.0.0.1:{dead[0]}/", reconnect: {{initial_delay: 1, max_delay: 2}}}}
              gone: {{url: "ws://127.0.0.1:{dead[1]}/", reconnect: {{initial_delay: 1, max_delay: 2}}}}
            endpoints:
              public: {{websocket: {{port: {ports[0]}, path: /ws}}}}
              mobile: {{websocket: {{port: {ports[1]}, path: /m}}}}
              ipc: {{unix: {{path: {tmp_path / "ipc.sock"}}}}}
              audit: {{unix: {{path: {tmp_path / "audit.sock"}}}}}
            routes:
              all: {{from: feed, to: [public, ipc]}}
              phones: {{from: flaky, to: mobile}}
              log: {{from: gone, to: audit}}
            """
        )
    )
    term = Tmux(tmp_path, [sys.executable, "-m", "veylor", "--tui", "-c", str(main), "--no-watch"], (80, 24))
    try:
        names = ("feed", "flaky", "gone", "public", "mobile", "ipc", "audit")
        screen = await term.until(
            lambda s: (
                all(n in s for n in names) and "connection refused" in s.lower() and "1/3 sources up" in s
            ),
            "every name, the error and the count of sources up",
        )
        lines = screen.splitlines()
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        sources = next(i for i, line in enumerate(lines) if line.lstrip("─━ ").startswith("3 sources"))
        header = lines[sources + 1]
        assert all(column in header for column in ("state", "msgs/s", "last error"))
        endpoints = next(i for i, line in enumerate(lines) if line.lstrip("─━ ").startswith("4 endpoints"))
        assert all(column in lines[endpoints + 1] for column in ("clients", "drops/s", "slow"))
        term.press("q")
        await asyncio.sleep(0.3)
        term.press("q")
        assert await term.exit_code() == 0
    finally:
        term.kill()


async def test_veylor_top_attaches_to_a_running_daemon_and_detaches(tmp_path, upstream):
    port, admin, sock = free_port(), free_port(), tmp_path / "ipc.sock"
    main = tmp_path / "config.yaml"
    main.write_text(config(upstream, port, sock, f'admin: {{listen: "127.0.0.1:{admin}"}}\n'))
    daemon = await VeylorProcess("-c", str(main), "--no-watch").start()
    term = Tmux(tmp_path, [sys.executable, "-m", "veylor", "top", "-c", str(main)])
    stop = asyncio.Event()
    feeding = None
    try:
        await upstream.wait_connected()
        feeding = asyncio.create_task(feed(upstream, stop))
        await term.until(lambda s: "→ all" in s and f"127.0.0.1:{admin}" in s, "the attached graph")
        term.press("t")  # totals
        screen = await term.until(
            lambda s: "filtered " in s and "→ ws" in s and edge_total(s) >= 0, "totals shown"
        )
        await term.until(lambda s: edge_total(s) > edge_total(screen), "the edge's total to move")
        term.press("q")
        assert await term.exit_code() == 0
        assert daemon.proc.returncode is None  # detached: the daemon runs on
        assert sock.exists()
    finally:
        stop.set()
        if feeding is not None:
            await feeding
        term.kill()
        await daemon.stop()


async def test_tui_whose_terminal_hangs_up_stops_veylor(tmp_path, upstream):
    """An ssh session closed under `veylor --tui`: SIGHUP stops it in order (it does not
    keep running, drawing for no one, holding its ports)."""
    port, sock = free_port(), tmp_path / "ipc.sock"
    main = tmp_path / "config.yaml"
    main.write_text(config(upstream, port, sock))
    term = Tmux(tmp_path, [sys.executable, "-m", "veylor", "--tui", "-c", str(main), "--no-watch"])
    try:
        await term.until(lambda s: "→ all" in s, "the graph")
        assert sock.exists()
        term.kill()  # the terminal goes away: its processes get SIGHUP
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while sock.exists() and loop.time() < deadline:
            await asyncio.sleep(0.1)
        assert not sock.exists(), "Veylor kept running after its terminal hung up"
    finally:
        term.kill()
