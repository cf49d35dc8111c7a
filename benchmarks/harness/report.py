"""Where a benchmark's results and its processes' logs go, what its report says of the
machine, and its lines against a target."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import CPUS

RESULTS = Path(__file__).resolve().parents[1] / "results"  # (not in git)
LOGS = RESULTS / "logs"  # each process's standard error, for when a number looks wrong


def log_path(name: str) -> Path:
    """Where the log called ``name`` goes (the directory made if need be)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    return LOGS / name


def write_json(name: str, data: Any) -> Path:
    """Write ``data`` as indented JSON to results/``name``; the file's path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2))
    return path


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by None (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def machine() -> dict[str, str]:
    """The machine and the versions a run was made with, and its date."""
    import websockets

    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = "-"
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpus": str(CPUS),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
        "uvloop": uv,
        "date": time.strftime("%Y-%m-%d"),
    }


def verdict(ok: bool, text: str) -> str:
    """A target's line in a report: ``- PASS: text``, or ``- FAIL: text``."""
    return f"- {'PASS' if ok else 'FAIL'}: {text}"
