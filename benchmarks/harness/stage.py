"""One run of a benchmark against Veylor: a working directory, the benchmark's upstream,
Veylor on a configuration, the load's processes; everything stopped (newest first: asked
to quit, then killed) and removed after, however the run ends."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from harness import LOAD_CPU, RELAY_CPU
from harness.process import Process, wait_listening

HERE = Path(__file__).resolve().parent.parent  # benchmarks/
PY = sys.executable


class Stage:
    """A run's directory and processes (a context manager, or :meth:`stop` when done)."""

    def __init__(self, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.procs: list[Process] = []

    def start(self, args: list[str], **kwargs: Any) -> Process:
        """A process of the run (``Process``'s arguments), stopped with the stage."""
        proc = Process(args, **kwargs)
        self.procs.append(proc)
        return proc

    def upstream(self, *args: str) -> tuple[Process, int]:
        """``upstream.py`` with ``args``, on the load's core; and its port."""
        proc = self.start([PY, str(HERE / "upstream.py"), *args], cpus=LOAD_CPU, stdin=True, read="stdout")
        return proc, int(proc.expect("listening").split()[1])

    def veylor(self, config: str, upstream: Process, port: int, log: Path | None = None) -> Process:
        """Veylor on ``config`` (YAML text), on its own core, once it has connected to
        ``upstream`` and listens on ``port``."""
        path = self.dir / "veylor.yaml"
        path.write_text(config)
        relay = self.start(
            [PY, "-m", "veylor", "-c", str(path), "--no-watch"], cpus=RELAY_CPU, cwd=HERE, log=log
        )
        upstream.expect("relay connected", 30)
        wait_listening(port, None)
        return relay

    def __enter__(self) -> Stage:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every process of the run, newest first, and remove its directory."""
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.send("quit")
            proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
