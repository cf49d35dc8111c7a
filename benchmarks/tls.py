"""The fan-out over ``wss://`` next to ``ws://``, in one run (issue 27): what TLS costs.

    .venv/bin/python benchmarks/tls.py [--seconds 8]

TLS cannot share a frame: each client's bytes are encrypted for it alone, so every
delivery costs an encryption on top of the write. For N = 100 and N = 1,000 clients,
ws:// then wss:// (a certificate made for the run, TLS 1.3): the max rate (the upstream
sends as fast as Veylor reads; deliveries counted at the clients) and the p99 latency
at a fixed 500 msg/s. The load clients decrypt on the other core.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import LOAD_CPU, free_port
from harness.stage import Stage

HERE = Path(__file__).resolve().parent
PY = sys.executable
FIXED = 500  # msg/s for the latency runs

CONFIG = """
limits: {{buffered: 4GiB}}
sources: {{feed: {{url: "ws://127.0.0.1:{upstream}/"}}}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {port}{tls}}}, client_buffer: 8MiB, slow_client: drop}}
routes: {{all: {{from: feed, to: ws}}}}
"""


def certificate(where: Path) -> str:
    """A self-signed certificate for 127.0.0.1 (the load clients do not check it)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(where / "key.pem"), "-out", str(where / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return f', tls: {{cert: "{where / "cert.pem"}", key: "{where / "key.pem"}"}}'


def run(scheme: str, clients: int, seconds: float, rate: float) -> dict[str, Any]:
    out: dict[str, Any] = {"scheme": scheme, "clients": clients, "rate": rate}
    stage = Stage("veylor-tls-")
    try:
        upstream, up_port = stage.upstream()
        port = free_port()
        tls = certificate(stage.dir) if scheme == "wss" else ""
        relay = stage.veylor(CONFIG.format(upstream=up_port, port=port, tls=tls), upstream, port)
        load = stage.start(
            [PY, str(HERE / "loadclient.py"), "--url", f"{scheme}://127.0.0.1:{port}/", "-n", str(clients)],
            cpus=LOAD_CPU, stdin=True, read="stdout",
        )  # fmt: skip
        load.expect("ready", 180)
        upstream.send("go 1 100")  # warm up
        upstream.expect("{", 60)
        time.sleep(0.5)
        upstream.send("seq")
        first = int(upstream.expect("seq").split()[1])
        load.send(f"reset {first} {2**62}")
        load.expect("ok")
        cpu0 = relay.cpu()
        upstream.send(f"go {seconds} {rate}")
        went = json.loads(upstream.expect("{", seconds + 60))
        load.send(f"reset-window {went['first']} {went['last']}")
        time.sleep(1.0)  # (what is in flight)
        load.send("report")
        report = json.loads(load.expect("{"))
        cpu1 = relay.cpu()
        span = max(went["seconds"], 1e-9)
        out.update(
            sent=went["sent"],
            delivered=report["delivered"],
            deliveries_s=report["delivered"] / span,
            p50_ms=report["p50_ms"],
            p99_ms=report["p99_ms"],
            cpu_pct=100 * ((cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1])) / (span + 1.0),
            open=report["open"],
        )
        return out
    except (TimeoutError, RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        out["note"] = f"failed: {exc}"
        return out
    finally:
        stage.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", default="100,1000")
    args = parser.parse_args()
    print(
        "| clients | scheme | max deliveries/s | Veylor CPU | p50 ms at 500 msg/s | p99 ms at 500 msg/s | open |"
    )
    print("|---|---|---|---|---|---|---|")
    results = {}
    for n in map(int, args.clients.split(",")):
        for scheme in ("ws", "wss"):
            top = run(scheme, n, args.seconds, 0)
            fixed = run(scheme, n, args.seconds, FIXED)
            results[n, scheme] = (top, fixed)
            print(
                f"| {n:,} | {scheme} | {top.get('deliveries_s', 0):,.0f} | {top.get('cpu_pct', 0):.0f}% | "
                f"{fixed.get('p50_ms', 0):.1f} | {fixed.get('p99_ms', 0):.1f} | {fixed.get('open', 0)} |"
                + "".join(f" {r['note']}" for r in (top, fixed) if "note" in r),
                flush=True,
            )
    print()
    for n in map(int, args.clients.split(",")):
        ws, wss = results[n, "ws"][0], results[n, "wss"][0]
        ratio = wss.get("deliveries_s", 0) / max(ws.get("deliveries_s", 0), 1e-9)
        print(f"- {n:,} clients: wss:// made {ratio:.2f}x the deliveries a second of ws://")
    return 0


if __name__ == "__main__":
    sys.exit(main())
