"""What the benchmarks share beside the message layout (``common.py``). Each benchmark
keeps only its own scenario. (Scripts run as ``python benchmarks/X.py`` import it as
``harness``: their directory is on ``sys.path``.)

- here: a free port on 127.0.0.1; a process's memory, file descriptors and CPU time as
  /proc says; CPU pinning and the open-file limit;
- ``harness.process``: the processes a benchmark starts (Veylor, relays, its own roles),
  and waiting for a listener;
- ``harness.report``: where results and logs go, the machine a run was made on, and
  PASS/FAIL lines against a target.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from collections.abc import Iterable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")  # /proc/PID/stat's unit of CPU time
CPUS = os.cpu_count() or 1
# The layout of every benchmark that measures a relay: the relay alone on CPU 0,
# everything else (upstream, clients, the benchmark itself) on CPU 1.
RELAY_CPU = {0}
LOAD_CPU = {1} if CPUS > 1 else {0}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int, key: str = "VmRSS:") -> float:
    """A process's resident memory in MiB (``key``: another line of /proc/PID/status,
    such as ``VmHWM:``, its peak); NaN when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def fd_count(pid: int) -> int:
    """How many file descriptors a process holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _cpu_ticks(pid: int | str) -> tuple[int, int]:
    # The fields after the command name, which may hold spaces and parentheses.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def cpu_times(pid: int | str = "self") -> tuple[float, float]:
    """The CPU seconds a process has used so far: (user, system)."""
    user, system = _cpu_ticks(pid)
    return user / TICK, system / TICK


def cpu_seconds(pid: int | str = "self") -> float:
    """The CPU seconds a process has used so far, user and system together."""
    user, system = _cpu_ticks(pid)
    return (user + system) / TICK


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Pin a process (0: this one) to ``cpus`` where the system allows it."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, cpus)


def raise_nofile() -> None:
    """Raise this process's soft open-file limit to the hard one (thousands of clients)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
