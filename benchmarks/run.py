"""Veylor's fan-out benchmark: Veylor and reference relays in the same run, on 127.0.0.1.

    .venv/bin/python benchmarks/run.py                 # every scenario (about 10 minutes)
    .venv/bin/python benchmarks/run.py --quick         # shorter runs, fewer scenarios
    .venv/bin/python benchmarks/run.py --only ws_max   # scenarios whose name starts so
    .venv/bin/python benchmarks/run.py --baseline ../veylor-old   # before/after, same run

With ``--baseline DIR`` (a checkout of an earlier commit, e.g. ``git worktree add
../veylor-old HEAD~3``), every Veylor run is also made with the Veylor of DIR
(``veylor-base``: ``python -m veylor`` started from DIR imports DIR's package), and
a before/after table compares the headline figures of the two in this run.

For each scenario and relay it starts the upstream generator, the relay and the load
client (relay pinned to CPU 0, the other two to CPU 1), warms up, measures, reads the
relay's CPU time (user/system) and RSS from /proc, kills everything it started, and
prints a table. The targets of the performance issue are checked at the end, as
ratios measured in this run. Results also go to benchmarks/results/latest.json and,
with --markdown FILE, to a Markdown report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import LOAD_CPU, RELAY_CPU, free_port
from harness.process import Process, wait_listening
from harness.report import log_path, machine, verdict, write_json

HERE = Path(__file__).resolve().parent
PY = sys.executable
BASELINE: Path | None = None  # --baseline: the checkout that "veylor-base" runs
BASE = "-base"


@dataclass
class Result:
    scenario: str
    relay: str
    clients: int
    rate: float  # requested upstream rate (0: max)
    sent: int = 0
    delivered: int = 0
    expected: int = 0
    deliveries_per_s: float = 0.0
    msgs_per_s: float = 0.0
    loss: int = 0
    gaps: int = 0
    reorders: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    rss_mib: float = 0.0
    rss_per_client_kib: float = 0.0
    stalled_open: int = 0
    stall: int = 0  # clients that never read
    closed: int = 0  # clients the relay disconnected during the run (slow-client policy)
    note: str = ""
    extra: dict = field(default_factory=dict)


VEYLOR_CONFIG = """
sources:
  feed: {{url: "{upstream}", max_message_size: 1MiB}}
endpoints:
  out:
    {listen}
    max_clients: 100000
routes:
  all: {{from: feed, to: out{filter}}}
"""


def relay_command(
    relay: str,
    upstream: str,
    port: int,
    unix: str | None,
    workdir: Path,
    filtered: bool,
    admin: int | None = None,
) -> list[str]:
    if relay.startswith("veylor"):  # veylor, veylor-filtered, veylor-scraped, and their -base twins
        listen = f"unix: {{path: {unix}}}" if unix else f"websocket: {{host: 127.0.0.1, port: {port}}}"
        flt = ", filter: {json: {path: s, in: [BTCUSDT, ETHUSDT]}}" if filtered else ""
        config = workdir / "veylor.yaml"
        text = VEYLOR_CONFIG.format(upstream=upstream, listen=listen, filter=flt)
        if admin is not None:
            text += f'admin: {{listen: "127.0.0.1:{admin}"}}\n'
        config.write_text(text)
        command = [PY, "-m", "veylor", "-c", str(config), "--no-watch"]
        if "tui" in relay:  # the dashboard on, in a pseudo-terminal (script), drawing at 2 Hz
            return ["script", "-qfec", shlex.join([*command, "--tui"]), "/dev/null"]
        return command
    if relay == "node-ws":
        return ["node", str(HERE / "relays" / "node_ws.js"), "--upstream", upstream, "--port", str(port)]
    script = {
        "limit": "limit_proxy.py",
        "broadcast": "broadcast.py",
        "gather": "naive_gather.py",
        "bare": "bare_websockets.py",
    }[relay]
    where = ["--unix", unix] if unix else ["--port", str(port)]
    return [PY, str(HERE / "relays" / script), "--upstream", upstream, *where]


def run_one(
    scenario: str,
    relay: str,
    clients: int,
    rate: float,
    seconds: float,
    *,
    unix: bool = False,
    filtered: bool = False,
    stall: int = 0,
    idle: bool = False,
) -> Result:
    result = Result(scenario, relay, clients, rate, stall=stall)
    workdir = Path(tempfile.mkdtemp(prefix="veylor-bench-"))
    procs: list[Process] = []
    try:
        upstream = Process([PY, str(HERE / "upstream.py")], cpus=LOAD_CPU, stdin=True, read="stdout")
        procs.append(upstream)
        up_port = int(upstream.expect("listening").split()[1])
        port = free_port()
        admin = free_port() if "scraped" in relay else None
        sock = str(workdir / "relay.sock") if unix else None
        relay_proc = Process(  # (a TUI relay's screen goes nowhere)
            relay_command(relay, f"ws://127.0.0.1:{up_port}/", port, sock, workdir, filtered, admin),
            cpus=RELAY_CPU,
            cwd=BASELINE if relay.endswith(BASE) and BASELINE is not None else HERE,
            log=log_path(f"{scenario}-{relay}-{clients}.log"),
        )
        procs.append(relay_proc)
        upstream.expect("relay connected", 30)
        wait_listening(port, sock)
        if admin is not None:  # Prometheus, once a second, on the load's CPU
            procs.append(
                Process([PY, str(HERE / "scraper.py"), f"http://127.0.0.1:{admin}/metrics"], cpus=LOAD_CPU)
            )
        time.sleep(0.3)
        rss_before = relay_proc.rss_mib()
        target = ["--unix", sock] if unix else ["--url", f"ws://127.0.0.1:{port}/"]
        load = Process(
            [PY, str(HERE / "loadclient.py"), *target, "-n", str(clients), "--stall", str(stall)],
            cpus=LOAD_CPU,
            stdin=True,
            read="stdout",
        )
        procs.append(load)
        load.expect("ready", 120)
        if idle:
            time.sleep(2)
            rss = relay_proc.rss_mib()
            result.rss_mib = rss
            result.rss_per_client_kib = (rss - rss_before) * 1024 / clients
            return result
        if rate > 0:  # warm-up at a rate the relay is meant to sustain
            upstream.send(f"go 1 {rate}")
            upstream.expect("{", 60)
            time.sleep(0.5)
        upstream.send("seq")
        first = int(upstream.expect("seq").split()[1])
        load.send(f"reset {first} {2**62}")
        load.expect("ok")
        user0, sys0 = relay_proc.cpu()
        upstream.send(f"go {seconds} {rate}")
        went = json.loads(upstream.expect("{", seconds + 60))
        sent = went["sent"]
        load.send(f"reset-window {went['first']} {went['last']}")
        readers = clients - stall
        expected = sent * readers
        # Let what is in flight arrive: until nothing more comes for 0.5 s (or 5 s).
        last, report, still = -1, {}, 0
        for _ in range(50):
            time.sleep(0.1)
            load.send("report")
            report = json.loads(load.expect("{"))
            if report["delivered"] >= expected:
                break
            still = still + 1 if report["delivered"] == last else 0
            if still >= 5:
                break
            last = report["delivered"]
        user1, sys1 = relay_proc.cpu()
        result.sent = sent
        result.expected = expected
        result.delivered = report["delivered"]
        result.loss = max(0, expected - report["delivered"])
        result.gaps = report["gaps"]
        result.reorders = report["reorders"]
        span = max(report["span_s"], 1e-9)
        result.deliveries_per_s = report["delivered"] / span
        result.msgs_per_s = result.deliveries_per_s / max(readers, 1)
        result.p50_ms = report["p50_ms"]
        result.p99_ms = report["p99_ms"]
        result.cpu_user_s = user1 - user0
        result.cpu_sys_s = sys1 - sys0
        result.rss_mib = relay_proc.rss_mib()
        result.stalled_open = report["stalled_open"]
        result.closed = report["clients"] - report["open"]
        result.extra = {"span_s": span, "open": report["open"], "slow_paths": report["slow_paths"]}
        return result
    except (TimeoutError, RuntimeError) as exc:
        result.note = f"failed: {exc}"
        return result
    finally:
        for p in reversed(procs):
            if p is procs[-1] and p.popen.args[1:2] == [str(HERE / "loadclient.py")]:
                with contextlib.suppress(Exception):
                    p.send("quit")
            p.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def fmt(r: Result) -> str:
    if r.note:
        return f"| {r.relay} | {r.clients} | {r.note} |"
    rate = "max" if r.rate <= 0 else f"{r.rate:g}/s"
    return (
        f"| {r.relay} | {r.clients} | {rate} | {r.deliveries_per_s / 1e3:,.0f}k | {r.msgs_per_s:,.0f} | "
        f"{r.loss} | {r.closed} | {r.reorders} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.cpu_user_s:.1f}/{r.cpu_sys_s:.1f} | {r.rss_mib:.0f} |"
    )


HEAD = (
    "| relay | clients | upstream rate | deliveries/s | msg/s per client | undelivered | clients closed | reorders "
    "| p50 ms | p99 ms | relay CPU user/sys s | RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="2-second runs, fewer scenarios")
    parser.add_argument("--only", default="", help="comma-separated scenario name prefixes")
    parser.add_argument(
        "--relays", default="veylor,limit,broadcast,gather", help="comma-separated reference relays"
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help="also Node.js ws (needs: npm install --prefix benchmarks/relays ws)",
    )
    parser.add_argument("--markdown", help="write a Markdown report here")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each max-rate measurement at least this many times and keep the median",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run the Veylor of this checkout (as veylor-base) and compare before/after",
    )
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    relays = args.relays.split(",")
    global BASELINE
    if args.baseline:
        BASELINE = Path(args.baseline).resolve()
        if not (BASELINE / "veylor" / "__main__.py").is_file():
            parser.error(f"{BASELINE} is not a Veylor checkout")

    if args.node:
        relays.append("node-ws")
    only = [p for p in args.only.split(",") if p]
    results: list[Result] = []
    sections: list[tuple[str, list[Result]]] = []

    def scenario(name: str, title: str, runs: list[tuple[str, dict]]) -> list[Result]:
        if only and not any(name.startswith(p) for p in only):
            return []
        print(f"\n## {title}\n\n{HEAD}", flush=True)
        out = []
        if BASELINE is not None:  # each Veylor run is made with the baseline too
            runs = [(r, kw) for r, kw in runs if not r.endswith(BASE)]
        for relay, kw in runs:
            kw = dict(kw)
            repeat = kw.pop("repeat", 1)
            if kw.get("rate", 1) <= 0 and not kw.get("idle"):
                repeat = max(repeat, args.repeat)  # max-rate runs vary: medians of several
            twin = (
                relay + BASE
                if BASELINE is not None
                and relay.startswith("veylor")
                and "scraped" not in relay
                and "tui" not in relay
                else None
            )  # (a baseline from before the admin endpoint could not be scraped)
            tries: dict[str, list[Result]] = {relay: [], **({twin: []} if twin else {})}
            for _ in range(repeat):  # the two alternate, so that drift hits both alike
                for who in tries:
                    tries[who].append(run_one(name, who, **kw))
            for made in tries.values():
                ok = sorted((t for t in made if not t.note), key=lambda t: t.deliveries_per_s)
                r = ok[len(ok) // 2] if ok else made[0]  # the median run
                if repeat > 1 and ok:
                    r.note = ""
                    r.extra["runs_deliveries_per_s"] = [round(t.deliveries_per_s) for t in made]
                print(fmt(r), flush=True)
                out.append(r)
        results.extend(out)
        sections.append((title, out))
        return out

    sizes = (100, 1000) if args.quick else (10, 100, 1000, 2000)
    for n in sizes:
        rl = [r for r in relays if not (r == "gather" and n >= 2000)]
        scenario(
            f"ws_max_{n}",
            f"WebSocket, max rate, {n} clients",
            [(r, dict(clients=n, rate=0, seconds=seconds)) for r in rl],
        )
    unix_relays = [r for r in relays if r != "node-ws"]
    for n in (100, 1000):
        scenario(
            f"unix_max_{n}",
            f"Unix (length-prefixed), max rate, {n} clients",
            [(r, dict(clients=n, rate=0, seconds=seconds, unix=True)) for r in unix_relays],
        )
    scenario(
        "unix_fixed_1000",
        "Unix (length-prefixed), 5000 msg/s, 1000 clients",
        [
            (r, dict(clients=1000, rate=5000, seconds=seconds, unix=True))
            for r in unix_relays
            if r != "gather"
        ],
    )
    for n in (100, 1000):
        scenario(
            f"fixed500_{n}",
            f"WebSocket, 500 msg/s, {n} clients",
            [(r, dict(clients=n, rate=500, seconds=seconds)) for r in relays],
        )
    capacity_rates = (1000, 2000, 3000, 5000, 7000) if not args.quick else (2000, 5000)
    scenario(
        "capacity_1000",
        "Sustained capacity, 1000 WebSocket clients (fixed rates)",
        [
            (r, dict(clients=1000, rate=rate, seconds=seconds))
            for r in ("veylor", "limit")
            for rate in capacity_rates
        ],
    )
    reps = 1 if args.quick else 3  # two max-rate runs compared: the median of three each
    scenario(
        "filter_100",
        f"JSON-filtered route vs unfiltered, 100 clients, max rate (median of {reps})",
        [
            ("veylor", dict(clients=100, rate=0, seconds=seconds, repeat=reps)),
            ("veylor-filtered", dict(clients=100, rate=0, seconds=seconds, filtered=True, repeat=reps)),
        ],
    )
    scenario(
        "scrape_1000",
        f"/metrics scraped once a second vs not, 1000 clients, max rate (median of {reps})",
        [
            ("veylor", dict(clients=1000, rate=0, seconds=seconds, repeat=reps)),
            ("veylor-scraped", dict(clients=1000, rate=0, seconds=seconds, repeat=reps)),
        ],
    )
    scenario(
        "tui_1000",
        f"With the TUI on (in-process, 2 Hz) vs off, 1000 clients, max rate (median of {reps})",
        [
            ("veylor", dict(clients=1000, rate=0, seconds=seconds, repeat=reps)),
            ("veylor-tui", dict(clients=1000, rate=0, seconds=seconds, repeat=reps)),
        ],
    )
    scenario(
        "tui_fixed_100",
        "With the TUI on vs off, 500 msg/s, 100 clients",
        [(r, dict(clients=100, rate=500, seconds=seconds)) for r in ("veylor", "veylor-tui")],
    )
    scenario(
        "stalled_1000",
        f"One stalled client among 1000: at 5000 msg/s (near capacity), and at max rate (median of {reps})",
        [
            ("veylor", dict(clients=1000, rate=5000, seconds=seconds)),
            ("veylor", dict(clients=1000, rate=5000, seconds=seconds, stall=1)),
            ("veylor", dict(clients=1000, rate=0, seconds=seconds, repeat=reps)),
            ("veylor", dict(clients=1000, rate=0, seconds=seconds, stall=1, repeat=reps)),
        ],
    )
    idle_n = 2000 if args.quick else 10000
    scenario(
        "idle",
        f"Memory: {idle_n} idle clients",
        [(r, dict(clients=idle_n, rate=0, seconds=0, idle=True)) for r in ("veylor", "bare")],
    )

    verdicts = targets(results)
    print("\n## Targets (ratios within this run)\n")
    for line in verdicts:
        print(line)
    compared = before_after(results) if BASELINE is not None else []
    if compared:
        print(f"\n## Before ({BASELINE}) and after, in this run\n")
        print("\n".join(compared))
    meta = machine()
    write_json("latest.json", {"machine": meta, "results": [asdict(r) for r in results], "targets": verdicts})
    if args.markdown:
        md = [
            f"Machine: {meta['cpu']}, {meta['cpus']} CPUs, {meta['kernel']}; Python {meta['python']}, "
            f"websockets {meta['websockets']}, uvloop {meta['uvloop']}; {seconds:g} s per run.",
            "",
        ]
        for title, rs in sections:
            md += [f"### {title}", "", HEAD, *map(fmt, rs), ""]
        md += ["### Targets", "", *verdicts]
        if compared:
            md += ["", "### Before and after, in this run", "", *compared]
        Path(args.markdown).write_text("\n".join(md) + "\n")
    return 0


def _pick(results: list[Result], scenario: str, relay: str, **kw) -> Result | None:
    for r in results:
        if (
            r.scenario == scenario
            and r.relay == relay
            and all(getattr(r, k) == v for k, v in kw.items())
            and not r.note
        ):
            return r
    return None


def targets(results: list[Result]) -> list[str]:
    out = []

    def check(ok: bool, text: str) -> None:
        out.append(verdict(ok, text))

    v, b, lim = (_pick(results, "ws_max_1000", r) for r in ("veylor", "broadcast", "limit"))
    if v and b and lim:
        check(
            v.deliveries_per_s >= 10 * b.deliveries_per_s
            and v.deliveries_per_s >= 0.5 * lim.deliveries_per_s
            and v.loss == 0
            and v.reorders == 0
            and v.gaps == 0,
            f"max rate, 1000 WebSocket clients: Veylor {v.deliveries_per_s / 1e6:.2f}M deliveries/s = "
            f"{v.deliveries_per_s / max(b.deliveries_per_s, 1):.1f}x broadcast (>= 10x), "
            f"{v.deliveries_per_s / max(lim.deliveries_per_s, 1):.0%} of the limit proxy (>= 50%), loss {v.loss}, reorders {v.reorders}",
        )
    caps = [r for r in results if r.scenario == "capacity_1000" and r.relay == "veylor" and not r.note]
    if caps:
        ok_rates = [r.rate for r in caps if r.p99_ms < 50 and r.loss == 0]
        best = max(ok_rates, default=0)
        check(
            best >= 2000,
            f"sustained capacity, 1000 clients: {best:g} msg/s with p99 < 50 ms and no loss (>= 2000)",
        )
    v, lim = _pick(results, "fixed500_100", "veylor"), _pick(results, "fixed500_100", "limit")
    if v and lim:
        check(
            v.p99_ms <= 2 and v.p99_ms <= 1.5 * max(lim.p99_ms, 0.001),
            f"500 msg/s, 100 clients: p99 {v.p99_ms:.2f} ms (<= 2 ms), limit proxy {lim.p99_ms:.2f} ms (<= 1.5x)",
        )
    v, b = _pick(results, "unix_max_1000", "veylor"), _pick(results, "unix_max_1000", "broadcast")
    if v and b:
        check(
            v.deliveries_per_s >= 5 * b.deliveries_per_s,
            f"Unix max rate, 1000 clients: {v.deliveries_per_s / max(b.deliveries_per_s, 1):.1f}x the broadcast-style relay (>= 5x); "
            f"{v.closed} clients fell 4 MiB behind and were closed (slow_client: disconnect)",
        )
    v, t = _pick(results, "tui_1000", "veylor"), _pick(results, "tui_1000", "veylor-tui")
    if v and t:
        check(
            t.deliveries_per_s >= 0.9 * v.deliveries_per_s,
            f"TUI on, 1000 clients: {t.deliveries_per_s / max(v.deliveries_per_s, 1):.0%} of the throughput "
            "without it (>= 90%)",
        )
    t = _pick(results, "tui_fixed_100", "veylor-tui")
    if t:
        check(t.p99_ms < 5.0, f"TUI on, 500 msg/s to 100 clients: p99 {t.p99_ms:.1f} ms (< 5 ms)")
    v, sc = _pick(results, "scrape_1000", "veylor"), _pick(results, "scrape_1000", "veylor-scraped")
    if v and sc:
        check(
            sc.deliveries_per_s >= 0.98 * v.deliveries_per_s,
            f"/metrics scraped once a second, 1000 clients: {sc.deliveries_per_s / max(v.deliveries_per_s, 1):.1%} "
            "of the throughput without scrapes (>= 98%)",
        )
    v, f = _pick(results, "filter_100", "veylor"), _pick(results, "filter_100", "veylor-filtered")
    if v and f:
        check(
            f.deliveries_per_s >= 0.5 * v.deliveries_per_s,
            f"JSON-filtered route, 100 clients: {f.deliveries_per_s / max(v.deliveries_per_s, 1):.0%} of unfiltered (>= 50%)",
        )
    stalled = [r for r in results if r.scenario == "stalled_1000" and r.relay == "veylor" and not r.note]
    for rate in (5000, 0):
        pair = [r for r in stalled if r.rate == rate]
        if len(pair) == 2:
            plain, stalled_run = pair
            ratio = stalled_run.deliveries_per_s / max(plain.deliveries_per_s, 1)
            where = "max rate" if rate == 0 else f"{rate} msg/s"
            check(
                ratio >= 0.9 and stalled_run.loss == 0,
                f"one stalled client among 1000 at {where}: the others at {ratio:.0%} of the run without it "
                f"(>= 90%), undelivered {stalled_run.loss}, p99 {stalled_run.p99_ms:.1f} vs {plain.p99_ms:.1f} ms, "
                f"RSS {stalled_run.rss_mib:.0f} vs {plain.rss_mib:.0f} MiB",
            )
    v, bare = _pick(results, "idle", "veylor"), _pick(results, "idle", "bare")
    if v:
        ref = f", bare websockets {bare.rss_per_client_kib:.1f} KiB" if bare else ""
        check(
            v.rss_per_client_kib <= 12,
            f"idle clients: {v.rss_per_client_kib:.1f} KiB RSS per client (<= 12){ref}",
        )
    return out


def before_after(results: list[Result]) -> list[str]:
    """A table of each Veylor run against its baseline twin: throughput for max-rate
    runs, p99 latency for fixed-rate ones, RSS per client for idle ones; a change
    worse than 5% is marked."""
    rows = [
        "| scenario | relay | clients | rate | measure | before | after | change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for new in results:
        if not new.relay.startswith("veylor") or new.relay.endswith(BASE) or new.note:
            continue
        old = next(
            (
                r
                for r in results
                if r.relay == new.relay + BASE
                and (r.scenario, r.clients, r.rate) == (new.scenario, new.clients, new.rate)
                and r.stall == new.stall
                and not r.note
            ),
            None,
        )
        if old is None:
            continue
        if new.scenario == "idle":
            measure, a, b, higher_better = (
                "KiB RSS per client",
                old.rss_per_client_kib,
                new.rss_per_client_kib,
                False,
            )
        elif new.rate > 0:
            measure, a, b, higher_better = "p99 ms", old.p99_ms, new.p99_ms, False
        else:
            measure, a, b, higher_better = "deliveries/s", old.deliveries_per_s, new.deliveries_per_s, True
        change = (b - a) / a if a else 0.0
        worse = -change if higher_better else change
        flag = " (worse by more than 5%)" if worse > 0.05 else ""
        rate = "max" if new.rate <= 0 else f"{new.rate:g}/s"
        rows.append(
            f"| {new.scenario} | {new.relay} | {new.clients} | {rate} | {measure} | {a:,.1f} | {b:,.1f} | "
            f"{change:+.1%}{flag} |"
        )
    return rows if len(rows) > 2 else []


if __name__ == "__main__":
    sys.exit(main())
