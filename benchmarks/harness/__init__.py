"""What the benchmarks share beside the message layout (``common.py``): a free port on
127.0.0.1 and a process's memory and file descriptors as /proc says. Each benchmark
keeps only its own scenario. (Scripts run as ``python benchmarks/X.py`` import it as
``harness``: their directory is on ``sys.path``.)"""

from __future__ import annotations

import os
import socket
from pathlib import Path


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
