"""The terminal the TUI draws on, made safe for a relay that shares its event loop.

Textual writes the screen through a thread with a bounded queue (30 frames). With its
own writer, two things a terminal does would hurt the relay running on the same loop:

- a terminal that **goes away** (ssh closed, tmux killed: writes fail with EIO) kills
  the writer thread; the queue fills, and the next frame blocks the event loop in
  ``Queue.put`` forever: every client stalls, and Veylor never exits;
- a terminal that **stops reading** (a stalled ssh connection, a paused terminal) blocks
  the writer in ``write``; the queue fills, and again the loop blocks.

:class:`Driver` replaces the writer with :class:`Writer`: frames the terminal is not
ready for are dropped (the screen is repainted whole once it reads again), writes go to
the file descriptor (no Python lock a stuck thread could hold at exit), and a terminal
that went away is reported once, so the App can stop (in-process: Veylor stops in
order, as on SIGTERM; attached: ``veylor top`` exits).
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from typing import IO, Any

from textual.drivers.linux_driver import LinuxDriver

from ..runtime import compat

QUEUED = 30  # frames waiting for the terminal before new ones are dropped (as Textual's)
STOP_WAIT = 1.0  # seconds to wait at exit for a terminal that does not read


class Writer(threading.Thread):
    """Writes frames to the terminal in a thread; never blocks the caller (see the
    module docstring). ``gone`` is set when the terminal went away, ``dropped`` counts
    frames not written because it was not reading. (What Textual's driver calls on its
    writer: ``write``, ``flush``, ``fileno``, ``isatty``, ``start``, ``stop``.)"""

    def __init__(
        self, file: IO[str], on_gone: Callable[[], object], on_caught_up: Callable[[], object]
    ) -> None:
        super().__init__(daemon=True, name="veylor-terminal")
        self.frames: queue.Queue[str | None] = queue.Queue(QUEUED)
        self.fd = file.fileno()
        self.encoding = getattr(file, "encoding", None) or "utf-8"
        self.on_gone = on_gone
        self.on_caught_up = on_caught_up
        self.gone = False
        self.dropped = 0
        self._behind = False  # frames were dropped: repaint whole when caught up

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def flush(self) -> None:
        """(Each frame is written whole by the thread: nothing to flush here.)"""

    def write(self, text: str) -> None:
        if self.gone:
            return
        try:
            self.frames.put_nowait(text)
        except queue.Full:
            self.dropped += 1
            self._behind = True

    def run(self) -> None:
        while True:
            text = self.frames.get()
            if text is None:
                return
            if self.gone:
                continue
            data = text.encode(self.encoding, "replace")
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            except OSError:
                self.gone = True
                self.on_gone()
                continue
            if self._behind and self.frames.empty():
                self._behind = False
                self.on_caught_up()

    def stop(self) -> None:
        """Stop after the frames queued (a terminal that does not read: after a second;
        the thread is a daemon, blocked in a write the process exit ends)."""
        try:
            self.frames.put(None, timeout=STOP_WAIT)
        except queue.Full:
            return
        self.join(STOP_WAIT)


class Driver(LinuxDriver):
    """Textual's terminal driver with :class:`Writer` as its writer (put in its place
    through :mod:`veylor.runtime.compat`: Textual has no public way to give a driver
    its writer); the App is told when the terminal goes away (``terminal_gone``)."""

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(app, *args, **kwargs)
        self.veylor_app = app

    def start_application_mode(self) -> None:
        super().start_application_mode()  # type: ignore[no-untyped-call]  # (Textual's own, untyped)
        textual_writer = compat.terminal_writer(self)
        if textual_writer is None:  # the terminal refused application mode
            return
        textual_writer.stop()  # writes what it has queued (the mode's set-up), then ends
        app = self.veylor_app
        loop = asyncio.get_running_loop()
        gone = getattr(app, "terminal_gone", app.exit)
        writer = Writer(
            compat.terminal_file(self),
            on_gone=lambda: loop.call_soon_threadsafe(gone),
            on_caught_up=lambda: loop.call_soon_threadsafe(app.refresh),
        )
        compat.set_terminal_writer(self, writer)
        writer.start()

    def close(self) -> None:
        super().close()
        writer = compat.terminal_writer(self)
        if isinstance(writer, Writer):
            # Gone, or still stuck writing after STOP_WAIT: the terminal takes nothing
            # more (in-process, the stderr log handler must not be put back on it).
            app = self.veylor_app
            app.terminal_ok = not writer.gone and not writer.is_alive()
