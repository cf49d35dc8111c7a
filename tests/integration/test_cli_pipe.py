"""A command whose reader stops reading (``veylor status | head -1``) exits 0, quietly:
no traceback, no "Exception ignored" from the interpreter's flush at exit (issue 25,
point 7). Each command runs as a real process whose standard output is a pipe closed
before it writes, so that its first write fails (EPIPE), whatever its output's size."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import VeylorProcess, free_port


def closed_reader(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    """``python -m veylor ARGS`` writing into a pipe no one reads: its exit status and
    its standard error."""
    read, write = os.pipe()
    os.close(read)  # (the reader is gone before the command writes a byte)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "veylor", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            cwd=cwd,
        )
    finally:
        os.close(write)
    return proc.returncode, proc.stderr


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            sources: {{up: {{url: "ws://127.0.0.1:9/"}}}}
            endpoints: {{e: {{websocket: {{host: 127.0.0.1, port: {free_port()}, path: /}}}}}}
            routes: {{r: {{from: up, to: e}}}}
            """
        )
    )
    return path


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("-c", "CONFIG", "check"),
        ("-c", "CONFIG", "check", "--json"),
        ("completion", "bash"),
        ("--version",),
    ],
    ids=["help", "check", "check-json", "completion", "version"],
)
def test_a_command_whose_reader_left_exits_0_without_a_traceback(config: Path, args: tuple[str, ...]):
    code, err = closed_reader(*(str(config) if a == "CONFIG" else a for a in args))
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err


async def test_veylor_status_into_a_closed_pipe_exits_0(tmp_path: Path):
    admin = free_port()
    main = tmp_path / "config.yaml"
    main.write_text(
        textwrap.dedent(
            f"""
            admin: {{listen: "127.0.0.1:{admin}"}}
            sources: {{up: {{url: "ws://127.0.0.1:9/"}}}}
            endpoints: {{e: {{websocket: {{host: 127.0.0.1, port: {free_port()}, path: /}}}}}}
            routes: {{r: {{from: up, to: e}}}}
            """
        )
    )
    veylor = await VeylorProcess("-c", str(main), "--no-watch").start()
    try:
        import asyncio

        for args in (("status", "-c", str(main)), ("status", "--json", "-c", str(main))):
            code, err = await asyncio.to_thread(closed_reader, *args)
            assert code == 0, err
            assert "Traceback" not in err and "BrokenPipe" not in err, err
    finally:
        await veylor.stop()
