"""Reloads: the run's configuration, and its two versions that differ in one route,
alternated by a drop-in renamed into place, then POST /reload or SIGHUP in turn. Veylor
runs with ``--no-watch``, so that each reload is exactly the one triggered."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from soaklib.context import Context, Veylor, wait_for

MAIN_CONFIG = """\
# The soak's main file (benchmarks/soak.py); routes.d/50-alt.yaml alternates.
sources:
  feed:
    url: "ws://127.0.0.1:{upstream}/"
    reconnect: {{initial_delay: 0.2, max_delay: 1}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {ws}}}, max_clients: 100000}}
  ipc: {{unix: {{path: "{unix}"}}, max_clients: 100000}}
  side: {{websocket: {{host: 127.0.0.1, port: {ws}, path: /side}}}}
routes:
  main: {{from: feed, to: [ws, ipc]}}
admin: {{listen: "127.0.0.1:{admin}"}}
"""
ALT = {  # the two configurations differ in one route: present (A) or not (B)
    "A": "routes:\n  alt: {from: feed, to: side, filter: {json: {path: s, equals: BTCUSDT}}}\n",
    "B": "# configuration B: no route alt\nroutes: {}\n",
}


def write_config(directory: Path, upstream: int, ws: int, unix: str, admin: int) -> Path:
    """The main file and the drop-in of configuration A; the main file's path."""
    (directory / "routes.d").mkdir()
    config = directory / "config.yaml"
    config.write_text(MAIN_CONFIG.format(upstream=upstream, ws=ws, unix=unix, admin=admin))
    (directory / "routes.d" / "50-alt.yaml").write_text(ALT["A"])
    return config


class Reloads:
    """The reloads of the run, each checked applied: generation + 1, and the route alt
    present or absent in /graph as configured."""

    def __init__(self, ctx: Context, veylor: Veylor, generation: int) -> None:
        self.ctx = ctx
        self.veylor = veylor
        self.generation = generation  # the configuration's generation Veylor runs
        self.config_now = "A"
        self.entries: list[dict] = []

    def reload(self, target: str, trigger: str) -> None:
        """Switch to configuration ``target`` by ``trigger`` ("POST" or "SIGHUP")."""
        drop_in = self.ctx.dir / "routes.d" / "50-alt.yaml"
        tmp = drop_in.with_name(".50-alt.yaml.tmp")
        tmp.write_text(ALT[target])
        os.replace(tmp, drop_in)  # renamed into place, as docs/operations.md says
        started = time.monotonic()
        want = self.generation + 1
        entry = {"to": target, "trigger": trigger, "ok": False}
        veylor = self.veylor
        try:
            if trigger == "POST":
                status, body = veylor.request("POST", "/reload")
                entry["changes"] = body.get("changes")
                if status != 200 or not body.get("ok") or not body.get("applied"):
                    raise RuntimeError(f"POST /reload answered {status}: {json.dumps(body)[:300]}")
                view = veylor.graph()
            else:
                os.kill(veylor.pid, signal.SIGHUP)
                view = wait_for(
                    "the SIGHUP reload",
                    lambda: (v := veylor.graph())["config"]["generation"] >= want and v,
                    10,
                    0.05,
                )
                last = view["reloads"]["last"]
                entry["changes"] = last and last.get("changes")
                if not last or not last["ok"]:
                    raise RuntimeError(f"the SIGHUP reload failed: {json.dumps(last)[:300]}")
            generation = view["config"]["generation"]
            has_alt = "alt" in view["routes"]
            if generation != want or has_alt != (target == "A"):
                raise RuntimeError(
                    f"not applied: generation {generation} (want {want}), route alt present: {has_alt}"
                )
            self.generation = generation
            self.config_now = target
            entry["ok"] = True
        except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
            entry["error"] = str(exc)
            self.ctx.log(f"reload to {target} by {trigger} failed: {exc}")
            with contextlib.suppress(Exception):  # resynchronise with what runs
                view = veylor.graph()
                self.generation = view["config"]["generation"]
        entry["ms"] = round((time.monotonic() - started) * 1000, 1)
        self.entries.append(entry)
