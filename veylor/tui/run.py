"""Starting the TUI: in-process beside the relay (``veylor --tui``), or attached to a
running Veylor (``veylor top``). Textual is a dependency; should it be missing all the
same (a partial install), say how to put it back. The TUI owns the terminal while it runs: the stderr log handler is set
aside (lines go to the TUI's log pane) and put back after."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import signal
import sys

INSTALL = "the terminal UI needs Textual, which is not installed: reinstall Veylor (pip install veylor)"


def unavailable(command: str = "--tui") -> str | None:
    """Why the TUI cannot run here, or None. ``command``: how it was asked for
    (``--tui`` or ``top``), whose way around it the answer gives."""
    if importlib.util.find_spec("textual") is None:
        return INSTALL
    if not sys.stdout.isatty() or not sys.stdin.isatty():
        if command == "top":
            return "veylor top needs a terminal (stdin and stdout are not one); veylor status prints the same state as text"
        return "the terminal UI needs a terminal (stdin and stdout are not one); run without --tui"
    return None


async def in_process(server) -> None:  # type: ignore[no-untyped-def]
    """Run the TUI on the relay's event loop until the user quits or Veylor is stopped."""
    from .app import VeylorApp
    from .logpane import LogBuffer
    from .reader import InProcess

    root = logging.getLogger()
    buffer = LogBuffer()
    buffer.setFormatter(root.handlers[0].formatter if root.handlers else logging.Formatter())
    saved = list(root.handlers)
    for handler in saved:
        root.removeHandler(handler)
    root.addHandler(buffer)
    app = VeylorApp(InProcess(server), logs=buffer, confirm_quit=True)  # (q stops the relay: asked twice)
    # While the TUI owns the terminal, SIGHUP means the terminal went away (an ssh session
    # closed): Veylor should stop in order, not draw for no one (reload with r). Known
    # gap: after a hang-up it does not always exit yet (see the session notes).
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, _hung_up, server)
    try:
        running = asyncio.ensure_future(app.run_async())
        stopping = asyncio.ensure_future(server.stopping.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            app.exit()
            await running
        stopping.cancel()
    finally:
        # A terminal that went away or stopped reading takes no more lines: a log line
        # written to it would block the event loop (and the orderly stop) for good.
        # The bounded buffer stays as the handler instead; what it holds is dropped.
        if app.terminal_ok:
            root.removeHandler(buffer)
            for handler in saved:
                root.addHandler(handler)
    server.stop()


def _hung_up(server) -> None:  # type: ignore[no-untyped-def]
    logging.getLogger("veylor").warning("the terminal hung up (SIGHUP): stopping")
    server.stop()


def attached(
    config: str | None, admin: str | None, token_file: str | None = None, read_only: bool = False
) -> int:
    """``veylor top``: the TUI of a running Veylor, until the user quits (it keeps running).
    ``read_only``: no reload, no tap."""
    from ..observe.client import Unreachable, admin_token, target
    from .app import VeylorApp
    from .reader import OverHttp

    try:
        spec = target(config, admin)
        token = admin_token(spec, token_file)
    except Unreachable as exc:
        print(f"veylor top: {exc}", file=sys.stderr)
        return 2
    VeylorApp(OverHttp(spec, token), read_only=read_only).run()
    return 0
