"""The examples run, unchanged, against a real Veylor fed by the example upstream."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from helpers import free_port, veylor_inprocess

pytestmark = pytest.mark.timeout(60)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def run_example(*args: str, stdin: bytes | None = None, timeout: float = 15, expect: int = 0) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / args[0]),
        *args[1:],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == expect, err.decode()
    return out.decode() if expect == 0 else err.decode()


async def test_examples_against_the_example_upstream(tmp_path):
    up_port, port, sock = free_port(), free_port(), tmp_path / "ex.sock"
    upstream = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "demo_upstream.py"),
        "--port",
        str(up_port),
        "--rate",
        "200",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert b"demo upstream on" in await asyncio.wait_for(upstream.stdout.readline(), 10)
        config = f"""
sources:
  demo: {{url: "ws://127.0.0.1:{up_port}/"}}
endpoints:
  ws: {{websocket: {{port: {port}, path: /ticker}}}}
  ipc: {{unix: {{path: {sock}}}}}
routes:
  r: {{from: demo, to: [ws, ipc], upstream: true}}
"""
        async with veylor_inprocess(tmp_path, config):
            url = f"ws://127.0.0.1:{port}/ticker"
            lines = (await run_example("ws_client.py", url, "--count", "3")).splitlines()
            assert len(lines) == 3 and all(json.loads(line)["e"] == "trade" for line in lines)
            lines = (await run_example("unix_client.py", str(sock), "--count", "3")).splitlines()
            assert len(lines) == 3 and all(json.loads(line)["e"] == "trade" for line in lines)
            out = await run_example("ws_bidirectional.py", url, stdin=b"hello from ws\n")
            assert '"data": "hello from ws"' in out
            out = await run_example("unix_bidirectional.py", str(sock), stdin=b"hello from unix\n")
            assert '"data": "hello from unix"' in out
            # A wrong path, a wrong port, a wrong socket: one line each, no traceback.
            for example, target in (
                ("ws_client.py", f"ws://127.0.0.1:{port}/wrong"),
                ("ws_bidirectional.py", f"ws://127.0.0.1:{port}/wrong"),
                ("ws_client.py", f"ws://127.0.0.1:{free_port()}/ticker"),
                ("unix_client.py", str(tmp_path / "nope.sock")),
                ("unix_bidirectional.py", str(tmp_path / "nope.sock")),
            ):
                err = await run_example(example, target, stdin=b"", expect=1)
                assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
                assert target in err
            err = await run_example("ws_client.py", f"ws://127.0.0.1:{port}/wrong", expect=1)
            assert "HTTP 404 (no Veylor endpoint at this path)" in err
    finally:
        upstream.terminate()
        await upstream.wait()
