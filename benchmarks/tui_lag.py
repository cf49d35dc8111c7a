"""What the in-process TUI costs the relay's event loop, by graph size.

    .venv/bin/python benchmarks/tui_lag.py [--sizes 1,1000] [--seconds 20]

For each size N (N sources, N endpoints, N routes source i -> endpoint i; each
upstream connection sends one message a second, so rates and counters move everywhere)
Veylor runs in this process's child, with the TUI on and off, in a pseudo-terminal
(script(1)) whose screen is read and thrown away. A probe in Veylor's own event loop
sleeps 1 ms at a time and records how late it wakes: the loop's stalls, which every
client of the relay waits for. Reported: p50, p99, max and the stalls over 5 and 20 ms
per second of run, TUI on next to TUI off (the ratio is what the TUI costs).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from harness import free_port
from harness.process import Process
from harness.report import log_path

HERE = Path(__file__).resolve().parent
PY = sys.executable


# ---------------------------------------------------------------------- upstream


async def upstream(port: int) -> None:
    """Every connection gets one small JSON message a second (jittered start)."""
    from websockets.asyncio.server import serve

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(random.random())
        i = 0
        while True:
            await ws.send(json.dumps({"path": ws.request.path, "seq": i, "t": time.time()}))
            i += 1
            await asyncio.sleep(1.0)

    async with serve(handler, "127.0.0.1", port, max_size=2**20, ping_interval=None):
        await asyncio.Future()


# ---------------------------------------------------------------------- inner: Veylor + probe


def config(n: int, up: int, port: int) -> str:
    lines = ["sources:"]
    lines += [f'  s{i}: {{url: "ws://127.0.0.1:{up}/s{i}"}}' for i in range(n)]
    lines.append("endpoints:")
    lines += [f"  e{i}: {{websocket: {{port: {port}, path: /e{i}}}}}" for i in range(n)]
    lines.append("routes:")
    lines += [f"  r{i}: {{from: s{i}, to: e{i}}}" for i in range(n)]
    return "\n".join(lines) + "\n"


async def inner(n: int, seconds: float, tui: bool, up: int, port: int, out: Path, why: bool = False) -> None:
    import logging

    from veylor.server import Server

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.yaml"
        path.write_text(config(n, up, port))
        server = Server.load(str(path), watch="off")
        assert await server.startup()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while loop.time() < deadline:  # every source connected
            view = server.snapshot()
            if all(s["state"] == "connected" for s in view["sources"].values()):
                break
            await asyncio.sleep(0.5)
        lags: list[float] = []
        beat = [time.perf_counter(), False]
        cpu = [0.0]
        stalls: collections.Counter[str] = collections.Counter()

        async def probe() -> None:
            await asyncio.sleep(3.0)  # the TUI's first screens, the first rates
            beat[1] = True
            cpu[0] = time.process_time()
            end = loop.time() + seconds
            while loop.time() < end:
                t = beat[0] = time.perf_counter()  # (uvloop's loop.time() has millisecond steps)
                await asyncio.sleep(0.001)
                lags.append((time.perf_counter() - t - 0.001) * 1000)
            beat[1] = False
            cpu[0] = time.process_time() - cpu[0]
            server.stop()

        def watchdog(main: int) -> None:
            """Where the loop is when it has not come back for 10 ms (--why)."""
            while True:
                time.sleep(0.002)
                if beat[1] and time.perf_counter() - beat[0] > 0.010:
                    frame = sys._current_frames().get(main)
                    where = traceback.extract_stack(frame)[-12:] if frame else []
                    stalls[
                        " < ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in reversed(where))
                    ] += 1
                    time.sleep(0.005)

        gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        gc_start = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_start[0] = time.perf_counter()
            elif beat[1]:
                gc_pauses[info["generation"]].append((time.perf_counter() - gc_start[0]) * 1000)

        slices: dict[str, list[float]] = collections.defaultdict(list)
        if why:
            threading.Thread(target=watchdog, args=(threading.get_ident(),), daemon=True).start()
            gc.callbacks.append(on_gc)
            timed(slices, beat)

        probing = asyncio.create_task(probe())
        if tui:
            from veylor.tui.run import in_process

            await in_process(server)
        else:
            await server.stopping.wait()
        await probing
        await server.shutdown()
    lags.sort()
    out.write_text(
        json.dumps(
            {
                "p50": lags[len(lags) // 2],
                "p99": lags[int(len(lags) * 0.99)],
                "max": lags[-1],
                "over5": sum(1 for x in lags if x > 5) / seconds,
                "over20": sum(1 for x in lags if x > 20) / seconds,
                "samples": len(lags),
                "cpu": cpu[0] / seconds,
                "stalls": stalls.most_common(15),
                "gc": {g: (len(p), max(p, default=0.0), sum(p)) for g, p in gc_pauses.items()},
                "slices": {k: (len(v), statistics.mean(v), max(v)) for k, v in slices.items() if v},
            }
        )
    )


def timed(slices: dict[str, list[float]], beat: list[Any]) -> None:
    """(--why) How long the TUI's pieces hold the loop: each step of its refresh (between
    two awaits), and each screen update Textual draws."""
    from textual.screen import Screen

    from veylor.tui.app import VeylorApp

    def wrap(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            result = original(*args, **kwargs)
            if beat[1]:
                who = (
                    f"{label} ({type(args[0]).__name__}#{getattr(args[0], 'id', None)})"
                    if "lines" in label
                    else label
                )
                slices[who].append((time.perf_counter() - t) * 1000)
            return result

        setattr(owner, name, timed_call)

    wrap(Screen, "_compositor_refresh", "textual: screen update")
    wrap(Screen, "_refresh_layout", "textual: layout")
    from textual.widget import Widget

    wrap(Widget, "render_lines", "textual: lines")
    for name in ("show_status", "show_sparkline", "show_tap", "show_clients"):
        wrap(VeylorApp, name, f"veylor: {name}")
    original_parts = VeylorApp._parts

    def parts(self: Any) -> list[Any]:
        def each(part: Any) -> Any:
            def run(view: Any) -> Any:
                out = part(view)
                if out is None:
                    return None

                def steps() -> Any:
                    while True:
                        t = time.perf_counter()
                        try:
                            next(out)
                        except StopIteration:
                            return
                        finally:
                            if beat[1]:
                                slices[f"veylor: {getattr(part, '__name__', 'part')} step"].append(
                                    (time.perf_counter() - t) * 1000
                                )
                        yield

                return steps()

            return run

        return [each(p) for p in original_parts(self)]

    VeylorApp._parts = parts  # type: ignore[method-assign]


# ---------------------------------------------------------------------- outer


def run(n: int, seconds: float, tui: bool, why: bool = False) -> dict[str, Any]:
    up, port = free_port(), free_port()
    feeder = Process([PY, __file__, "--upstream", str(up)], log=log_path("tui_lag-upstream.log"))
    time.sleep(1.0)
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        command = [PY, __file__, "--inner", str(n), "--seconds", str(seconds), "--up", str(up)]
        command += (
            ["--port", str(port), "--out", f.name] + (["--tui"] if tui else []) + (["--why"] if why else [])
        )
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "45"}
        try:
            subprocess.run(
                ["script", "-qfec", f"stty cols 160 rows 45; {shlex.join(command)}", "/dev/null"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                timeout=seconds + 180,
                check=True,
            )
            return json.loads(Path(f.name).read_text())
        finally:
            feeder.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,1000")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tui", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--up", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--why", action="store_true", help="sample where the loop is during stalls (10 ms+)")
    args = ap.parse_args()
    if args.upstream:
        asyncio.run(upstream(args.upstream))
        return
    if args.inner is not None:
        import uvloop

        uvloop.run(inner(args.inner, args.seconds, args.tui, args.up, args.port, args.out, args.why))
        return
    print(f"Event-loop stalls in Veylor with the TUI in-process, {args.seconds:.0f} s each (ms)\n")
    print(
        "| graph (sources = endpoints = routes) | TUI | p50 | p99 | max | stalls > 5 ms /s | > 20 ms /s | CPU |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in (int(x) for x in args.sizes.split(",")):
        for tui in (False, True):
            r = run(n, args.seconds, tui, args.why)
            print(
                f"| {n:,} | {'on' if tui else 'off'} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.1f} "
                f"| {r['over5']:.2f} | {r['over20']:.2f} | {r['cpu']:.0%} |",
                flush=True,
            )
            for g, (count, longest, total) in (r["gc"] if args.why else {}).items():
                print(
                    f"    gc generation {g}: {count} collections, longest {longest:.1f} ms, {total:.0f} ms in all"
                )
            for what, (count, mean, longest) in r.get("slices", {}).items():
                print(f"    {what}: {count} times, mean {mean:.2f} ms, longest {longest:.1f} ms")
            for where, count in r["stalls"]:
                print(f"    {count:4d}  {where}")


if __name__ == "__main__":
    main()
