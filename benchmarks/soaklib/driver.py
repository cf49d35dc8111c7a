"""The driver: a soak run, phase by phase (launch, warm-up, the run, the settle and the
end), and the command's report."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import cpu_seconds, free_port, pin, raise_nofile, rss_mib
from harness.process import Process

from soaklib.checkpoints import Checkpoints
from soaklib.context import PY, ROOT, Context, Veylor, wait_for
from soaklib.reloads import Reloads, write_config
from soaklib.stalls import Stalls
from soaklib.upstream import Upstream
from soaklib.verdict import analyse, human, slope


@dataclass
class Parts:
    """What a run is made of once Veylor runs: Veylor, the staying clients and the churn
    (processes), and the activities beside the feed."""

    veylor: Veylor
    clients: Process
    churn: Process
    reloads: Reloads
    stalls: Stalls
    checkpoints: Checkpoints


class Soak:
    """One soak run: the upstream, Veylor, the staying clients and the churn, and the
    activities that run beside the feed (reloads, stalled clients, upstream restarts,
    checkpoints), phase by phase."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.ctx = Context(args)
        self.upstream = Upstream(self.ctx)
        self.parts: Parts | None = None  # (once Veylor runs)

    def run(self) -> dict:
        """The whole run; the report."""
        raise_nofile()
        figures: dict[str, Any] = {}  # what the phases measured, for the end's figures
        p = self.parts = self._launch(figures)
        self._warm_up(p, figures)
        self._activities(p, figures)
        m = self._end(p, figures)
        return analyse(self.ctx, self.upstream, p.veylor, p.reloads, p.stalls, p.checkpoints, m)

    def _launch(self, figures: dict[str, Any]) -> Parts:
        """Start the upstream, Veylor on it, the staying clients (connected) and the churn
        (paused)."""
        ctx, a = self.ctx, self.ctx.args
        up_port = self.upstream.start(0, 1)
        ws_port, admin_port = free_port(), free_port()
        unix_path = str(ctx.dir / "feed.sock")
        config = write_config(ctx.dir, up_port, ws_port, unix_path, admin_port)
        tree = Path(a.veylor_dir).resolve() if a.veylor_dir else ROOT
        process = ctx.spawn([PY, "-m", "veylor", "-c", str(config), "--no-watch"], log="veylor.log", cwd=tree)
        veylor = Veylor(process, admin_port, ws_port, unix_path)
        self.upstream.process.expect("relay connected", 30)
        wait_for("the admin endpoint", veylor.healthy, 30)
        view = veylor.graph()
        generation = view["config"]["generation"]
        figures["rss_launch"] = rss_mib(veylor.pid)
        ctx.log(f"Veylor {view['version']} pid {veylor.pid} up, RSS {figures['rss_launch']:.1f} MiB")
        if a.pin:
            pin(veylor.pid, {0})

        clients = ctx.role(
            "clients",
            "--port",
            str(ws_port),
            "--path",
            unix_path,
            "--ws",
            str(a.ws_clients),
            "--unix",
            str(a.unix_clients),
            "--batch-ms",
            str(a.batch_ms),
        )
        ready = clients.expect("", 120)
        while not (ready.startswith("ready") or ready.startswith("failed")):
            ready = clients.expect("", 120)
        if not ready.startswith("ready"):
            raise RuntimeError(f"staying clients: {ready}")
        churn = ctx.role(
            "churn",
            "--port",
            str(ws_port),
            "--path",
            unix_path,
            "--rate",
            str(a.churn_rate),
            "--abort-share",
            str(a.abort_share),
            "--unix-share",
            str(a.unix_share),
            "--seed",
            str(a.seed),
            "--paused",
        )
        if a.pin:
            for child in (clients, churn, self.upstream.process):
                pin(child.pid, {1})
        ctx.log(f"{ready}; warming up")
        stalls = Stalls(ctx, veylor)
        return Parts(
            veylor=veylor,
            clients=clients,
            churn=churn,
            reloads=Reloads(ctx, veylor, generation),
            stalls=stalls,
            checkpoints=Checkpoints(ctx, veylor, self.upstream, stalls, clients, churn),
        )

    def _warm_up(self, p: Parts, figures: dict[str, Any]) -> None:
        """Each activity once (both configurations, both triggers, churn, a stalled client
        until Veylor drops it, /graph), so that the start figures are those of a process
        that has done everything once: the first stalled client raises the allocator's
        high-water mark by a few MiB that glibc keeps (Veylor trims only after laggards
        held 32 MiB) and later ones reuse; that is not growth over the run. Then the start
        figures, churn paused."""
        ctx, a = self.ctx, self.ctx.args
        figures["rss_connected"] = rss_mib(p.veylor.pid)
        p.reloads.reload("B", "POST")
        p.reloads.reload("A", "SIGHUP")
        p.churn.send("resume")
        warm_from = time.monotonic()
        if a.stall_every > 0:
            p.stalls.start("ws", warmup=True)
        while time.monotonic() - warm_from < a.warmup or p.stalls.current is not None:
            p.stalls.watch()
            time.sleep(0.1)
        p.churn.ask("pause", "paused")
        time.sleep(2.0)
        figures["first"] = first = self.upstream.next_number()
        figures["start"] = start = p.checkpoints.take("start", resume=False)
        figures["start_rss"] = start_rss = statistics.median(p.veylor.rss_now(3))
        figures["start_fds"] = start_fds = p.veylor.stable_fds()
        figures["veylor_cpu0"] = cpu_seconds(p.veylor.pid)
        p.churn.send("resume")
        ctx.log(
            f"start: window from message {first}, RSS {start_rss:.1f} MiB, {start_fds} fds, {start['tasks']} tasks"
        )

    def _activities(self, p: Parts, figures: dict[str, Any]) -> None:
        """The run: ``--minutes`` of the feed with churn, each activity at its interval,
        and a sample of Veylor's memory and fds every second."""
        ctx, a = self.ctx, self.ctx.args
        duration = a.minutes * 60
        figures["t_run"] = t_run = time.monotonic()
        never = float("inf")  # an interval of 0: never
        schedule = {
            "reload": a.reload_every or never,
            "stall": a.stall_every / 2 or never,
            "restart": a.restart_every or never,
            "checkpoint": 60.0 - 15.0,
            "sample": 0.0,
        }
        stall_kinds = ["unix", "ws"]  # the warm-up stalled a WebSocket client
        trigger = ["POST", "SIGHUP"]
        n_reload = n_stall = 0
        while (elapsed := time.monotonic() - t_run) < duration:
            if elapsed >= schedule["sample"]:
                p.veylor.sample(ctx.elapsed())
                schedule["sample"] += 1.0
            if elapsed >= schedule["reload"]:
                p.reloads.reload("B" if p.reloads.config_now == "A" else "A", trigger[n_reload % 2])
                n_reload += 1
                schedule["reload"] += a.reload_every
            if elapsed >= schedule["stall"]:
                if p.stalls.current is None and elapsed < duration - 25:
                    p.stalls.start(stall_kinds[n_stall % 2])
                    n_stall += 1
                schedule["stall"] += a.stall_every
            if elapsed >= schedule["restart"]:
                if elapsed < duration - 20:
                    self.upstream.restart(p.veylor)
                schedule["restart"] += a.restart_every
            if elapsed >= schedule["checkpoint"]:
                if elapsed < duration - 10:
                    p.checkpoints.take(f"{elapsed:.0f}s")
                schedule["checkpoint"] += 60.0
            p.stalls.watch()
            if any(child.popen.poll() is not None for child in (p.churn, p.clients, p.veylor.process)):
                raise RuntimeError("a process of the run exited (see the logs)")
            time.sleep(0.05)
        figures["run_span"] = (t_run - ctx.t0, time.monotonic() - ctx.t0)

    def _end(self, p: Parts, figures: dict[str, Any]) -> dict[str, Any]:
        """After the run: churn stops, the last stalled client goes, then the settle and
        the end figures; then the feed stops, the staying clients report, and Veylor stops
        in order on SIGTERM (exit 0 within 5 s). What the verdict needs."""
        ctx, a, veylor = self.ctx, self.ctx.args, p.veylor
        p.churn.ask("pause", "paused")
        churn = json.loads(p.churn.ask("report", "{"))
        ctx.log("churn stopped")
        if p.stalls.current is not None:
            with contextlib.suppress(TimeoutError):
                wait_for(
                    "the last stalled client",
                    lambda: (p.stalls.watch(), p.stalls.current is None)[1],
                    45,
                    0.2,
                )
            p.stalls.watch(final=True)
        settle_from = time.monotonic()
        while time.monotonic() - settle_from < a.settle:
            veylor.sample(ctx.elapsed())
            time.sleep(1.0)
        end_rss_samples = veylor.rss_now(5)
        end_rss = statistics.median(end_rss_samples)
        end_fds = veylor.stable_fds(target=figures["start_fds"])
        end = p.checkpoints.take("end", resume=False)
        hwm = rss_mib(veylor.pid, "VmHWM:")
        veylor_cpu = cpu_seconds(veylor.pid) - figures["veylor_cpu0"]
        run_s = time.monotonic() - figures["t_run"]

        # Stop the feed; wait until the staying clients have read its last message.
        last = self.upstream.stop()
        with contextlib.suppress(TimeoutError):
            wait_for(
                "the clients to read the last message",
                lambda: json.loads(p.clients.ask("progress", "{"))["min_next"] > last,
                30,
                0.2,
            )
        view = veylor.graph()
        report = json.loads(p.clients.ask("report", "{", 60))
        p.clients.send("quit")
        code, stop_s = veylor.process.terminate(10)

        run_span = figures["run_span"]
        return {
            "first": figures["first"],
            "last": last,
            "report": report,
            "churn": churn,
            "view": view,
            "start": figures["start"],
            "end": end,
            "rss": {
                "launch": figures["rss_launch"],
                "connected": figures["rss_connected"],
                "start": figures["start_rss"],
                "peak": max(v for _, v in veylor.rss_samples),
                "hwm": hwm,
                "end": end_rss,
                "end_samples": end_rss_samples,
                "growth_mib_per_min": slope(
                    [(t, v) for t, v in veylor.rss_samples if run_span[0] <= t <= run_span[1]]
                ),
            },
            "fds": {
                "start": figures["start_fds"],
                "end": end_fds,
                "peak": max(v for _, v in veylor.fd_samples),
            },
            "tasks": {
                "start": figures["start"]["tasks"],
                "end": end["tasks"],
                "peak": max(v for _, v in p.checkpoints.tasks_samples),
            },
            "cpu": {"veylor_s": veylor_cpu, "run_s": run_s},
            "stop": {"code": code, "seconds": stop_s},
        }

    def cleanup(self) -> None:
        """Kill every process of the run; close the stalled client, if any."""
        self.ctx.kill_children()
        if self.parts is not None:
            self.parts.stalls.close()


def main(args: argparse.Namespace) -> int:
    """The driver's command: run, clean up, report (JSON or human); 1 if a check failed."""
    soak = Soak(args)
    keep = args.keep

    def stop(signum, frame) -> None:  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with SIGINT ignored (a background job)
    result: dict | None = None
    try:
        result = soak.run()
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        keep = True
        return 130
    except (OSError, RuntimeError, TimeoutError, ValueError, KeyError) as exc:
        keep = True
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "checks": soak.ctx.checks,
            "events": soak.ctx.events[-50:],
        }
        print(f"soak failed: {exc}", file=sys.stderr)
    finally:
        soak.cleanup()
        if result is not None and not result.get("ok"):
            keep = True
        if keep:
            print(f"logs kept in {soak.ctx.dir}", file=sys.stderr)
        else:
            shutil.rmtree(soak.ctx.dir, ignore_errors=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        print(json.dumps(result, indent=1))
    elif "error" in result:
        print("\n".join(result["events"]))
    else:
        print(human(result))
    return 0 if result.get("ok") else 1
