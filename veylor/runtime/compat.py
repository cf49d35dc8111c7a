"""Where Veylor looks inside a library it uses, in one place: each reach is small, has a
fallback when the library no longer has what it looks for, and a test
(``tests/integration/test_compat.py``) that fails loudly when a release changes it.

websockets (its sans-I/O protocol objects):

- :func:`release_protocol`: a closed connection's protocol object is freed by reference
  counting, not left to the garbage collector. Its parser is a generator that holds the
  protocol (a cycle), as do the tracebacks of the errors it keeps; the cycle would
  outlive a client connected while a reload froze the heap (``heap.settle_heap``). The
  protocol's public ``handshake_exc`` and ``close_exc`` reach the errors; only the
  parser (``parser``, no underscore but not documented) is looked at by name.

nats-py (2.x):

- :func:`reader_ended`: whether a connection's read loop ended while the connection
  still says it is connected. nats-py (2.16 at least) ends its read loop on any error
  it did not foresee while parsing (a message whose status line, subject or reply
  subject is not UTF-8, which anyone allowed to publish can send), logs "nats:
  encountered error" and neither reconnects nor closes: the connection stays
  ``CONNECTED``, publishes still go out, and nothing is received until its
  stale-connection check (two unanswered pings, minutes apart) fires. ``flush()`` then
  returns at once without a PING (it takes a dead read loop for an interpreter
  shutdown). Without this look, Veylor's watchdog still notices (no message and no
  PONG to its own ping for ``stall_timeout``), only later.
- :func:`ordered_consumer`: the JetStream ordered consumer behind a subscription, whose
  reset Veylor guards (:meth:`veylor.runtime.nats.stream.StreamReader._guard_resets`) with
  :func:`guard_resets`.

Textual (8.x, its Linux driver): the TUI's driver writes the screen through a writer of
its own that never blocks the relay's event loop (:mod:`veylor.tui.terminal`). Textual
has no public way to give a driver its writer: :func:`terminal_writer`,
:func:`set_terminal_writer` and :func:`terminal_file` reach the driver's
``_writer_thread`` and ``_file``. (This module imports no Textual: the relay never loads
it.)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import IO, Any


def release_protocol(protocol: Any) -> None:
    """Break the cycles a closed websockets protocol object is part of (see above): close
    its suspended parser, drop the tracebacks of the errors it keeps."""
    parser = getattr(protocol, "parser", None)
    if parser is not None and hasattr(parser, "close"):
        parser.close()
    errors = [protocol.handshake_exc]
    if protocol.state.name == "CLOSED":
        errors.append(protocol.close_exc)
    for exc in errors:
        seen = 0
        while exc is not None and seen < 8:
            exc.__traceback__ = None
            exc = exc.__cause__ or exc.__context__
            seen += 1


def reader_ended(nc: Any) -> bool | None:
    """True when ``nc`` says it is connected and its read loop task is over (it will
    receive nothing more); False while it reads; None when this nats-py keeps its read
    loop elsewhere (nothing can be told: the watchdog's pings still work)."""
    task = getattr(nc, "_reading_task", None)
    if not isinstance(task, asyncio.Task):
        return None
    return task.done() and bool(nc.is_connected)


def ordered_consumer(sub: Any) -> Any | None:
    """The library's JetStream state of an ordered consumer's subscription: an object
    with ``reset_ordered_consumer(sseq)`` (a coroutine) and ``_sseq`` (the stream
    sequence it resumes after); None when this nats-py has no such thing."""
    jsi = getattr(getattr(sub, "_sub", None), "_jsi", None) or getattr(sub, "_jsi", None)
    if jsi is None or not callable(getattr(jsi, "reset_ordered_consumer", None)) or not hasattr(jsi, "_sseq"):
        return None
    return jsi


def guard_resets(jsi: Any, reset_at: Callable[[int | None], int | None]) -> None:
    """Before each reset of the ordered consumer ``jsi`` (from :func:`ordered_consumer`)
    at stream sequence ``sseq``, ask ``reset_at(sseq)`` where to reset instead: past
    ``sseq`` (a message the library cannot read), the consumer then resumes after it,
    at this reset and the later ones."""
    original = jsi.reset_ordered_consumer

    async def reset(sseq: int | None) -> bool:
        at = reset_at(sseq)
        if at is not None and at != sseq:
            jsi._sseq = at - 1  # (later resets go past it too)
        return bool(await original(at))

    jsi.reset_ordered_consumer = reset


def terminal_writer(driver: Any) -> Any:
    """The writer thread a Textual driver writes the screen through (None: not in
    application mode)."""
    return getattr(driver, "_writer_thread", None)


def set_terminal_writer(driver: Any, writer: Any) -> None:
    """Make ``writer`` the one a Textual driver writes the screen through."""
    driver._writer_thread = writer


def terminal_file(driver: Any) -> IO[str]:
    """The file a Textual driver draws on (its terminal: standard error, as Textual's
    Linux driver chooses)."""
    file = getattr(driver, "_file", None)
    if file is None:
        file = sys.__stderr__
    if file is None:
        raise RuntimeError("the terminal driver has no file to draw on")
    return file


__all__ = [
    "guard_resets",
    "ordered_consumer",
    "reader_ended",
    "release_protocol",
    "set_terminal_writer",
    "terminal_file",
    "terminal_writer",
]
