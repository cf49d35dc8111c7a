"""The verdict of a soak run: each check, the JSON report, and the human one."""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import time
from typing import Any

from soaklib.checkpoints import Checkpoints
from soaklib.context import Context, Veylor
from soaklib.reloads import Reloads
from soaklib.stalls import Stalls
from soaklib.upstream import Upstream

RSS_TOLERANCE = 0.10  # end RSS within 10% of the start


def analyse(
    ctx: Context,
    upstream: Upstream,
    veylor: Veylor,
    reloads: Reloads,
    stalls: Stalls,
    checkpoints: Checkpoints,
    m: dict[str, Any],
) -> dict:
    """Check what the run measured (``m``: the figures the driver took) and what its parts
    recorded; the report, as JSON would have it."""
    a = ctx.args
    first, last = m["first"], m["last"]
    # What each staying client must have: every number of every session inside the window.
    sessions = [[max(s, first), min(e, last)] for s, e in upstream.sessions if min(e, last) >= max(s, first)]
    per_client = sum(e - s + 1 for s, e in sessions)
    outages = {
        (upstream.sessions[i][1], upstream.sessions[i + 1][0]) for i in range(len(upstream.sessions) - 1)
    }
    clients = m["report"]["clients"]
    delivered = 0
    bad: list[str] = []
    disconnected = back = corrupt = foreign = unexpected_gaps = 0
    for i, c in enumerate(clients):
        runs = c["runs"]
        inside = [[max(s, first), min(e, last)] for s, e in runs if min(e, last) >= max(s, first)]
        delivered += sum(e - s + 1 for s, e in inside)
        gaps = [(x[1], y[0]) for x, y in itertools.pairwise(runs)]
        odd = [g for g in gaps if g not in outages]
        unexpected_gaps += len(odd)
        back += c["back"]
        corrupt += c["corrupt"]
        foreign += c["foreign"]
        problems = []
        if c["closed_at"] is not None or c["close_frame"]:
            disconnected += 1
            problems.append("disconnected")
        if inside != sessions:
            problems.append(f"received {inside[:4]}{'...' if len(inside) > 4 else ''}, expected {sessions}")
        if odd:
            problems.append(f"unannounced discontinuities {odd[:3]}")
        if c["back"] or c["corrupt"]:
            problems.append(f"{c['back']} duplicates or reorders, {c['corrupt']} corrupt frames")
        if problems and len(bad) < 10:
            bad.append(f"client {i} ({c['kind']}): " + "; ".join(problems))
    expected = per_client * len(clients)
    # Veylor's own count of what the last upstream sent it: all of it (no kill at the end).
    received = m["view"]["sources"]["feed"]["messages_in"] - upstream.messages_in
    sent = upstream.sessions[-1][1] - upstream.sessions[-1][0] + 1
    if received != sent:
        bad.append(f"Veylor received {received:,} messages from the last upstream, which sent {sent:,}")
    ctx.check(
        "messages",
        delivered == expected and not bad,
        f"{delivered:,} delivered of {expected:,} expected ({len(clients)} staying clients x {per_client:,} messages"
        f" in {len(sessions)} upstream sessions); {unexpected_gaps} unannounced gaps, {back} duplicates or"
        f" reorders, {corrupt} corrupt frames, {disconnected} staying clients disconnected"
        + (f"; {bad}" if bad else ""),
    )
    churn = m["churn"]
    churn_gaps = [(x, y, n) for x, y, n in churn["gaps"] if (x, y) not in outages]
    ctx.check(
        "churn clients",
        not churn["problems"] and not churn_gaps and not churn.get("back") and not churn.get("corrupt"),
        f"{churn['connections']:,} connections; problems {churn['problems'] or 'none'}; "
        f"{sum(n for *_, n in churn_gaps)} unannounced gaps; {churn.get('back', 0)} duplicates or reorders; "
        f"{churn.get('corrupt', 0)} corrupt frames; {churn.get('frames', 0):,} messages read",
    )
    rss = m["rss"]
    growth = (rss["end"] - rss["start"]) / rss["start"]
    ctx.check(
        "memory",
        growth <= RSS_TOLERANCE,
        f"RSS start {rss['start']:.1f} MiB, peak {rss['peak']:.1f}, end {rss['end']:.1f} ({growth:+.1%}; at most +{RSS_TOLERANCE:.0%})",
    )
    fds = m["fds"]
    ctx.check(
        "file descriptors",
        fds["end"] <= fds["start"],
        f"start {fds['start']}, peak {fds['peak']}, end {fds['end']}",
    )
    tasks = m["tasks"]
    ctx.check(
        "asyncio tasks",
        tasks["end"] <= tasks["start"],
        f"start {tasks['start']}, peak {tasks['peak']}, end {tasks['end']}",
    )
    bad_points = [c for c in checkpoints.entries if not c["ok"]]
    slow_release = [
        f"{c['where']}: {c['dead_sockets']} let go after {c['dead_released_after_s']} s"
        for c in checkpoints.entries
        if c["ok"] and c.get("dead_sockets")
    ]
    ctx.check(
        "client counts",
        not bad_points,
        f"{len(checkpoints.entries)} checkpoints (churn paused): Veylor's count = sockets it holds = clients"
        f" connected"
        + (f"; mismatches: {bad_points[:3]}" if bad_points else f" (end: {m['end']['reported']})")
        + (f"; dead sockets held for a while: {slow_release}" if slow_release else ""),
    )
    failed_reloads = [r for r in reloads.entries if not r["ok"]]
    ctx.check(
        "reloads",
        not failed_reloads and len(reloads.entries) >= 2,
        f"{len(reloads.entries)} reloads (POST /reload and SIGHUP in turn), each applied (generation + 1, route alt"
        f" as configured)" + (f"; failed: {failed_reloads[:3]}" if failed_reloads else ""),
    )
    stalled = stalls.entries
    bad_stalls = [s for s in stalled if s.get("error") or s["disconnected_after_s"] is None]
    endpoints = m["view"]["endpoints"]
    slow = sum(e.get("slow_disconnects", 0) + e.get("stalled_closed", 0) for e in endpoints.values())
    ctx.check(
        "stalled clients",
        not bad_stalls and slow == len(stalled),
        f"{len(stalled)} stalled, each disconnected by Veylor (stall_timeout or slow_client: disconnect) after "
        f"{', '.join(str(s['disconnected_after_s']) for s in stalled) or '-'} s; Veylor counted {slow} slow or "
        "stalled disconnects" + (f"; problems: {bad_stalls}" if bad_stalls else ""),
    )
    bad_restarts = [r for r in upstream.restarts if r.get("error")]
    ctx.check(
        "upstream restarts",
        not bad_restarts,
        f"{len(upstream.restarts)} restarts, outages {', '.join(str(r.get('outage_s')) for r in upstream.restarts) or '-'} s"
        + (f"; problems: {bad_restarts}" if bad_restarts else ""),
    )
    stop = m["stop"]
    ctx.check(
        "shutdown",
        stop["code"] == 0 and stop["seconds"] <= 5.5,
        f"SIGTERM: exit {stop['code']} in {stop['seconds']:.1f} s",
    )
    lags = [c["lag_messages"] for c in checkpoints.entries]
    cpu = m["cpu"]
    result = {
        "ok": all(c["ok"] for c in ctx.checks),
        "checks": ctx.checks,
        "settings": {
            k: getattr(a, k)
            for k in (
                "minutes",
                "rate",
                "ws_clients",
                "unix_clients",
                "churn_rate",
                "abort_share",
                "unix_share",
                "reload_every",
                "stall_every",
                "restart_every",
                "settle",
                "warmup",
                "batch_ms",
                "tick_ms",
                "pin",
                "seed",
            )
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        },
        "messages": {
            "window": [first, last],
            "sessions": sessions,
            "outages": sorted(outages),
            "staying_clients": len(clients),
            "per_client": per_client,
            "expected": expected,
            "delivered": delivered,
            "missing": expected - delivered,
            "unannounced_gaps": unexpected_gaps,
            "duplicates_or_reorders": back,
            "corrupt": corrupt,
            "foreign_frames": foreign,
            "pings_answered": sum(c["pings"] for c in clients),
            "staying_disconnected": disconnected,
            "problems": bad,
            "deliveries_per_s": delivered / cpu["run_s"],
            "max_lag_messages": max(lags) if lags else None,
        },
        "rss_mib": {
            k: (round(v, 3 if k.startswith("growth") else 1) if isinstance(v, float) else v)
            for k, v in rss.items()
        },
        "rss_end_vs_start": round(growth, 4),
        "rss_timeline": [[round(t), v] for t, v in veylor.rss_samples[::10]],
        "fds": fds,
        "tasks": tasks,
        "checkpoints": checkpoints.entries,
        "reloads": {
            "count": len(reloads.entries),
            "failed": len(failed_reloads),
            "ms_p50": statistics.median(r["ms"] for r in reloads.entries) if reloads.entries else None,
            "ms_max": max((r["ms"] for r in reloads.entries), default=None),
        },
        "stalls": stalled,
        "restarts": upstream.restarts,
        "churn": churn,
        "cpu": {
            "veylor_percent": round(100 * cpu["veylor_s"] / cpu["run_s"], 1),
            "clients_percent": round(100 * m["report"]["cpu_s"] / m["report"]["wall_s"], 1),
            "churn_percent": round(100 * churn["cpu_s"] / max(1.0, cpu["run_s"] + a.warmup), 1),
        },
        "veylor_endpoints": {
            n: {k: v for k, v in e.items() if isinstance(v, int) and v} for n, e in endpoints.items()
        },
        "veylor_source": {k: v for k, v in m["view"]["sources"]["feed"].items() if isinstance(v, int)},
        "run_seconds": round(cpu["run_s"], 1),
        "events": ctx.events[-200:],
    }
    return result


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute: how fast RSS
    grew during the run (information; a leak shows as a steady slope)."""
    if len(points) < 10:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return round(60 * sum((t - mt) * (v - mv) for t, v in points) / var, 3) if var else None


def human(r: dict) -> str:
    s, m = r["settings"], r["messages"]
    out = [
        f"Veylor soak: {s['minutes']:g} min, {s['rate']:g} msg/s to {s['ws_clients']} WebSocket + {s['unix_clients']} Unix"
        f" staying clients; churn {s['churn_rate']:g}/s ({s['abort_share']:.0%} aborted); reload every"
        f" {s['reload_every']:g} s; stalled client every {s['stall_every']:g} s; upstream restart every {s['restart_every']:g} s",
        f"machine: {r['machine']['cpus']} CPUs, Python {r['machine']['python']}, Linux {r['machine']['kernel']}, {r['machine']['date']}",
        "",
        f"messages   {m['delivered']:,} delivered / {m['expected']:,} expected  ({m['staying_clients']} clients x {m['per_client']:,};"
        f" window {m['window'][0]}..{m['window'][1]}; outages {m['outages'] or 'none'})",
        f"           {m['deliveries_per_s']:,.0f} deliveries/s; clients at most {m['max_lag_messages']} messages behind at checkpoints",
        f"RSS MiB    launch {r['rss_mib']['launch']}, clients connected {r['rss_mib']['connected']}, start {r['rss_mib']['start']}, peak {r['rss_mib']['peak']}"
        f" (high-water {r['rss_mib']['hwm']}), end {r['rss_mib']['end']} ({r['rss_end_vs_start']:+.1%});"
        f" during the run {r['rss_mib']['growth_mib_per_min']} MiB/min",
        f"fds        start {r['fds']['start']}, peak {r['fds']['peak']}, end {r['fds']['end']}",
        f"tasks      start {r['tasks']['start']}, peak {r['tasks']['peak']}, end {r['tasks']['end']}",
        f"CPU        Veylor {r['cpu']['veylor_percent']}% of a core, staying clients {r['cpu']['clients_percent']}%,"
        f" churn {r['cpu']['churn_percent']}%",
        f"reloads    {r['reloads']['count']} ({r['reloads']['failed']} failed), p50 {r['reloads']['ms_p50']} ms, max {r['reloads']['ms_max']} ms",
        f"churn      {r['churn']['connections']:,} connections: "
        + ", ".join(f"{k} {v}" for k, v in sorted(r["churn"]["made"].items())),
        "",
    ]
    for c in r["checks"]:
        out.append(f"{'PASS' if c['ok'] else 'FAIL'}  {c['name']}: {c['detail']}")
    out.append("")
    out.append("OK" if r["ok"] else "FAILED")
    return "\n".join(out)
