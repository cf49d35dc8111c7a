"""`veylor status` answers an operator's first questions (issue 25, points 4 and 7): is
every upstream up, and if not why (its last error, failed attempts in a row, the next
try)? Are messages dropped, and where (each endpoint's drops and slow clients)? What
did the last reload do? `--json` carries the rates. A real Veylor with `admin:`, a real
upstream, a source whose upstream is not there."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import textwrap
from pathlib import Path

from conftest import run_veylor
from helpers import VeylorProcess, free_port, ws_client


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _main(tmp_path: Path, body: str) -> Path:
    """config.yaml with an admin endpoint and drop-ins in routes.d/, then ``body``."""
    (tmp_path / "routes.d").mkdir()
    main = tmp_path / "config.yaml"
    admin = f'admin: {{listen: "127.0.0.1:{free_port()}"}}\ninclude: [routes.d/*.yaml]\n'
    main.write_text(admin + textwrap.dedent(body))
    return main


async def test_status_says_why_a_source_is_down_and_where_messages_are_dropped(tmp_path: Path, upstream):
    port = free_port()
    main = _main(
        tmp_path,
        f"""
        sources:
          feed: {{url: "{upstream.url}"}}
          gone: {{url: "ws://127.0.0.1:{_closed_port()}/", reconnect: {{initial_delay: 30, max_delay: 60}}}}
        endpoints:
          ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}
        routes:
          r: {{from: feed, to: ws}}
          g: {{from: gone, to: ws}}
        """,
    )
    proc = await VeylorProcess("-c", str(main), "--no-watch").start()
    try:
        await upstream.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        await proc.wait_for("cannot connect", 10)
        (tmp_path / "routes.d" / "bad.yaml").write_text("routes:\n  x: {from: feed, to: nowhere}\n")
        refused = await asyncio.to_thread(run_veylor, "reload", "-c", str(main))
        assert refused.returncode == 1
        await upstream.send("tick")
        assert await asyncio.wait_for(client.recv(), 5) == "tick"

        text = await asyncio.to_thread(run_veylor, "status", "-c", str(main), timeout=30)
        assert text.returncode == 0, text.stderr
        out = text.stdout
        assert re.search(
            r"^sources 1/2 up, 1 client, \d+ deliveries/s, 0 drops/s, 0 slow clients now$", out, re.M
        ), out
        assert re.search(r"^last reload: REFUSED, \d+s ago \(.*\); 0 changes, 1 problem$", out, re.M), out
        assert "bad.yaml:2 routes.x.to: unknown endpoint 'nowhere'" in out
        assert re.search(r"^\s+gone\s+backoff\b", out, re.M), out
        why = re.search(
            r"^\s+last error: .*Connection refused.*; 1 failed attempt in a row; next try in \d+s$", out, re.M
        )
        assert why, out
        assert re.search(
            r"^\s+ws\s+1 client\s+\S+ deliveries\s+0 dropped \(\S+\), 0 slow now\b", out, re.M
        ), out

        as_json = await asyncio.to_thread(run_veylor, "status", "--json", "-c", str(main), timeout=30)
        view = json.loads(as_json.stdout)
        rates = view["rates"]
        assert 0.5 < rates["interval"] < 5
        assert set(rates["sources"]) == {"feed", "gone"} and rates["sources"]["gone"]["messages_in"] == 0
        assert set(rates["endpoints"]["ws"]) == {"messages_out", "undelivered"}
        assert [(e["route"], e["endpoint"]) for e in rates["edges"]] == [("r", "ws"), ("g", "ws")]
        assert view["sources"]["gone"]["failures"] == 1
        await client.close()
    finally:
        await proc.stop()


async def test_a_check_that_changes_nothing_does_not_hide_the_last_change(tmp_path: Path, upstream):
    """Issue 25, point 5: a reload that changes nothing (a SIGHUP, a file touched) hid the
    last real change; the watcher's own look at startup showed as a reload. Now the view
    keeps ``last_change`` beside ``last``, and status shows both; the catch-up look that
    finds nothing is no reload at all."""
    port = free_port()
    main = _main(
        tmp_path,
        f"""
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}}}
        routes: {{r: {{from: feed, to: ws}}}}
        """,
    )
    # (watching its files; -v: the catch-up look says it found nothing, at DEBUG)
    proc = await VeylorProcess("-v", "-c", str(main)).start()
    try:
        await proc.wait_for("catching up after the watch started): no changes", 15)
        view = json.loads((await asyncio.to_thread(run_veylor, "status", "--json", "-c", str(main))).stdout)
        assert view["reloads"]["last"] is None and view["reloads"]["last_change"] is None, view["reloads"]
        (tmp_path / "routes.d" / "more.yaml").write_text("routes: {s: {from: feed, to: ws}}\n")
        await proc.wait_for("more.yaml", 15)
        checked = await asyncio.to_thread(run_veylor, "reload", "-c", str(main))
        assert checked.returncode == 0, checked.stderr
        out = (await asyncio.to_thread(run_veylor, "status", "-c", str(main))).stdout
        assert re.search(r"^last reload: checked, no change, \d+s ago \(admin API .*\)$", out, re.M), out
        assert re.search(
            r"^last change: applied, \d+s ago \(file change: more.yaml\); 1 change, 0 problems$", out, re.M
        ), out
        assert "  + route s" in out
    finally:
        await proc.stop()
