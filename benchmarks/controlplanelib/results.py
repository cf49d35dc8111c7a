"""What a control-plane run found (the live part, the cold check), its targets, and its
Markdown report."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from harness.report import percentile, verdict

# Targets of the control-plane work.
TARGET_GAP_MS = 20.0
TARGET_RELOAD_P50_MS = 100.0
TARGET_CHECK_S = 1.0


@dataclass
class CheckResult:
    runs_s: list[float] = field(default_factory=list)
    median_s: float = float("nan")
    returncode: int | None = None
    output_tail: str = ""


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


def targets(live: LiveResult, check: CheckResult, edits: int) -> list[str]:
    """PASS/FAIL lines against the control-plane targets."""
    out: list[str] = []

    def check_(ok: bool, text: str) -> None:
        out.append(verdict(ok, text))

    e = live.editing
    gap = e.get("max_gap_ms", float("nan"))
    seq = live.sequence
    check_(
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
    check_(
        len(lat) == edits and p50 < TARGET_RELOAD_P50_MS,
        f"one-file reload: write -> applied p50 {p50:.0f} ms (< {TARGET_RELOAD_P50_MS:g} ms), "
        f"max {max(lat, default=float('nan')):.0f} ms; Veylor's 'applied in' p50 "
        f"{percentile(own, 50):.0f} ms, max {max(own, default=float('nan')):.0f} ms; "
        f"{len(lat)}/{edits} edits applied",
    )
    check_(
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
