"""Where the TUI reads the state view: in the relay's own process, or over HTTP from a
running Veylor's admin endpoint (``veylor top``). Both give the same snapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import quote, urlencode

from ..observe.client import AdminClient, Unreachable
from ..observe.view import EVERY, SCHEMA, ReloadView, StateView
from .shape import Misshapen, check_outcome, check_view

if TYPE_CHECKING:
    from ..config.adminspec import AdminSpec
    from ..reload import Outcome
    from ..server import Server

TIMEOUT = 2.0  # seconds; a reader that takes longer is marked stale


class Unavailable(Exception):
    """The state cannot be read now (Veylor is restarting, unreachable)."""


class StateReader(Protocol):
    where: str  # for the title: "in-process", "http://127.0.0.1:9900"
    clients_of: str | bool | None  # the endpoint whose clients to read (the one selected); True: all
    tap: str | None  # the route whose last messages to read (a tap: see veylor.runtime.tap)

    async def read(self) -> StateView: ...

    async def reload(self) -> ReloadView: ...

    async def close(self) -> None: ...


class InProcess:
    """The relay of this process."""

    where = "in-process"

    def __init__(self, server: Server) -> None:
        self.server = server
        self.clients_of: str | bool | None = None
        self.tap: str | None = None

    async def read(self) -> StateView:
        # One endpoint's clients (or, with c, every endpoint's, bounded in all), not
        # every client of every endpoint twice a second.
        clients = EVERY if self.clients_of is True else self.clients_of or False
        return await self.server.snapshot_async(clients=clients, tap=self.tap)

    async def reload(self) -> ReloadView:
        outcome: Outcome = await self.server.reload("TUI (r)")
        return cast(ReloadView, outcome.as_dict())

    async def close(self) -> None:
        pass


class OverHttp:
    """A running Veylor's admin endpoint (``/graph``, ``POST /reload``). What it answers
    is checked for what the TUI reads (:mod:`veylor.tui.shape`): whatever answers at
    that address may not be the Veylor this TUI knows."""

    def __init__(self, spec: AdminSpec, token: str | None = None) -> None:
        self.spec = spec
        self.where = spec.url
        self.client = AdminClient(spec, token, keep=True)  # (the token: for an admin endpoint with auth)
        self.clients_of: str | bool | None = None
        self.tap: str | None = None

    async def _call(self, method: str, path: str, timeout: float, ok: tuple[int, ...]) -> dict[str, Any]:
        try:
            status, body = await self.client.call(method, path, timeout)
        except Unreachable as exc:  # (Refused too: the admin endpoint's access rules say why)
            raise Unavailable(str(exc)) from None
        if status not in ok:
            raise Unavailable(f"{self.where}{path.split('?')[0]}: HTTP {status}")
        return body

    async def read(self) -> StateView:
        params = {"clients": EVERY if self.clients_of is True else self.clients_of or ""}
        if self.tap:
            params["tap"] = self.tap
        query = "?" + urlencode(params, quote_via=quote, safe="*")
        view = await self._call("GET", "/graph" + query, TIMEOUT, (200,))
        if view.get("schema") != SCHEMA:
            raise Unavailable(f"{self.where}: not Veylor's state view (schema {SCHEMA})")
        try:
            check_view(view)
        except Misshapen as exc:
            raise Unavailable(f"{self.where}: not Veylor's state view ({exc})") from None
        return cast(StateView, view)  # (checked: the shape the TUI reads)

    async def reload(self) -> ReloadView:
        outcome = await self._call("POST", "/reload", 300.0, (200, 422, 500))
        try:
            check_outcome(outcome)
        except Misshapen as exc:
            raise Unavailable(f"{self.where}: not Veylor's reload outcome ({exc})") from None
        return cast(ReloadView, outcome)

    async def close(self) -> None:
        await self.client.close()
