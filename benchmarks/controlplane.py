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
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import SYMBOLS, message, seq_of, ts_of
from harness import free_port
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
LOGS = RESULTS / "logs"
CPUS = os.cpu_count() or 1
RELAY_CPU = {0}
LOAD_CPU = {1} if CPUS > 1 else {0}
FEED_PATH = "/feed"
CONTROL_PATH = "/control"
BASE_SYMBOLS = ("BTCUSDT", "ETHUSDT")

# Targets of the control-plane work.
TARGET_GAP_MS = 20.0
TARGET_RELOAD_P50_MS = 100.0
TARGET_CHECK_S = 1.0

RELOAD_APPLIED = re.compile(r"reload #(\d+)\b.*applied in ([0-9.]+) ?ms")
RELOAD_FAILED = re.compile(r"reload\b.*\b(rejected|aborted|unexpected error)")


# ---------------------------------------------------------------------------- helpers


def pin(pid: int, cpus: set[int]) -> None:
    """Pin a process to ``cpus`` where the system allows it."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, cpus)


def raise_nofile() -> None:
    """Raise this process's soft open-file limit to the hard one (1000+ connections)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by None (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


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


@dataclass
class CheckResult:
    runs_s: list[float] = field(default_factory=list)
    median_s: float = float("nan")
    returncode: int | None = None
    output_tail: str = ""


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


class LogReader:
    """Lines of a child's output, each with the monotonic time it was read."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream
        self.lines: list[tuple[float, str]] = []
        self.eof = False
        self._changed = asyncio.Event()

    async def run(self) -> None:
        try:
            while line := await self.stream.readline():
                self.lines.append((time.monotonic(), line.decode(errors="replace").rstrip("\n")))
                self._changed.set()
        finally:
            self.eof = True
            self._changed.set()

    async def wait_for(
        self, predicate: Callable[[str], bool], start: int, timeout: float
    ) -> tuple[int, float, str] | None:
        """The first line from index ``start`` on that matches: (index, time, line), or None
        on timeout or end of output."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            self._changed.clear()
            while i < len(self.lines):
                t, line = self.lines[i]
                if predicate(line):
                    return i, t, line
                i += 1
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return None


class ControlClient:
    """One WebSocket client of the control endpoint that stamps every delivery."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.times: list[float] = []  # time.monotonic() at receipt
        self.seqs: list[int] = []
        self.latency_ms: list[float] = []  # receipt minus send time (wall clocks, same machine)
        self.connected = asyncio.Event()
        self.first = asyncio.Event()
        self.closed: str | None = None  # why the connection ended, if it did before we stopped

    async def run(self) -> None:
        try:
            async with connect(
                self.url,
                compression=None,
                max_size=2**20,
                ping_interval=None,  # Veylor pings its clients; the client answers
                open_timeout=10,
                close_timeout=2,
            ) as ws:
                self.connected.set()
                async for msg in ws:
                    t = time.monotonic()
                    now_ns = time.time_ns()
                    data = msg.encode() if isinstance(msg, str) else msg
                    self.times.append(t)
                    self.seqs.append(seq_of(data))
                    self.latency_ms.append((now_ns - ts_of(data)) / 1e6)
                    self.first.set()
                self.closed = f"closed by Veylor: {ws.close_code} {ws.close_reason!r}"
        except (OSError, ConnectionClosed, TimeoutError, ValueError) as exc:
            self.closed = f"{type(exc).__name__}: {exc}"


def gaps_in(times: Sequence[float], lo: float, hi: float) -> list[float]:
    """Gaps (s) between consecutive deliveries overlapping [lo, hi]: from the last delivery
    before ``lo`` to the first after ``hi``; a delivery still awaited at ``hi`` ends at ``hi``."""
    import bisect

    a = max(0, bisect.bisect_left(times, lo) - 1)
    b = bisect.bisect_right(times, hi)
    window = list(times[a : b + 1])
    if b >= len(times):  # nothing after hi: an open gap counts up to hi
        window.append(hi)
    return [y - x for x, y in itertools.pairwise(window)]


def delivery_stats(client: ControlClient, lo: float, hi: float) -> dict[str, Any]:
    """Gap and latency statistics of the control client's deliveries in [lo, hi]."""
    import bisect

    gaps = gaps_in(client.times, lo, hi)
    a, b = bisect.bisect_left(client.times, lo), bisect.bisect_right(client.times, hi)
    latency = client.latency_ms[a:b]
    worst_at = float("nan")
    if gaps:
        k = max(range(len(gaps)), key=gaps.__getitem__)
        start = max(0, bisect.bisect_left(client.times, lo) - 1)
        worst_at = client.times[start + k] - lo if start + k < len(client.times) else float("nan")
    return {
        "seconds": hi - lo,
        "messages": b - a,
        "msgs_per_s": (b - a) / max(hi - lo, 1e-9),
        "max_gap_ms": max(gaps, default=float("nan")) * 1000,
        "max_gap_starts_at_s": worst_at,
        "p99_gap_ms": percentile(gaps, 99) * 1000,
        "p50_gap_ms": percentile(gaps, 50) * 1000,
        "gaps_over_20ms": sum(1 for g in gaps if g > TARGET_GAP_MS / 1000),
        "latency_p50_ms": percentile(latency, 50),
        "latency_p99_ms": percentile(latency, 99),
        "latency_max_ms": max(latency, default=float("nan")),
    }


def sequence_stats(seqs: Sequence[int]) -> dict[str, int]:
    """Lost (never received), duplicated and reordered sequence numbers, first to last received."""
    if not seqs:
        return {"received": 0, "first": 0, "last": 0, "lost": 0, "duplicates": 0, "reorders": 0}
    unique = set(seqs)
    reorders = sum(1 for x, y in itertools.pairwise(seqs) if y < x)
    lo, hi = min(unique), max(unique)
    return {
        "received": len(seqs),
        "first": lo,
        "last": hi,
        "lost": (hi - lo + 1) - len(unique),
        "duplicates": len(seqs) - len(unique),
        "reorders": reorders,
    }


def applied_or_failed(line: str) -> bool:
    """Is this Veylor's line for an applied, or a rejected or aborted, reload?"""
    return bool(RELOAD_APPLIED.search(line) or RELOAD_FAILED.search(line))


@dataclass
class Edit:
    edit: int
    latency_ms: float | None = None  # rename -> "reload #... applied" line read
    veylor_applied_ms: float | None = None  # what Veylor says in that line
    generation: int | None = None
    max_gap_ms: float = float("nan")  # the control client's largest gap from this edit to the next
    failures: list[str] = field(default_factory=list)  # rejected/aborted reload lines meanwhile
    line: str = ""


@dataclass
class LiveResult:
    ready_s: float = float("nan")  # Veylor started -> "ready:" line
    sources_connected: int = 0
    all_connected_s: float = float("nan")  # Veylor started -> every source connected upstream
    feed_connections: int = 0
    edits: list[Edit] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)
    editing: dict[str, Any] = field(default_factory=dict)
    sequence: dict[str, int] = field(default_factory=dict)
    control_closed: str | None = None
    veylor_exit: int | None = None
    shutdown_s: float = float("nan")
    error: str = ""


async def stop_process(proc: asyncio.subprocess.Process, grace: float) -> float:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the seconds it took to exit."""
    started = time.monotonic()
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), 5)
    return time.monotonic() - started


async def live_run(
    args: argparse.Namespace,
    config: Path,
    edited: Path,
    width: int,
    up_port: int,
    port: int,
    up_lines: LogReader,
) -> LiveResult:
    """Start Veylor, wait until it serves, edit one drop-in K times, measure; stop Veylor."""
    res = LiveResult()
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    veylor = await asyncio.create_subprocess_exec(
        args.veylor_python,
        "-m",
        "veylor",
        "-c",
        str(config),
        cwd=args.cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        limit=2**20,
    )
    pin(veylor.pid, RELAY_CPU)
    assert veylor.stderr is not None
    log = LogReader(veylor.stderr)
    tasks.append(asyncio.create_task(log.run()))
    client = ControlClient(f"ws://127.0.0.1:{port}{CONTROL_PATH}")
    try:
        ready = await log.wait_for(lambda line: "ready:" in line, 0, args.start_timeout)
        if ready is None:
            tail = "\n".join(line for _, line in log.lines[-15:])
            res.error = f"Veylor did not log 'ready:' within {args.start_timeout:g} s:\n{tail}"
            return res
        res.ready_s = ready[1] - started
        print(f"Veylor ready in {res.ready_s:.2f} s: {ready[2].split('ready:', 1)[1].strip()}", flush=True)

        def connected() -> list[str]:
            return [line for _, line in up_lines.lines if line.startswith("connected ")]

        wanted = args.dropins + 1
        deadline = time.monotonic() + args.start_timeout
        while len(connected()) < wanted and time.monotonic() < deadline and veylor.returncode is None:
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
        await log.wait_for(lambda line: "watching" in line, 0, 5)
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
            mark = len(log.lines)
            write_file(edited, dropin_text(index, width, up_port, port, symbols), args.write)
            t_write = time.monotonic()
            write_times.append(t_write)

            got = None
            while True:
                left = args.reload_timeout - (time.monotonic() - t_write)
                got = await log.wait_for(applied_or_failed, mark, max(left, 0))
                if got is None:
                    break
                mark = got[0] + 1
                if RELOAD_APPLIED.search(got[2]):
                    break
                edit.failures.append(got[2])
            if got is None:
                why = "Veylor exited" if log.eof else f"no applied reload within {args.reload_timeout:g} s"
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
        res.feed_connections = sum(1 for _, line in up_lines.lines if line == f"connected {FEED_PATH}")
        return res
    finally:
        for task in tasks[1:]:
            task.cancel()
        res.shutdown_s = await stop_process(veylor, 5.0)
        res.veylor_exit = veylor.returncode
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tasks[0], 5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        LOGS.mkdir(parents=True, exist_ok=True)
        (LOGS / "controlplane-veylor.log").write_text(
            "".join(f"{t - started:9.3f} {line}\n" for t, line in log.lines)
        )


async def run_all(args: argparse.Namespace, workdir: Path) -> tuple[LiveResult, CheckResult]:
    """Start the upstream, write the configuration, time ``veylor check``, run the live part."""
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM, like Ctrl-C, cancels the run: the finally clauses stop what was started.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    pin(0, LOAD_CPU)
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / "controlplane-upstream.log", "w") as up_err:
        upstream = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve-upstream",
            "--rate",
            str(args.rate),
            cwd=HERE,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=up_err,
        )
    pin(upstream.pid, LOAD_CPU)
    assert upstream.stdout is not None
    up_lines = LogReader(upstream.stdout)
    up_task = asyncio.create_task(up_lines.run())
    try:
        got = await up_lines.wait_for(lambda line: line.startswith("listening "), 0, 20)
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
        live = await live_run(args, config, edited, width, up_port, port, up_lines)
        return live, check
    finally:
        if upstream.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                upstream.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(upstream.wait(), 5)
        up_task.cancel()
        await asyncio.gather(up_task, return_exceptions=True)


# ---------------------------------------------------------------------------- report


def targets(live: LiveResult, check: CheckResult, edits: int) -> list[str]:
    """PASS/FAIL lines against the control-plane targets."""
    out: list[str] = []

    def verdict(ok: bool, text: str) -> None:
        out.append(f"- {'PASS' if ok else 'FAIL'}: {text}")

    e = live.editing
    gap = e.get("max_gap_ms", float("nan"))
    seq = live.sequence
    verdict(
        gap < TARGET_GAP_MS and seq.get("lost", 1) == 0 and live.control_closed is None,
        f"control client during {edits} reloads: largest gap {gap:.1f} ms (< {TARGET_GAP_MS:g} ms), "
        f"p99 gap {e.get('p99_gap_ms', float('nan')):.2f} ms, max latency "
        f"{e.get('latency_max_ms', float('nan')):.1f} ms, lost {seq.get('lost', '?')}, "
        f"duplicates {seq.get('duplicates', '?')}, reorders {seq.get('reorders', '?')}"
        + (f"; connection ended: {live.control_closed}" if live.control_closed else ""),
    )
    lat = [x.latency_ms for x in live.edits if x.latency_ms is not None]
    own = [x.veylor_applied_ms for x in live.edits if x.veylor_applied_ms is not None]
    p50 = percentile(lat, 50)
    verdict(
        len(lat) == edits and p50 < TARGET_RELOAD_P50_MS,
        f"one-file reload: write -> applied p50 {p50:.0f} ms (< {TARGET_RELOAD_P50_MS:g} ms), "
        f"max {max(lat, default=float('nan')):.0f} ms; Veylor's 'applied in' p50 "
        f"{percentile(own, 50):.0f} ms, max {max(own, default=float('nan')):.0f} ms; "
        f"{len(lat)}/{edits} edits applied",
    )
    verdict(
        check.median_s < TARGET_CHECK_S,
        f"cold `veylor check`: median {check.median_s:.2f} s of {len(check.runs_s)} (< {TARGET_CHECK_S:g} s)",
    )
    return out


def markdown(args: argparse.Namespace, meta: dict[str, str], live: LiveResult, check: CheckResult) -> str:
    """A Markdown report of one run."""
    b, e = live.baseline, live.editing

    def row(name: str, d: dict[str, Any]) -> str:
        return (
            f"| {name} | {d.get('seconds', float('nan')):.1f} | {d.get('msgs_per_s', float('nan')):.0f} "
            f"| {d.get('max_gap_ms', float('nan')):.1f} | {d.get('p99_gap_ms', float('nan')):.2f} "
            f"| {d.get('gaps_over_20ms', 0)} | {d.get('latency_p99_ms', float('nan')):.1f} "
            f"| {d.get('latency_max_ms', float('nan')):.1f} |"
        )

    def num(x: float | None, f: str = ".0f") -> str:
        return "-" if x is None else format(x, f)

    lines = [
        f"Run on {meta['date']} with `benchmarks/controlplane.py --dropins {args.dropins} --edits {args.edits}` "
        f"(Veylor from `{meta['veylor']}`, {meta['veylor_commit']}).",
        "",
        f"Machine: {meta['cpu']}, {meta['cpus']} CPUs, {meta['kernel']}; Python {meta['python']}, "
        f"websockets {meta['websockets']}, uvloop {meta['uvloop']}.",
        "",
        f"{args.dropins} drop-ins ({args.dropins + 1} sources, {args.dropins + 1} endpoints on one listener, "
        f"{args.dropins + 1} routes); feed at {args.rate:g} msg/s to the control client; edits written by "
        f"{'temporary file + rename' if args.write == 'rename' else 'rewriting in place'}. "
        f"Veylor ready {live.ready_s:.2f} s after start; every source connected after "
        f"{live.all_connected_s:.2f} s; SIGTERM to exit {live.shutdown_s:.2f} s.",
        "",
        "### Control client deliveries",
        "",
        "| phase | seconds | msg/s | largest gap ms | p99 gap ms | gaps > 20 ms | p99 latency ms | max latency ms |",
        "|---|---|---|---|---|---|---|---|",
        row("baseline (no edits)", b),
        row(f"editing ({len(live.edits)} reloads)", e),
        "",
        f"Sequence numbers: {live.sequence.get('received', 0)} received, lost {live.sequence.get('lost', '?')}, "
        f"duplicates {live.sequence.get('duplicates', '?')}, reorders {live.sequence.get('reorders', '?')}; "
        f"feed connections to the upstream: {live.feed_connections}"
        + (f"; control connection ended: {live.control_closed}" if live.control_closed else "")
        + ".",
        "",
        "### Reloads (one drop-in edited)",
        "",
        "| edit | write -> applied ms | Veylor 'applied in' ms | largest delivery gap ms | notes |",
        "|---|---|---|---|---|",
    ]
    for x in live.edits:
        notes = "; ".join(x.failures).replace("|", "\\|")
        lines.append(
            f"| {x.edit} | {num(x.latency_ms)} | {num(x.veylor_applied_ms)} | {x.max_gap_ms:.1f} | {notes} |"
        )
    runs = ", ".join(f"{s:.2f}" for s in check.runs_s)
    lines += [
        "",
        f"### Cold `veylor check`\n\nMedian {check.median_s:.2f} s ({runs}).",
        "",
        "### Targets",
        "",
        *targets(live, check, args.edits),
    ]
    return "\n".join(lines) + "\n"


def machine(args: argparse.Namespace) -> dict[str, str]:
    """The machine, the versions, and which Veylor was measured."""
    import websockets

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
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
    return {
        "cpu": cpu,
        "cpus": str(CPUS),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
        "uvloop": uvloop.__version__ if uvloop is not None else "-",
        "date": time.strftime("%Y-%m-%d"),
        "veylor": veylor,
        "veylor_commit": commit,
    }


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
    meta = machine(args)
    RESULTS.mkdir(exist_ok=True)
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
    (RESULTS / "controlplane.json").write_text(
        json.dumps(
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
            indent=2,
        )
    )
    if args.markdown:
        Path(args.markdown).write_text(markdown(args, meta, live, check))
    return 1 if live.error else 0


if __name__ == "__main__":
    sys.exit(main())
