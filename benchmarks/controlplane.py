"""Veylor's control-plane benchmark: hot reload with many drop-ins, while a feed flows, on 127.0.0.1.

    .venv/bin/python benchmarks/controlplane.py                          # 1000 drop-ins, 10 edits
    .venv/bin/python benchmarks/controlplane.py --dropins 200 --edits 5  # smaller, faster
    .venv/bin/python benchmarks/controlplane.py --markdown benchmarks/CONTROLPLANE.md
    .venv/bin/python benchmarks/controlplane.py --cwd ../other-checkout --veylor-python ../other/.venv/bin/python

In a temporary directory it writes a main ``config.yaml`` (source ``feed``, endpoint
``control`` at ``/control``, unfiltered route ``control-route``) and N drop-ins
``routes.d/NNNN.yaml``, each with one source (``sNNNN``), one WebSocket endpoint
(``eNNNN`` at ``/eNNNN``) and one JSON-filtered route (``rNNNN``). Every endpoint shares one
host and port, so Veylor binds a single listener.

It then starts, on 127.0.0.1 only:

- an upstream WebSocket server (this script, ``--serve-upstream``) that accepts every
  source: the drop-in sources get nothing; ``/feed`` gets one 200-byte JSON message
  every millisecond (1000 msg/s), each with a sequence number and its send time;
- Veylor, ``VEYLOR_PYTHON -m veylor -c CONFIG`` run from ``--cwd`` (pinned to CPU 0;
  the upstream and this script to CPU 1), whose standard error is read line by line
  and stamped on receipt;
- a control client on ``ws://127.0.0.1:PORT/control`` that stamps every delivery.

Once Veylor logs ``ready:``, every source is connected and the control client receives
messages, it measures a quiet baseline, then edits one drop-in K times (a new
``in:`` list for its route's filter each time, written to a hidden temporary file and
renamed over the drop-in) and, for each edit, waits (with a timeout) for Veylor's
``reload #... applied in N ms`` line: the reload latency is the time from the rename to
that line's arrival. Meanwhile the control client's largest gap between consecutive
deliveries, the p99 of those gaps, and any lost sequence number are recorded.
Finally it times a cold ``veylor check -c CONFIG`` (a new process each time, median of
3) and compares the numbers with the targets: largest delivery gap during the edits
under 20 ms, a one-file reload applied in under 100 ms at p50, cold check under 1 s.

Every wait has a timeout, and everything started is stopped at the end (Veylor with
SIGTERM, then SIGKILL after 5 s). Results go to benchmarks/results/controlplane.json,
Veylor's standard error to benchmarks/results/logs/controlplane-veylor.log, and with
--markdown FILE, a Markdown report to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import SYMBOLS, message
from controlplanelib.deliveries import ControlClient, delivery_stats, gaps_in, sequence_stats
from controlplanelib.results import CheckResult, Edit, LiveResult, markdown, targets
from harness import LOAD_CPU, RELAY_CPU, free_port, pin, raise_nofile
from harness.process import Process
from harness.report import finite, log_path, machine, percentile, write_json
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FEED_PATH = "/feed"
CONTROL_PATH = "/control"
BASE_SYMBOLS = ("BTCUSDT", "ETHUSDT")

RELOAD_APPLIED = re.compile(r"reload #(\d+)\b.*applied in ([0-9.]+) ?ms")
RELOAD_FAILED = re.compile(r"reload\b.*\b(rejected|aborted|unexpected error)")


# ---------------------------------------------------------------------------- helpers


def run_loop(main: Callable[[], Any]) -> Any:
    """Run the coroutine function ``main`` on uvloop where available."""
    if uvloop is not None:
        return uvloop.run(main())
    return asyncio.run(main())


# ---------------------------------------------------------------------------- upstream server


async def serve_upstream(port: int, rate: float) -> None:
    """The upstream: accept any path; stream numbered, timestamped messages to ``/feed``.

    Prints ``listening PORT`` once bound and ``connected PATH`` per connection. The feed's
    clock starts with its first connection and runs on whether or not the feed is
    connected, so a feed reconnection shows as lost sequence numbers.
    """
    raise_nofile()
    feeds: set[ServerConnection] = set()
    first_feed = asyncio.Event()

    async def handler(conn: ServerConnection) -> None:
        path = conn.request.path if conn.request is not None else "?"
        print(f"connected {path}", flush=True)
        if path == FEED_PATH:
            feeds.add(conn)
            first_feed.set()
        try:
            await conn.wait_closed()
        finally:
            feeds.discard(conn)

    async def pump() -> None:
        await first_feed.wait()
        start = time.monotonic()
        seq = 0
        while True:
            due = int((time.monotonic() - start) * rate) - seq
            for _ in range(due):
                seq += 1
                text = message(seq, time.time_ns(), SYMBOLS[seq & 1]).decode()
                for conn in list(feeds):
                    with contextlib.suppress(ConnectionClosed):
                        await conn.send(text)
            await asyncio.sleep(0.001)

    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        ping_interval=None,
        max_size=2**20,
        backlog=4096,  # 1000+ sources connect at once
    ) as server:
        print(f"listening {next(iter(server.sockets)).getsockname()[1]}", flush=True)
        await pump()


# ---------------------------------------------------------------------------- configuration


def dropin_text(i: int, width: int, up_port: int, port: int, symbols: Sequence[str]) -> str:
    """Drop-in number ``i``: one source, one WebSocket endpoint, one filtered route."""
    n = f"{i:0{width}d}"
    return (
        f"# generated by benchmarks/controlplane.py\n"
        f"sources:\n"
        f"  s{n}:\n"
        f"    url: ws://127.0.0.1:{up_port}/s{n}\n"
        f"endpoints:\n"
        f"  e{n}:\n"
        f"    websocket: {{host: 127.0.0.1, port: {port}, path: /e{n}}}\n"
        f"routes:\n"
        f"  r{n}:\n"
        f"    from: s{n}\n"
        f"    to: e{n}\n"
        f"    filter: {{json: {{path: s, in: [{', '.join(symbols)}]}}}}\n"
    )


MAIN_CONFIG = """# generated by benchmarks/controlplane.py
version: 1
sources:
  feed:
    url: ws://127.0.0.1:{up_port}{feed}
endpoints:
  control:
    websocket: {{host: 127.0.0.1, port: {port}, path: {control}}}
routes:
  control-route:
    from: feed
    to: control
include: [routes.d/*.yaml]
"""


def write_config(workdir: Path, dropins: int, up_port: int, port: int) -> tuple[Path, int]:
    """Write the main file and the drop-ins; return the main file's path and the name width."""
    width = max(4, len(str(max(dropins - 1, 0))))
    config = workdir / "config.yaml"
    config.write_text(MAIN_CONFIG.format(up_port=up_port, port=port, feed=FEED_PATH, control=CONTROL_PATH))
    routes_d = workdir / "routes.d"
    routes_d.mkdir()
    for i in range(dropins):
        (routes_d / f"{i:0{width}d}.yaml").write_text(dropin_text(i, width, up_port, port, BASE_SYMBOLS))
    return config, width


def write_file(path: Path, text: str, mode: str) -> None:
    """Replace ``path``'s contents: through a hidden temporary file and a rename, or in place."""
    if mode == "rename":
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    else:
        with open(path, "w") as fh:
            fh.write(text)


# ---------------------------------------------------------------------------- cold check


def time_check(python: str, cwd: Path, config: Path, runs: int, timeout: float) -> CheckResult:
    """Time ``python -m veylor check -c config`` as new processes; the median of ``runs``."""
    result = CheckResult()
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen(
            [python, "-m", "veylor", "check", "-c", str(config)],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        pin(proc.pid, RELAY_CPU)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            result.returncode = None
            result.output_tail = f"timed out after {timeout:g} s"
            return result
        elapsed = time.perf_counter() - started
        result.returncode = proc.returncode
        if proc.returncode != 0:
            result.output_tail = (err or out).decode(errors="replace")[-3000:] or "(no output)"
            return result
        result.runs_s.append(elapsed)
    result.median_s = percentile(result.runs_s, 50)
    return result


# ---------------------------------------------------------------------------- the live run


def applied_or_failed(line: str) -> bool:
    """Is this Veylor's line for an applied, or a rejected or aborted, reload?"""
    return bool(RELOAD_APPLIED.search(line) or RELOAD_FAILED.search(line))


async def live_run(
    args: argparse.Namespace,
    config: Path,
    edited: Path,
    width: int,
    up_port: int,
    port: int,
    upstream: Process,
) -> LiveResult:
    """Start Veylor, wait until it serves, edit one drop-in K times, measure; stop Veylor.
    Its standard error is read line by line, each line stamped on arrival."""
    res = LiveResult()
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    veylor = Process(
        [args.veylor_python, "-m", "veylor", "-c", str(config)], cpus=RELAY_CPU, cwd=args.cwd, read="stderr"
    )
    client = ControlClient(f"ws://127.0.0.1:{port}{CONTROL_PATH}")
    try:
        ready = await veylor.until(lambda line: "ready:" in line, 0, args.start_timeout)
        if ready is None:
            tail = "\n".join(line for _, line in veylor.lines[-15:])
            res.error = f"Veylor did not log 'ready:' within {args.start_timeout:g} s:\n{tail}"
            return res
        res.ready_s = ready[1] - started
        print(f"Veylor ready in {res.ready_s:.2f} s: {ready[2].split('ready:', 1)[1].strip()}", flush=True)

        def connected() -> list[str]:
            return [line for _, line in upstream.lines if line.startswith("connected ")]

        wanted = args.dropins + 1
        deadline = time.monotonic() + args.start_timeout
        while len(connected()) < wanted and time.monotonic() < deadline and veylor.popen.poll() is None:
            await asyncio.sleep(0.05)
        conns = connected()
        res.sources_connected = len({line.split()[1] for line in conns})
        if res.sources_connected >= wanted:
            res.all_connected_s = time.monotonic() - started
        print(f"sources connected upstream: {res.sources_connected}/{wanted}", flush=True)
        if not any(line == f"connected {FEED_PATH}" for line in conns):
            res.error = "the feed source did not connect to the upstream"
            return res

        tasks.append(asyncio.create_task(client.run()))
        try:
            await asyncio.wait_for(client.first.wait(), 10)
        except TimeoutError:
            res.error = f"the control client received nothing within 10 s ({client.closed or 'connected'})"
            return res
        # Let the file watcher start and deliveries settle, then measure a quiet baseline.
        await veylor.until(lambda line: "watching" in line, 0, 5)
        base_lo = time.monotonic()
        await asyncio.sleep(args.baseline)
        base_hi = time.monotonic()
        res.baseline = delivery_stats(client, base_lo, base_hi)
        print(
            f"baseline {args.baseline:g} s: largest gap {res.baseline['max_gap_ms']:.1f} ms, "
            f"p99 gap {res.baseline['p99_gap_ms']:.2f} ms, {res.baseline['msgs_per_s']:.0f} msg/s",
            flush=True,
        )

        # The editing phase.
        index = int(edited.stem)
        phase_lo = time.monotonic()
        write_times: list[float] = []
        for k in range(1, args.edits + 1):
            edit = Edit(k)
            res.edits.append(edit)
            symbols = [*BASE_SYMBOLS, f"EDIT{k:03d}USDT"]
            mark = len(veylor.lines)
            write_file(edited, dropin_text(index, width, up_port, port, symbols), args.write)
            t_write = time.monotonic()
            write_times.append(t_write)

            got = None
            while True:
                left = args.reload_timeout - (time.monotonic() - t_write)
                got = await veylor.until(applied_or_failed, mark, max(left, 0))
                if got is None:
                    break
                mark = got[0] + 1
                if RELOAD_APPLIED.search(got[2]):
                    break
                edit.failures.append(got[2])
            if got is None:
                why = "Veylor exited" if veylor.eof else f"no applied reload within {args.reload_timeout:g} s"
                edit.failures.append(why)
                print(f"edit {k}: {why}; stopping the edits", flush=True)
                break
            m = RELOAD_APPLIED.search(got[2])
            assert m is not None
            edit.latency_ms = (got[1] - t_write) * 1000
            edit.generation = int(m.group(1))
            edit.veylor_applied_ms = float(m.group(2))
            edit.line = got[2]
            print(
                f"edit {k}: applied {edit.latency_ms:.0f} ms after the write "
                f"(Veylor: applied in {edit.veylor_applied_ms:g} ms, reload #{edit.generation})",
                flush=True,
            )
            await asyncio.sleep(args.pause)
        await asyncio.sleep(max(0.0, args.tail - args.pause))
        phase_hi = time.monotonic()

        res.editing = delivery_stats(client, phase_lo, phase_hi)
        bounds = [*write_times, phase_hi]
        for edit, lo, hi in zip(res.edits, bounds, bounds[1:], strict=False):
            edit.max_gap_ms = max(gaps_in(client.times, lo, hi), default=float("nan")) * 1000
        res.sequence = sequence_stats(client.seqs)
        res.control_closed = client.closed
        res.feed_connections = sum(1 for _, line in upstream.lines if line == f"connected {FEED_PATH}")
        return res
    finally:
        for task in tasks:
            task.cancel()
        _, res.shutdown_s = await asyncio.to_thread(veylor.terminate, 5.0)
        res.veylor_exit = veylor.popen.returncode
        await asyncio.to_thread(veylor.wait_output, 5)
        await asyncio.gather(*tasks, return_exceptions=True)
        log_path("controlplane-veylor.log").write_text(
            "".join(f"{t - started:9.3f} {line}\n" for t, line in veylor.lines)
        )


async def run_all(args: argparse.Namespace, workdir: Path) -> tuple[LiveResult, CheckResult]:
    """Start the upstream, write the configuration, time ``veylor check``, run the live part."""
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM, like Ctrl-C, cancels the run: the finally clauses stop what was started.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    pin(0, LOAD_CPU)
    upstream = Process(
        [sys.executable, str(Path(__file__).resolve()), "--serve-upstream", "--rate", str(args.rate)],
        cpus=LOAD_CPU,
        cwd=HERE,
        read="stdout",
        log=log_path("controlplane-upstream.log"),
    )
    try:
        got = await upstream.until(lambda line: line.startswith("listening "), 0, 20)
        if got is None:
            raise RuntimeError("the upstream server did not start")
        up_port = int(got[2].split()[1])
        port = free_port()
        config, width = write_config(workdir, args.dropins, up_port, port)
        edited = workdir / "routes.d" / f"{args.dropins // 2:0{width}d}.yaml"
        print(
            f"configuration: {config} with {args.dropins} drop-ins; upstream 127.0.0.1:{up_port}, "
            f"endpoints 127.0.0.1:{port}",
            flush=True,
        )
        check = await asyncio.to_thread(
            time_check, args.veylor_python, args.cwd, config, args.check_runs, args.check_timeout
        )
        if check.returncode != 0 or not check.runs_s:
            raise RuntimeError(f"veylor check failed ({check.returncode}):\n{check.output_tail}")
        runs = ", ".join(f"{s:.2f}" for s in check.runs_s)
        print(f"cold veylor check: median {check.median_s:.2f} s ({runs})", flush=True)
        live = await live_run(args, config, edited, width, up_port, port, upstream)
        return live, check
    finally:
        await asyncio.to_thread(upstream.kill, signal.SIGKILL, 5)


# ---------------------------------------------------------------------------- report


def machine_and_veylor(args: argparse.Namespace) -> dict[str, str]:
    """The machine, the versions, and which Veylor was measured."""
    veylor = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        veylor = subprocess.run(
            [args.veylor_python, "-c", "import veylor; print(veylor.__file__, veylor.__version__)"],
            cwd=args.cwd,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    commit = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "-C", str(args.cwd), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(args.cwd), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if head:
            commit = f"commit {head}" + (" with uncommitted changes" if dirty else "")
    return {**machine(), "veylor": veylor, "veylor_commit": commit}


# ---------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dropins", type=int, default=1000, help="drop-in files (default 1000)")
    parser.add_argument("--edits", type=int, default=10, help="edits of one drop-in (default 10)")
    parser.add_argument("--markdown", metavar="FILE", help="write a Markdown report here")
    parser.add_argument(
        "--veylor-python",
        default=sys.executable,
        help="the Python that runs `-m veylor` (default: this one)",
    )
    parser.add_argument(
        "--cwd",
        type=Path,
        default=ROOT,
        help="directory `python -m veylor` runs from, i.e. the checkout measured (default: this repository)",
    )
    parser.add_argument(
        "--write",
        choices=("rename", "inplace"),
        default="rename",
        help="how an edit is written: temporary file + rename (default), or rewritten in place",
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="feed messages per second (default 1000)")
    parser.add_argument(
        "--baseline", type=float, default=3.0, help="seconds of quiet measured before the edits"
    )
    parser.add_argument(
        "--pause", type=float, default=0.5, help="seconds between an applied reload and the next edit"
    )
    parser.add_argument(
        "--tail", type=float, default=2.0, help="seconds measured after the last applied reload"
    )
    parser.add_argument("--reload-timeout", type=float, default=20.0, help="seconds to wait for each reload")
    parser.add_argument(
        "--start-timeout", type=float, default=90.0, help="seconds to wait for Veylor to serve"
    )
    parser.add_argument("--check-runs", type=int, default=3, help="cold `veylor check` runs (median)")
    parser.add_argument(
        "--check-timeout", type=float, default=60.0, help="seconds allowed per `veylor check`"
    )
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_upstream:
        with contextlib.suppress(KeyboardInterrupt):
            run_loop(lambda: serve_upstream(args.port, args.rate))
        return 0
    if args.dropins < 1 or args.edits < 1:
        parser.error("--dropins and --edits must be at least 1")
    args.cwd = args.cwd.resolve()
    raise_nofile()

    workdir = Path(tempfile.mkdtemp(prefix="veylor-controlplane-"))
    try:
        live, check = run_loop(lambda: run_all(args, workdir))
    except RuntimeError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: everything started was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if live.error:
        print(f"failed: {live.error}", file=sys.stderr)

    verdicts = targets(live, check, args.edits)
    print("\n## Targets\n")
    for line in verdicts:
        print(line)
    meta = machine_and_veylor(args)
    lat = [x.latency_ms for x in live.edits if x.latency_ms is not None]
    own = [x.veylor_applied_ms for x in live.edits if x.veylor_applied_ms is not None]
    summary = {
        "largest_gap_ms": live.editing.get("max_gap_ms"),
        "p99_gap_ms": live.editing.get("p99_gap_ms"),
        "lost": live.sequence.get("lost"),
        "reload_p50_ms": percentile(lat, 50),
        "reload_max_ms": max(lat, default=float("nan")),
        "veylor_applied_p50_ms": percentile(own, 50),
        "veylor_applied_max_ms": max(own, default=float("nan")),
        "check_median_s": check.median_s,
    }
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("port",)}
    params.pop("serve_upstream", None)
    write_json(
        "controlplane.json",
        finite(
            {
                "machine": meta,
                "params": params,
                "summary": summary,
                "live": asdict(live),
                "check": asdict(check),
                "targets": verdicts,
            }
        ),
    )
    if args.markdown:
        Path(args.markdown).write_text(markdown(args, meta, live, check))
    return 1 if live.error else 0


if __name__ == "__main__":
    sys.exit(main())
