"""Latest-value delivery under load (issue 26), each scenario against its own baseline in
the same run.

    .venv/bin/python benchmarks/latest.py [--seconds 12] [--only snapshot,conflate]

- **snapshot**: 1,000 clients receive 1,000 msg/s over 10,000 keys of 200 bytes from a
  route with ``snapshot: {by: s}``. Once with no joiner, once with 100 clients joining
  at once in the middle of the run (``joiners.py``): each joiner's snapshot must be
  complete and consistent (every key, its latest value, no gap to live), and the
  others' p99 latency must stay within 20 ms of the run without joiners.
- **conflate**: the upstream sends 20,000 msg/s over 1,000 keys to 1,000 clients, with
  ``conflate: {by: s, interval: 250ms}`` and without: each client gets at most 4,000
  msg/s, a delivered message is at most interval + 50 ms old (p99 of the latency
  samples, which time a message from the upstream to the client), and Veylor's CPU is
  well below the unconflated run's.
- **catchup**: 100 clients read 10,000 msg/s over 1,000 keys; on another endpoint one
  client (``staller.py``) stops reading for 10 s, then reads again. With
  ``slow_client: conflate`` Veylor holds at most keys x size for it (beside its
  ``client_buffer``), it has the latest value of every key within 1 s of reading again,
  and the 100 others lose nothing; against ``slow_client: drop`` in the same run.
- **resume**: 100 clients read 5,000 msg/s from a route with ``resume: {by: seq}``; a
  third of the way in they all drop for 2 s and come back with ``?since=`` the last
  number they read (``loadclient.py``'s ``blip``): each gets every message in order,
  no gap, no duplicate; against a run where nobody drops.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import LOAD_CPU, free_port
from harness.stage import Stage

HERE = Path(__file__).resolve().parent
PY = sys.executable
RELAY_LOG = Path(tempfile.gettempdir()) / "veylor-latest-relay.log"  # the last run's Veylor log

CONFIG = """
limits: {{buffered: 2GiB}}
sources: {{feed: {{url: "ws://127.0.0.1:{upstream}/"}}}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}}}, client_buffer: 8MiB}}}}
routes: {{all: {{from: feed, to: ws{route}}}}}
"""


CATCHUP_CONFIG = """
limits: {{buffered: 2GiB}}
admin: {{listen: "127.0.0.1:{admin}"}}
sources: {{feed: {{url: "ws://127.0.0.1:{upstream}/"}}}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {port}}}, client_buffer: 8MiB}}
  slow: {{websocket: {{host: 127.0.0.1, port: {port}, path: /slow}}, client_buffer: 64KiB,
          slow_client: {policy}, stall_timeout: 60}}
routes:
  all: {{from: feed, to: ws}}
  slow: {{from: feed, to: slow, snapshot: {{by: s, max_keys: 1000}}}}
"""


def run(
    name: str, *, keys: int, clients: int, rate: float, seconds: float, route: str, joiners: int = 0,
    sparse: bool = False, blip: int = 0, staller: str = "",
) -> dict[str, Any]:  # fmt: skip
    """One run: Veylor with ``route`` (YAML after ``to: ws``), its upstream, ``clients``
    load clients; ``joiners`` clients join at once a third of the way in; ``blip``
    of the load clients drop a third of the way in and come back 2 s later with
    ``?since=``; with ``staller`` (a slow_client policy), another endpoint has one
    client that stops reading for 10 s, a third of the way in, then reads again."""
    out: dict[str, Any] = {"name": name, "clients": clients, "rate": rate, "keys": keys, "joiners": joiners}
    stage = Stage("veylor-latest-")
    try:
        upstream, up_port = stage.upstream("--keys", str(keys))
        port, admin = free_port(), free_port()
        template = CATCHUP_CONFIG if staller else CONFIG
        config = template.format(upstream=up_port, port=port, route=route, admin=admin, policy=staller)
        relay = stage.veylor(config, upstream, port, log=RELAY_LOG)
        load = stage.start(
            [PY, str(HERE / "loadclient.py"), "--url", f"ws://127.0.0.1:{port}/", "-n", str(clients)]
            + (["--sparse"] if sparse else []),
            cpus=LOAD_CPU,
            stdin=True,
            read="stdout",
        )
        load.expect("ready", 120)
        if staller:
            lagging = stage.start(
                [PY, str(HERE / "staller.py"), "--url", f"ws://127.0.0.1:{port}/slow", "--keys", str(keys)],
                cpus=LOAD_CPU, stdin=True, read="stdout",
            )  # fmt: skip
            lagging.expect("ready", 30)
        # Every key once (what a joiner's snapshot holds), at 1,000 msg/s: a burst of 20,000
        # to 1,000 clients is 4 GB of deliveries, past limits.buffered before the load
        # clients read it, and some of them were closed before the measurement began.
        prefill = max(1.0, keys / 1000)
        upstream.send(f"go {prefill} 1000")
        upstream.expect("{", prefill + 60)
        time.sleep(1.0)
        upstream.send("seq")
        first = int(upstream.expect("seq").split()[1])
        load.send(f"reset {first} {2**62}")
        load.expect("ok")
        user0, sys0 = relay.cpu()
        upstream.send(f"go {seconds} {rate}")
        if joiners:
            time.sleep(seconds / 3)
            joining = stage.start(
                # (niced: the Python joiners parse 100 x 10,000 messages on the load clients' core,
                # which must keep reading the 1,000 others' 200 MB/s, or they fall behind)
                ["nice", "-n", "19", PY, str(HERE / "joiners.py"), "--url", f"ws://127.0.0.1:{port}/", "-n", str(joiners),
                 "--keys", str(keys), "--live", "2"],
                cpus=LOAD_CPU,
                read="stdout",
            )  # fmt: skip
            out["joined"] = json.loads(joining.expect("{", seconds + 120))
        if blip:
            time.sleep(seconds / 3)
            load.send(f"blip {blip} 2")
            load.expect("blipped", 60)
        if staller:
            time.sleep(10.0)  # stalled since it connected; the feed runs
            out["held"] = held_for_slow(admin)
            lagging.send(f"resume {out['held']['dispatched']}")  # (the feed numbers its messages from 1)
            out["caught"] = json.loads(lagging.expect("{", 60))
        went = json.loads(upstream.expect("{", seconds + 60))
        load.send(f"reset-window {went['first']} {went['last']}")
        time.sleep(1.0)  # (what is in flight, and what conflation still holds)
        load.send("report")
        report = json.loads(load.expect("{"))
        user1, sys1 = relay.cpu()
        span = max(went["seconds"], 1e-9)
        out.update(
            sent=went["sent"],
            delivered=report["delivered"],
            per_client_msgs_s=report["delivered"] / max(report["open"], 1) / span,
            p50_ms=report["p50_ms"],
            p99_ms=report["p99_ms"],
            open=report["open"],
            gaps=report["gaps"],
            reorders=report["reorders"],
            cpu_s=(user1 - user0) + (sys1 - sys0),
            cpu_pct=100 * ((user1 - user0) + (sys1 - sys0)) / span,
        )
        return out
    except (TimeoutError, RuntimeError) as exc:
        out["note"] = f"failed: {exc}"
        return out
    finally:
        stage.stop()


def held_for_slow(admin: int) -> dict[str, Any]:
    """What Veylor holds for the slow endpoint's client now (the admin endpoint's state
    view), and its counters."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/graph?clients=slow", timeout=10) as r:
        view = json.load(r)
    ep = view["endpoints"]["slow"]
    listed = ep.get("client_list") or [{}]
    return {
        "buffered": max(c.get("buffered", 0) for c in listed),
        "behind_bytes": ep.get("behind_bytes", 0),
        "behind_keys": ep.get("behind_keys", 0),
        "superseded": ep.get("superseded", 0),
        "dropped": ep.get("dropped", 0),
        "clients": ep.get("clients", 0),
        "dispatched": view["routes"]["slow"]["messages"],
    }


def snapshot(seconds: float) -> tuple[list[dict[str, Any]], list[str]]:
    route = ", snapshot: {by: s, max_keys: 10000, end: END}"
    common = dict(keys=10_000, clients=1000, rate=1000, seconds=seconds, route=route)
    calm = run("snapshot, no joiner", **common)
    busy = run("snapshot, 100 join at once", joiners=100, **common)
    joined = busy.get("joined", {})
    checks = [
        verdict(
            joined.get("complete") == 100 and joined.get("continuous") == 100,
            f"each of 100 joiners got a complete, consistent snapshot and live with no gap: "
            f"{joined.get('complete')} complete, {joined.get('continuous')} continuous "
            f"(the Python joiners, on the load's core, read their 100 x 2 MB in {joined.get('snapshot_s_max', 0):.1f} s)",
        ),
        verdict(
            busy.get("p99_ms", 1e9) <= calm.get("p99_ms", 0) + 20
            and busy.get("open", 0) == 1000
            and busy.get("delivered", 0) == busy.get("sent", -1) * 1000,
            f"the 1,000 others' p99: {busy.get('p99_ms', 0):.1f} ms with joiners, "
            f"{calm.get('p99_ms', 0):.1f} ms without (within 20 ms); {busy.get('open', 0):,} of them open, "
            f"{busy.get('delivered', 0):,} of {busy.get('sent', 0) * 1000:,} deliveries",
        ),
    ]
    return [calm, busy], checks


def conflate(seconds: float) -> tuple[list[dict[str, Any]], list[str]]:
    common = dict(keys=1000, clients=1000, rate=20_000, seconds=seconds)
    plain = run("20,000 msg/s, not conflated", route="", **common)
    merged = run(
        "20,000 msg/s, conflate 250ms", route=", conflate: {by: s, interval: 250ms}", sparse=True, **common
    )
    # The run without conflation asks 20,000 x 1,000 deliveries a second: more than one core
    # makes, so it delivers a share and drops slow clients; what all of it would cost is
    # its CPU over that share.
    asked = plain.get("sent", 0) * common["clients"]
    share = plain.get("delivered", 0) / asked if asked else 1.0
    needed = plain.get("cpu_pct", 0) / max(share, 1e-9)
    checks = [
        verdict(
            merged.get("per_client_msgs_s", 1e9) <= 4000,
            f"each client got {merged.get('per_client_msgs_s', 0):,.0f} msg/s conflated (at most 4,000)",
        ),
        verdict(
            merged.get("p99_ms", 1e9) <= 300,
            f"a conflated message's age at the client: p99 {merged.get('p99_ms', 0):.0f} ms (at most 300: "
            "interval + 50 ms)",
        ),
        verdict(
            merged.get("cpu_pct", 1e9) < 0.5 * needed,
            f"Veylor's CPU {merged.get('cpu_pct', 0):.0f}% conflated; not conflated {plain.get('cpu_pct', 0):.0f}% "
            f"for {share:.0%} of the deliveries asked (one core is not enough: "
            f"{needed:.0f}% for all of them at that cost; well below: under half of it)",
        ),
    ]
    return [plain, merged], checks


def catchup(seconds: float) -> tuple[list[dict[str, Any]], list[str]]:
    """A client stalls for 10 s while 1,000 keys update at 10,000 msg/s; 100 others read."""
    common = dict(keys=1000, clients=100, rate=10_000, seconds=max(seconds, 16.0), route="")
    dropping = run("slow_client: drop", staller="drop", **common)
    merged = run("slow_client: conflate", staller="conflate", **common)
    frame = 204  # bytes of one 200-byte message in a WebSocket frame
    # keys x size (kept for the clients behind), beside what was queued for it before it
    # fell behind: its client_buffer, and the pass that crossed it (at most FLUSH_AT, 64 KiB)
    bound = 1000 * frame
    queued_bound = 2 * 64 * 1024
    held = merged.get("held", {})
    caught = merged.get("caught", {})
    others = merged.get("sent", 0) * common["clients"]
    checks = [
        verdict(
            held.get("behind_bytes", 1e18) <= bound and held.get("buffered", 1e18) <= queued_bound,
            f"after 10 s behind, Veylor kept {held.get('behind_bytes', 0):,} bytes for it "
            f"({held.get('behind_keys', 0):,} keys; at most 1,000 keys x {frame} B = {bound:,}), beside "
            f"{held.get('buffered', 0):,} bytes queued before it fell behind (its 64 KiB client_buffer and "
            f"the pass that crossed it); {held.get('superseded', 0):,} messages replaced by later ones of their key",
        ),
        verdict(
            bool(caught.get("caught_up"))
            and caught.get("seconds", 1e9) <= 1.0
            and caught.get("backwards", 1) == 0,
            f"it had the latest value of every key {caught.get('seconds', 0) * 1000:.0f} ms after it read "
            f"again (at most 1 s), {caught.get('read_to_catch_up', 0):,} messages read to get there, "
            f"{caught.get('backwards', 0)} values older than one before; live again: "
            f"{caught.get('live_read', 0):,} messages in 2 s",
        ),
        verdict(
            merged.get("delivered", 0) == others and merged.get("open", 0) == common["clients"],
            f"the 100 others lost nothing: {merged.get('delivered', 0):,} of {others:,} deliveries, "
            f"{merged.get('open', 0)} open",
        ),
        f"INFO: with slow_client: drop instead, the client that read again had "
        f"{'every key' if dropping.get('caught', {}).get('caught_up') else 'not every key'} "
        f"after {dropping.get('caught', {}).get('seconds', 0):.2f} s "
        f"({dropping.get('held', {}).get('dropped', 0):,} messages dropped for it): this feed updates "
        "every key every 100 ms, so new values soon replace what it lost; a key that changes rarely "
        "stays stale with drop until its next update",
    ]
    return [dropping, merged], checks


def resume(seconds: float) -> tuple[list[dict[str, Any]], list[str]]:
    """At 5,000 msg/s, 100 clients drop for 2 s and come back with ?since=."""
    common = dict(keys=1000, clients=100, rate=5000, seconds=seconds, route=", resume: {by: seq}")
    calm = run("resume, nobody drops", **common)
    blips = run("resume, 100 drop for 2 s", blip=100, **common)
    want = blips.get("sent", 0) * common["clients"]
    checks = [
        verdict(
            blips.get("delivered", 0) == want and blips.get("gaps", 1) == 0 and blips.get("reorders", 1) == 0,
            f"each of the 100 got every message in order: {blips.get('delivered', 0):,} of {want:,} "
            f"deliveries, {blips.get('gaps', 0)} gaps, {blips.get('reorders', 0)} duplicates or reorders "
            f"(without drops: {calm.get('delivered', 0):,} of {calm.get('sent', 0) * common['clients']:,})",
        ),
        f"INFO: latency p99 {blips.get('p99_ms', 0):.1f} ms in the run with the drops, "
        f"{calm.get('p99_ms', 0):.1f} ms without (a read is timed by its last message: what a client "
        "missed arrives in a few large reads, timed as one)",
    ]
    return [calm, blips], checks


def verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'}: {text}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--only", default="snapshot,conflate,catchup,resume")
    args = parser.parse_args()
    failed = False
    for name, scenario in (
        ("snapshot", snapshot),
        ("conflate", conflate),
        ("catchup", catchup),
        ("resume", resume),
    ):
        if name not in args.only.split(","):
            continue
        runs, checks = scenario(args.seconds)
        print(f"\n## {name}\n")
        print("| run | delivered | msg/s per client | p50 ms | p99 ms | Veylor CPU | open |")
        print("|---|---|---|---|---|---|---|")
        for r in runs:
            print(
                f"| {r['name']} | {r.get('delivered', 0):,} | {r.get('per_client_msgs_s', 0):,.0f} | "
                f"{r.get('p50_ms', 0):.1f} | {r.get('p99_ms', 0):.1f} | {r.get('cpu_pct', 0):.0f}% | "
                f"{r.get('open', 0)} |" + (f" {r['note']}" if "note" in r else "")
            )
        print()
        for check in checks:
            print(f"- {check}")
            failed |= check.startswith("FAIL")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
