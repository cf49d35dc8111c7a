"""The interfaces of the runtime's parts, for the modules that drive or hold them: what
the supervisor and the fan-out need of each kind of source and listener, and what the
buffer budget needs of an endpoint. A leaf: it imports nothing of Veylor's but the
statistics' types, so that any module of the runtime may name these types without a
loop (an endpoint holds sources of any kind, a budget holds endpoints).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .stats import SourceStats

ListenerKey = tuple[Any, ...]  # (kind, address...), e.g. ("websocket", host, port), ("unix", path)
Dispatch = Callable[[str, bytes, bool], None]


class SourceKind(Protocol):
    """A running source: keeps its upstream connection and hands each message to the
    fan-out's ``dispatch(name, payload, is_text)``."""

    name: str
    spec: Any
    stats: SourceStats

    @property
    def state(self) -> str:
        """``connected`` when messages can flow; the kind's own words otherwise."""

    def start(self) -> None:
        """Begin connecting (in a task of its own)."""

    async def restart(self, spec: Any) -> None:
        """Reconnect with new settings; counters and queued client messages are kept."""

    async def stop(self) -> None:
        """Stop connecting and close the connection, bounded in time."""

    def send(self, data: bytes, is_text: bool) -> None:
        """A client's message to the upstream (sent now, or queued, bounded)."""

    def status(self) -> dict[str, Any]:
        """Its state as plain data: ``state`` and what the kind knows beside."""


class Listener(Protocol):
    """Takes new clients for the endpoints attached to it."""

    key: ListenerKey

    def attach(self, endpoints: Sequence[Any]) -> None:
        """Serve these endpoint objects from now on (before :meth:`start`, and again at
        each reload that changes them: new clients go to the new objects)."""

    async def start(self) -> None:
        """Bind; :class:`~veylor.runtime.endpoints.StartupError` naming the endpoints and
        the address if it cannot."""

    def stop_accepting(self) -> None:
        """No new clients from now on."""

    async def close(self) -> None:
        """Stop accepting and release what it holds (wait for the server to close,
        remove a socket file)."""

    def describe(self) -> str:
        """``ws://127.0.0.1:8765 for ticker (/ticker)``: for the startup log."""


class BudgetedEndpoint(Protocol):
    """What the buffer budget (:mod:`veylor.runtime.budget`) needs of an endpoint whose
    clients it watches."""

    name: str
    spec: Any
    clients: Any  # (a set of the kind's clients)
    written: int  # bytes written to each client since it started (the same for all)

    def is_open(self, client: Any) -> bool:
        """Whether ``client`` can still be written to."""

    def over_budget(self, client: Any) -> bool:
        """The process-wide limit is reached: what to do with ``client``, one of those
        holding the most (True: it was dealt with)."""

    def stalled(self, client: Any, idle: float, held: int, why: str) -> None:
        """``client`` read nothing for ``idle`` seconds while holding ``held`` bytes: close it."""
