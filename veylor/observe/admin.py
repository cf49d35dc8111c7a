"""The admin HTTP endpoint (``admin:`` in the main file; off unless set).

    GET  /metrics            the state view in the Prometheus text format
    GET  /healthz            200 while the process serves
    GET  /readyz             200 when every listener of the running configuration is
                             bound (and the sources admin.ready_requires names are
                             connected); else 503. Its body (JSON) says why, and which
                             sources are down, either way
    GET  /graph              the state view (JSON), with each endpoint's clients
                             (?clients=NAME: one endpoint's; ?clients=*: every
                             endpoint's, 1,000 in all, those behind first; ?tap=ROUTE: and the last
                             messages that passed ROUTE, see veylor.runtime.tap)
    POST /reload[?dry_run=1] reload now and answer when it is applied: 200 with the
                             plan and steps, 422 with the problems (file, line, key),
                             500 when it could not be applied (a listener could not be
                             bound); with dry_run, the plan only

Web pages cannot use it, whatever address it has (see "Protecting the admin endpoint"
in docs/observability.md). Every request passes, in order:

- ``Host``: its own address (any IP address when it listens on every interface),
  ``localhost`` or one of ``admin.allowed_hosts``, with any port; else 421. A page
  whose name an attacker points at 127.0.0.1 (DNS rebinding) is same-origin with this
  endpoint, so the browser lets it read the answers: its name in ``Host`` is what
  gives it away. (On a Unix socket no browser can connect: its file's mode is the gate.)
- no ``Origin`` header and no ``Sec-Fetch-Site`` but ``none`` (typed in the address
  bar) or ``same-origin``, except for ``/healthz``; else 403. This endpoint serves no
  page, so no browser request of its own carries either: Prometheus, curl and
  ``veylor`` send neither.
- ``Authorization: Bearer TOKEN`` with ``admin.auth``, looked up by digest as a
  WebSocket endpoint's (never logged); else 401. Not asked on ``/healthz``, nor on
  ``/readyz``, which then answers its status code with ``{"ready": ...}`` only:
  probes often cannot send a token.
- ``admin.read_only``: ``POST /reload`` and taps (``/graph?tap=``) get 403.
- ``POST /reload`` carries ``X-Veylor-Reload`` or ``Content-Type: application/json``
  (``veylor reload`` sends the header); else 403. Neither can come from an HTML form,
  and a page's script must first be allowed by a CORS preflight, which this endpoint
  never allows.

Refusals are counted by reason (``veylor_admin_refused_total``) and logged at most
every 10 s with a count.

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

from ..config.access import token_digest
from ..config.adminspec import AdminSpec
from ..printable import printable
from ..reload import Outcome, no_reload
from ..runtime.endpoints import StartupError, os_reason
from ..runtime.stats import AdminStats
from ..runtime.unix import SocketFile
from ..runtime.util import Throttled
from .metrics import CONTENT_TYPE, render
from .state import snapshot, snapshot_async
from .view import StateView

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("veylor.admin")
KEEPALIVE = 5.0  # seconds an idle HTTP connection stays open
SHUTDOWN = 2.0  # seconds requests in progress get when the admin endpoint closes


class Control(Protocol):
    """What the admin endpoint drives: the :class:`veylor.server.Server`."""

    def snapshot(self, clients: bool | str = False) -> StateView: ...

    async def snapshot_async(self, clients: bool | str = False, tap: str | None = None) -> StateView: ...

    def reload(self, reason: str, dry_run: bool = False) -> asyncio.Future[Outcome]: ...


class Admin:
    """The admin endpoint at one address."""

    def __init__(self, spec: AdminSpec, control: Control, stats: AdminStats | None = None) -> None:
        self.spec = spec  # read at each request: a reload changes its access rules in place
        self.control = control
        self.stats = stats if stats is not None else AdminStats()
        self.runner: web.AppRunner | None = None
        self.file = SocketFile(spec.path, "admin") if spec.path is not None else None
        self._refused_log = Throttled(log)

    async def start(self) -> None:
        app = web.Application(client_max_size=4096, logger=log, middlewares=[self._guard])
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/graph", self.graph)
        app.router.add_post("/reload", self.reload)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=KEEPALIVE,
            logger=_HTTP_LOG,
            shutdown_timeout=SHUTDOWN,  # (the runner's: on a site, deprecated since aiohttp 3.9)
        )
        await runner.setup()
        spec = self.spec
        try:
            if self.file is not None:
                sock = await self.file.bind(spec.mode)
                sock.listen(64)
                sock.setblocking(False)
                site: web.BaseSite = web.SockSite(runner, sock)
            else:
                site = web.TCPSite(runner, spec.host, spec.port, reuse_address=True)
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
        self._refused_log.cancel()
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()
        if self.file is not None:
            self.file.remove()

    # ------------------------------------------------------------------ access

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return await handler(request)  # type: ignore[no-any-return]

    def _refusal(self, request: web.Request) -> web.Response | None:
        """The answer to a request the access rules refuse (see the module docstring),
        counted and logged; None to serve it."""
        spec, path, headers = self.spec, request.path, request.headers
        hosts = headers.getall("Host", [])
        if len(hosts) > 1 or not spec.host_ok(hosts[0] if hosts else None):
            shown = _clip(hosts[0]) if len(hosts) == 1 else f"{len(hosts)} Host headers"
            return self._refuse(
                request,
                "host",
                421,
                f"Host {shown} is not a name this admin endpoint answers to: it answers to its "
                "address and localhost (a web page whose name points here must not reach it); "
                "add a name it is reached by to admin.allowed_hosts",
            )
        if path == "/healthz":
            return None
        site = headers.get("Sec-Fetch-Site", "none").strip().lower()
        if "Origin" in headers or site not in ("none", "same-origin"):
            what = "an Origin header" if "Origin" in headers else f"Sec-Fetch-Site: {_clip(site)}"
            return self._refuse(
                request,
                "origin",
                403,
                f"a request from a web page ({what}) gets no state and no reload: use curl, "
                "Prometheus or `veylor status`, or type the address in the browser",
            )
        auth = spec.auth
        if auth is not None:
            token = _bearer(headers.getall("Authorization", []))
            if token is None and path != "/readyz":  # (a probe without one: the verdict only)
                return self._refuse(
                    request,
                    "no_token",
                    401,
                    "a token is required: Authorization: Bearer TOKEN (veylor: --token-file FILE, "
                    "or VEYLOR_ADMIN_TOKEN)",
                )
            # A lookup by SHA-256: nothing learned from timing; the token is never logged.
            if token is not None and token_digest(token) not in auth.digests:
                return self._refuse(request, "token", 401, "wrong token")
        reload = path == "/reload" and request.method == "POST"
        if spec.read_only and (reload or (path == "/graph" and request.query.get("tap"))):
            what = "reloads" if reload else "taps (they show messages)"
            return self._refuse(
                request,
                "read_only",
                403,
                f"this admin endpoint is read_only: no {what}; reload with SIGHUP, or remove admin.read_only",
            )
        if reload and not headers.get("X-Veylor-Reload") and request.content_type != "application/json":
            return self._refuse(
                request,
                "form",
                403,
                "POST /reload needs the header X-Veylor-Reload: 1 (or Content-Type: application/json), "
                "which `veylor reload` sends: no HTML form can, so no web page can reload Veylor",
            )
        return None

    def _refuse(self, request: web.Request, reason: str, status: int, text: str) -> web.Response:
        counter = f"refused_{reason}"
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        peer = request.remote or "unix"
        self._refused_log(
            "admin: refused %s %s from %s (%d): %s",
            request.method,
            _clip(request.path, 60),
            peer,
            status,
            text,
        )
        response = _json({"refused": reason, "error": text}, status)
        if status == 401:
            error = ', error="invalid_token"' if reason == "token" else ""
            response.headers["WWW-Authenticate"] = f'Bearer realm="veylor"{error}'
        return response

    # ------------------------------------------------------------------ handlers

    async def metrics(self, request: web.Request) -> web.Response:
        view = await self.control.snapshot_async()
        ready, _ = readiness(view, self.spec.ready_requires)
        text = await asyncio.to_thread(render, view, ready)
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready: every listener of the running configuration bound (and one served),
        and what ``ready_requires`` names connected. Sources down, NATS endpoints away
        and a refused reload are in the body either way (see :func:`readiness`)."""
        view = await self.control.snapshot_async()
        ready, body = readiness(view, self.spec.ready_requires)
        if self.spec.auth is not None and _bearer(request.headers.getall("Authorization", [])) is None:
            # A probe without a token (a wrong one was refused): the verdict, not the state.
            return _json({"ready": ready}, 200 if ready else 503)
        return _json(body, 200 if ready else 503)

    async def graph(self, request: web.Request) -> web.Response:
        # ?clients=NAME: one endpoint's clients (the TUI); ?clients=*: every endpoint's,
        # bounded in all (the TUI's c); ?clients= none; default: all, bounded per endpoint.
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
        kind = record.exc_info[0] if record.exc_info else None
        record.args = (self.count, kind.__name__ if kind is not None else record.levelname)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self.reported_at, self.count = now, 0
        return True


REPORT_EVERY = 60.0
_HTTP_LOG = logging.getLogger("veylor.admin.http")
_HTTP_LOG.addFilter(_Malformed())


def readiness(view: StateView, requires: tuple[str, ...] | str) -> tuple[bool, dict[str, Any]]:
    """Whether the Veylor of ``view`` is ready, and why not. By default it is while every
    listener of its running configuration is bound: an upstream that is down, or a
    refused reload while the running configuration serves, do not make a replica leave
    its Service (one flaky upstream, or one typo in a ConfigMap they share, would take
    every replica out at once). ``requires`` (``admin.ready_requires``) opts into more:
    those sources connected, or ``all`` of them and every NATS endpoint's connection."""
    down = {n: s["state"] for n, s in view["sources"].items() if s["state"] != "connected"}
    # Endpoints with a connection of their own (NATS) say its state; the others have none.
    away = {n: e["state"] for n, e in view["endpoints"].items() if e.get("state", "connected") != "connected"}
    listeners = view["listeners"]
    why: list[str] = []
    if view["config"]["generation"] < 1:
        why.append("no configuration is served yet")
    if listeners["bound"] < listeners["configured"]:
        why.append(
            f"{listeners['configured'] - listeners['bound']} of {listeners['configured']} listeners not bound"
        )
    if requires == "all":
        why += [f"source {n} is {state}" for n, state in down.items()]
        why += [f"endpoint {n} is {state}" for n, state in away.items()]
    else:
        why += [f"source {n} is {down[n]}" for n in requires if n in down]
    last = view["reloads"]["last"]
    body = {
        "ready": not why,
        "why": why,
        "ready_requires": requires if requires == "all" else list(requires),
        "listeners": listeners,
        "sources_not_connected": down,
        "endpoints_not_connected": away,
        "last_reload": last,
        "last_reload_ok": last is None or last["ok"],
        "generation": view["config"]["generation"],
    }
    return not why, body


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def _bearer(values: list[str]) -> str | None:
    """The token of ``Authorization: Bearer TOKEN`` (as a WebSocket endpoint reads it)."""
    for value in values:
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    return None


def _clip(text: str, limit: int = 100) -> str:
    """A value a client chose, fit for a log line and an answer: quoted, control
    characters escaped, at most ``limit`` characters."""
    text = printable(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


class Standalone:
    """The admin endpoint's view of a runtime run without a :class:`~veylor.server.Server`
    (embedded, tests): state, but no configuration file to reload."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def snapshot(self, clients: bool | str = False) -> StateView:
        return snapshot(self.runtime, clients=clients)

    async def snapshot_async(self, clients: bool | str = False, tap: str | None = None) -> StateView:
        return await snapshot_async(self.runtime, clients=clients, tap=tap)

    def reload(self, reason: str, dry_run: bool = False) -> asyncio.Future[Outcome]:
        return no_reload(reason, self.runtime)
