"""Scale-out over NATS against one machine, in one run: latency and delivery of a core
Veylor -> NATS cluster -> edge Veylors -> clients, next to one Veylor serving clients
directly, at the same rate and clients per Veylor.

    .venv/bin/python benchmarks/scaleout.py                      # 1,000 msg/s, 1,000 clients per edge, 10 s
    .venv/bin/python benchmarks/scaleout.py --rate 2000 --clients 500 --seconds 20
    .venv/bin/python benchmarks/scaleout.py --edges 1                    # the same work as one machine
    .venv/bin/python benchmarks/scaleout.py --stream --clients 100       # JetStream: acknowledged, replayed

Needs ``nats-server`` (``apt-get install nats-server``). Starts a NATS cluster of three
nodes on loopback ports, the benchmark upstream (benchmarks/upstream.py), a core Veylor
publishing to NATS node 1, two edge Veylors subscribed through nodes 2 and 3, and one
load client (benchmarks/loadclient.py) per edge with ``--clients`` connections. Latency
is from the upstream's send timestamp to the client's read (one clock: one machine).
Then the single-machine run: the same upstream, one Veylor, one load client.

CPUs as in benchmarks/run.py: the Veylor that serves the clients (each edge; the single
Veylor) on CPU 0, everything else on CPU 1 (the upstream, the load clients, and here the
core and the three NATS servers too). On a 2-core machine two edges share CPU 0: twice
the deliveries of the single run on the same core. Scale-out pays off with a machine per
edge; here it shows what the NATS hop costs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness import LOAD_CPU, RELAY_CPU, free_port
from harness.process import Process, wait_listening
from harness.report import log_path, write_json
from run import HERE, PY, run_one


def nats_cluster(workdir: Path, jetstream: bool = False) -> tuple[list[Process], list[int]]:
    server = shutil.which("nats-server")
    if server is None:
        sys.exit("nats-server is not installed (apt-get install nats-server)")
    ports = [free_port() for _ in range(3)]
    routes = [free_port() for _ in range(3)]
    procs = []
    for i in range(3):
        others = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(routes) if j != i)
        args = [server, "-a", "127.0.0.1", "-p", str(ports[i]), "-n", f"n{i + 1}", "--cluster_name", "bench"]
        args += ["--cluster", f"nats://127.0.0.1:{routes[i]}", "--routes", others]
        if jetstream:
            args += ["-js", "-sd", str(workdir / f"js{i + 1}")]
        procs.append(Process(args, cpus=LOAD_CPU, log=workdir / f"nats{i + 1}.log"))
    for port in ports:
        wait_listening(port, None)
    time.sleep(1.5)  # (the routes between the nodes form)
    return procs, ports


def veylor(workdir: Path, name: str, config: str, cpus: set[int]) -> Process:
    path = workdir / f"{name}.yaml"
    path.write_text(config)
    return Process(  # (its log kept: for when a number looks wrong)
        [PY, "-m", "veylor", "-c", str(path), "--no-watch"],
        cpus=cpus,
        cwd=HERE,
        log=log_path(f"scaleout-{name}.log"),
    )


def _source_view(admin: int) -> dict:
    """An edge's NATS source as its /graph shows it (what it counted missed)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/graph?clients=", timeout=10) as r:
        return json.loads(r.read())["sources"]["feed"]


def run_nats(clients: int, rate: float, seconds: float, edges: int = 2, stream: bool = False) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="veylor-scaleout-"))
    procs: list[Process] = []
    try:
        cluster, ports = nats_cluster(workdir, stream)
        if stream:
            time.sleep(5)  # (JetStream's meta leader is elected)
        core_js = ", stream: BENCH, replicas: 3" if stream else ""
        edge_js = ", stream: BENCH" if stream else ""
        procs += cluster
        upstream = Process([PY, str(HERE / "upstream.py")], cpus=LOAD_CPU, stdin=True, read="stdout")
        procs.append(upstream)
        up_port = int(upstream.expect("listening").split()[1])
        core = f"""
sources:
  feed: {{url: "ws://127.0.0.1:{up_port}/"}}
endpoints:
  cluster: {{nats: {{servers: ["nats://127.0.0.1:{ports[0]}"], subject: bench.feed{core_js}}}, client_buffer: 64MiB}}
routes:
  out: {{from: feed, to: cluster}}
"""
        procs.append(veylor(workdir, "core", core, LOAD_CPU))
        upstream.expect("relay connected", 30)
        edge_ports: list[int] = []
        admins: list[int] = []
        for i, nats_port in enumerate(ports[1 : 1 + edges]):
            port = free_port()
            edge_ports.append(port)
            admin = free_port()
            admins.append(admin)
            edge = f"""
admin: {{listen: "127.0.0.1:{admin}"}}
sources:
  feed: {{nats: {{servers: ["nats://127.0.0.1:{nats_port}"], subject: bench.feed{edge_js}}}}}
endpoints:
  out: {{websocket: {{host: 127.0.0.1, port: {port}}}, max_clients: 100000}}
routes:
  all: {{from: feed, to: out}}
"""
            procs.append(veylor(workdir, f"edge{i + 1}", edge, RELAY_CPU))
        for port in edge_ports:
            wait_listening(port, None)
        loads = []
        for port in edge_ports:
            load = Process(
                [PY, str(HERE / "loadclient.py"), "--url", f"ws://127.0.0.1:{port}/", "-n", str(clients)],
                cpus=LOAD_CPU,
                stdin=True,
                read="stdout",
            )
            procs.append(load)
            loads.append(load)
        for load in loads:
            load.expect("ready", 120)
        time.sleep(1.0)  # (the edges' subscriptions reach every node)
        upstream.send(f"go 2 {rate}")  # warm-up
        upstream.expect("{", 60)
        time.sleep(1.0)
        upstream.send("seq")
        first = int(upstream.expect("seq").split()[1])
        for load in loads:
            load.send(f"reset {first} {2**62}")
            load.expect("ok")
        upstream.send(f"go {seconds} {rate}")
        went = json.loads(upstream.expect("{", seconds + 60))
        for load in loads:
            load.send(f"reset-window {went['first']} {went['last']}")
        expected = went["sent"] * clients
        reports = []
        for load in loads:
            report: dict = {}
            for _ in range(100):
                time.sleep(0.1)
                load.send("report")
                report = json.loads(load.expect("{"))
                if report["delivered"] >= expected:
                    break
            reports.append(report)
        sources = [_source_view(admin) for admin in admins]
        return {
            "sent": went["sent"],
            "expected_per_edge": expected,
            "edges": [
                {
                    "delivered": r["delivered"],
                    "gaps": r["gaps"],
                    "reorders": r["reorders"],
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "source": {
                        k: src.get(k)
                        for k in ("messages_in", "gaps", "out_of_order", "duplicates", "position")
                    },
                }
                for r, src in zip(reports, sources, strict=True)
            ],
        }
    finally:
        for p in reversed(procs):
            p.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="upstream messages a second")
    parser.add_argument(
        "--clients", type=int, default=1000, help="clients per edge (and of the single Veylor)"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--stream", action="store_true", help="JetStream: a 3-replica stream, replayed")
    parser.add_argument(
        "--edges", type=int, default=2, choices=(1, 2), help="edge Veylors, each with --clients"
    )
    args = parser.parse_args()
    print(
        f"scale-out: {args.rate:g} msg/s, {args.clients} clients per Veylor, {args.edges} edges, "
        f"{args.seconds:g} s",
        flush=True,
    )
    nats = run_nats(args.clients, args.rate, args.seconds, args.edges, args.stream)
    single = run_one("scaleout-single", "veylor", args.clients, args.rate, args.seconds)
    print("| path | delivered / expected | lost | reordered | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i, e in enumerate(nats["edges"], 1):
        print(f"edge {i}'s source: {e['source']}", file=sys.stderr)
        print(
            f"| upstream -> core -> NATS -> edge {i} -> clients | {e['delivered']:,} / {nats['expected_per_edge']:,} "
            f"| {nats['expected_per_edge'] - e['delivered']:,} | {e['reorders']} | {e['p50_ms']:.1f} | {e['p99_ms']:.1f} |"
        )
    print(
        f"| upstream -> Veylor -> clients (one machine) | {single.delivered:,} / {single.expected:,} "
        f"| {single.loss:,} | {single.reorders} | {single.p50_ms:.1f} | {single.p99_ms:.1f} |"
    )
    write_json("scaleout.json", {"args": vars(args), "nats": nats, "single": single.__dict__})
    return 0


if __name__ == "__main__":
    sys.exit(main())
