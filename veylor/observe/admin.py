"""The admin HTTP endpoint (``admin:`` in the main file; off unless set).

    GET  /metrics            the state view in the Prometheus text format
    GET  /healthz            200 while the process serves
    GET  /readyz             200 when every source (and every NATS endpoint) is
                             connected and the last reload succeeded; else 503 with
                             what is not ready (JSON)
    GET  /graph              the state view (JSON), with each endpoint's clients
                             (?clients=NAME: one endpoint's; ?tap=ROUTE: and the last
                             messages that passed ROUTE, see veylor.runtime.tap)
    POST /reload[?dry_run=1] reload now and answer when it is applied: 200 with the
                             plan and steps, 422 with the problems (file, line, key),
                             500 when it could not be applied (a listener could not be
                             bound); with dry_run, the plan only

It runs on the relay's event loop with aiohttp (``websockets`` cannot serve POST; a
synchronous server would need a thread): a request costs the loop what building the
snapshot costs (about 20 ms for 1,000 sources, endpoints and routes, in chunks of 100
between which clients are served); the Prometheus text and the JSON are encoded in a
worker thread. Requests are small and bounded: no body is read,
headers are capped by aiohttp, idle connections close after a few seconds, requests that
are not HTTP are counted and reported once a minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from ..config.model import AdminSpec
from ..runtime.endpoints import StartupError, os_reason
from ..runtime.unix import SocketFile
from .metrics import CONTENT_TYPE, render

if TYPE_CHECKING:
    from ..reload import Outcome

log = logging.getLogger("veylor.admin")
KEEPALIVE = 5.0  # seconds an idle HTTP connection stays open
SHUTDOWN = 2.0  # seconds requests in progress get when the admin endpoint closes


class Control(Protocol):
    """What the admin endpoint drives: the :class:`veylor.server.Server`."""

    def snapshot(self, clients: bool | str = False) -> dict[str, Any]: ...

    async def snapshot_async(self, clients: bool | str = False, tap: str | None = None) -> dict[str, Any]: ...

    def reload(self, reason: str, dry_run: bool = False) -> asyncio.Future[Outcome]: ...


class Admin:
    """The admin endpoint at one address."""

    def __init__(self, spec: AdminSpec, control: Control) -> None:
        self.spec = spec
        self.control = control
        self.runner: web.AppRunner | None = None
        self.file = SocketFile(spec.path, "admin") if spec.path is not None else None

    async def start(self) -> None:
        app = web.Application(client_max_size=4096, logger=log)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/graph", self.graph)
        app.router.add_post("/reload", self.reload)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=KEEPALIVE, logger=_HTTP_LOG
        )
        await runner.setup()
        spec = self.spec
        try:
            if self.file is not None:
                sock = await self.file.bind(spec.mode)
                sock.listen(64)
                sock.setblocking(False)
                site: web.BaseSite = web.SockSite(runner, sock, shutdown_timeout=SHUTDOWN)
            else:
                site = web.TCPSite(
                    runner, spec.host, spec.port, shutdown_timeout=SHUTDOWN, reuse_address=True
                )
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if self.file is not None:
                self.file.remove()
            raise StartupError(f"admin: cannot listen on {spec.url}: {os_reason(exc)}") from None
        except StartupError:
            await runner.cleanup()
            raise
        self.runner = runner
        log.info("admin endpoint on %s (/metrics /healthz /readyz /graph, POST /reload)", spec.url)

    def set_mode(self, mode: int) -> None:
        """A reload changed the socket's mode (same path): applied in place, if the file
        is still the socket this endpoint made."""
        if self.file is not None:
            self.file.chmod(mode)

    async def close(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()
        if self.file is not None:
            self.file.remove()

    # ------------------------------------------------------------------ handlers

    async def metrics(self, request: web.Request) -> web.Response:
        view = await self.control.snapshot_async()
        text = await asyncio.to_thread(render, view)
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        view = await self.control.snapshot_async()
        down = {n: s["state"] for n, s in view["sources"].items() if s["state"] != "connected"}
        # Endpoints with a connection of their own (NATS) say its state; the others have none.
        away = {
            n: e["state"] for n, e in view["endpoints"].items() if e.get("state", "connected") != "connected"
        }
        last = view["reloads"]["last"]
        failed = last is not None and not last["ok"]
        body = {
            "ready": not down and not away and not failed,
            "sources_not_connected": down,
            "endpoints_not_connected": away,
            "last_reload": last,
            "generation": view["config"]["generation"],
        }
        return _json(body, 200 if body["ready"] else 503)

    async def graph(self, request: web.Request) -> web.Response:
        # ?clients=NAME: one endpoint's clients (the TUI); ?clients= none; default: all.
        # ?tap=ROUTE: and the last messages that passed that route (a tap, renewed by
        # each read: see veylor.runtime.tap).
        only = request.query.get("clients")
        tap = request.query.get("tap") or None
        view = await self.control.snapshot_async(clients=True if only is None else only or False, tap=tap)
        body = await asyncio.to_thread(json.dumps, view, separators=(",", ":"))  # large: off the loop
        return web.Response(text=body, content_type="application/json")

    async def reload(self, request: web.Request) -> web.Response:
        dry_run = request.query.get("dry_run", "") not in ("", "0", "false", "no")
        peer = request.remote or "unix"
        outcome = await self.control.reload(f"admin API ({peer})", dry_run=dry_run)
        status = 422 if outcome.problems else 500 if outcome.error else 200
        return _json({**outcome.as_dict(), "dry_run": dry_run}, status)


class _Malformed(logging.Filter):
    """aiohttp's complaints about requests it cannot parse (a header too long, a bad chunk)
    become one line a minute with a count: no traceback, none of the client's bytes, and
    no flood a hostile client could cause."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.reported_at = -REPORT_EVERY

    def filter(self, record: logging.LogRecord) -> bool:
        self.count += 1
        now = time.monotonic()
        if now - self.reported_at < REPORT_EVERY:
            return False
        record.msg = (
            "admin: %d requests that were not valid HTTP, or failed (last: %s); said at most once a minute"
        )
        record.args = (self.count, record.exc_info[0].__name__ if record.exc_info else record.levelname)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self.reported_at, self.count = now, 0
        return True


REPORT_EVERY = 60.0
_HTTP_LOG = logging.getLogger("veylor.admin.http")
_HTTP_LOG.addFilter(_Malformed())


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )
