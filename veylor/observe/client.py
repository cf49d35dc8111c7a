"""``veylor reload`` and ``veylor status``: clients of a running Veylor's admin endpoint.

Exit codes: 0 done; 1 the reload was refused (problems) or could not be applied;
2 Veylor could not be reached (the address tried is said), there is no admin
endpoint to reach, or it refused the request (a token, read_only: it says why).

With ``admin: {auth: ...}`` they send ``Authorization: Bearer TOKEN``: the token of
``--token-file``, else of ``$VEYLOR_ADMIN_TOKEN``, else one of the configuration's own
(when this user can read it: the unit's ``ExecReload=`` needs nothing more).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, cast

import aiohttp

from ..config import ConfigError
from ..config.adminspec import AdminSpec
from ..config.loader import admin_address
from ..report import plural
from .view import SCHEMA, EndpointView, SourceView, StateView, is_state_view, undelivered

RELOAD_TIMEOUT = 300.0  # seconds: a reload of thousands of files, under load, is answered well within
STATUS_TIMEOUT = 10.0
DEFAULT_ADMIN = "/run/veylor/admin.sock"  # where the packaged configuration puts the admin endpoint
HEALTH_TIMEOUT = 5.0  # seconds: a HEALTHCHECK that takes longer counts as a failure


TOKEN_ENV = "VEYLOR_ADMIN_TOKEN"
RELOAD_HEADER = "X-Veylor-Reload"  # what no HTML form can send: POST /reload asks for it


class Unreachable(Exception):
    """The admin endpoint could not be reached; the message says where and why."""


class Refused(Unreachable):
    """The admin endpoint refused the request (its access rules); the message says why."""


def admin_token(spec: AdminSpec, token_file: str | None) -> str | None:
    """The token to send: ``--token-file``'s (its first line that is not blank or a
    ``#`` comment), else ``$VEYLOR_ADMIN_TOKEN``, else one the configuration names (None
    without auth). :class:`Unreachable` when ``--token-file`` cannot be read."""
    if token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as fh:
                text = fh.read(MAX_TOKEN_FILE)
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise Unreachable(f"--token-file {token_file}: cannot read it: {why}") from None
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                return line.strip()
        raise Unreachable(f"--token-file {token_file}: has no token (one per line)")
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    if spec.auth is not None and spec.auth.values:
        return min(spec.auth.values)
    return None


MAX_TOKEN_FILE = 64 * 1024


def target(config: str | None, admin: str | None) -> AdminSpec:
    """The admin endpoint to talk to: ``--admin`` (``http://host:port``, ``host:port`` or
    ``unix:/path``), else the ``admin:`` of the configuration's main file."""
    if admin:
        if admin.startswith("unix:"):
            return AdminSpec(path=admin[5:])
        if "://" in admin and not admin.startswith("http://"):
            raise Unreachable(f"--admin {admin}: the admin endpoint speaks plain http:// (or unix:/PATH)")
        address = admin.removeprefix("http://").rstrip("/")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise Unreachable(f"--admin {admin}: expected http://HOST:PORT, HOST:PORT or unix:/PATH")
        return AdminSpec.from_raw({"listen": address, "mode": "0660"})  # the config's own reading
    if config is None:
        raise RuntimeError("invariant broken: config is not None")
    try:
        spec = admin_address(config)
    except ConfigError as exc:
        raise Unreachable(
            f"{config}: cannot tell where the admin endpoint is: {exc.problems[0] if exc.problems else exc}"
        ) from None
    if spec is None:
        raise Unreachable(
            f'{config} has no admin endpoint: add `admin: {{listen: "127.0.0.1:9900"}}` to it (and '
            "reload with SIGHUP once), or give one with --admin"
        )
    return spec


def headers(method: str, token: str | None) -> dict[str, str]:
    """What a request of Veylor's own clients carries: the token, and on a POST the
    header that tells it from a form a web page sent."""
    out = {"Authorization": f"Bearer {token}"} if token else {}
    if method == "POST":
        out[RELOAD_HEADER] = "1"
    return out


def url_of(spec: AdminSpec, path: str) -> str:
    """The URL of ``path`` on the admin endpoint (on a Unix socket, Host is ``localhost``)."""
    return f"http://localhost{path}" if spec.path is not None else f"{spec.url}{path}"


MAX_BODY = 64 * 2**20  # bytes of an answer read at most (a /graph of thousands of components)


class AdminClient:
    """The one client of a Veylor's admin endpoint, for the commands (a request each) and
    ``veylor top`` (a session it keeps open): the connection (TCP, or the Unix socket),
    the token, the header that tells Veylor's own POSTs from a web page's form, and a
    bound on the size of an answer."""

    def __init__(self, spec: AdminSpec, token: str | None = None, keep: bool = False) -> None:
        self.spec = spec
        self.token = token  # (never shown)
        self.keep = keep  # one session for every request, until close()
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            connector: aiohttp.BaseConnector = (
                aiohttp.UnixConnector(path=self.spec.path)
                if self.spec.path is not None
                else aiohttp.TCPConnector()
            )
            self.session = aiohttp.ClientSession(connector=connector)
        return self.session

    async def request(self, method: str, path: str, timeout: float) -> tuple[int, bytes]:
        """One request: ``(status, body)``; :class:`Unreachable` when nothing answers in
        time, or the answer is over ``MAX_BODY``."""
        try:
            async with self._session().request(
                method,
                url_of(self.spec, path),
                headers=headers(method, self.token),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                if (response.content_length or 0) > MAX_BODY:
                    raise Unreachable(f"{self.spec.url}: an answer of {response.content_length:,} bytes")
                # (read(n) returns what has come so far, up to n bytes: a /graph of more than
                # a few segments came cut short, was not JSON, and veylor top said STALE)
                body = bytearray()
                async for chunk in response.content.iter_chunked(2**16):
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise Unreachable(f"{self.spec.url}: an answer of more than {MAX_BODY:,} bytes")
                return response.status, bytes(body)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            raise Unreachable(f"cannot reach Veylor's admin endpoint at {self.spec.url}: {why}") from None
        finally:
            if not self.keep:
                await self.close()

    async def call(self, method: str, path: str, timeout: float) -> tuple[int, dict[str, Any]]:
        """One request answered as Veylor's admin endpoint answers: ``(status, JSON
        body)``; :class:`Refused` when its access rules refused it, :class:`Unreachable`
        when what answered is not Veylor's admin endpoint."""
        spec = self.spec
        status, raw = await self.request(method, path, timeout)
        try:
            body = json.loads(raw)
        except ValueError:  # not JSON (nor UTF-8): something else listens there
            raise Unreachable(f"{spec.url} answered, but not as Veylor's admin endpoint does") from None
        refused = refusal(spec, status, body)
        if refused is not None:
            raise refused
        if not isinstance(body, dict) or not ({"generation", "schema"} & body.keys()):
            raise Unreachable(f"{spec.url} answered, but not as Veylor's admin endpoint does (HTTP {status})")
        return status, body

    async def view(self, path: str, timeout: float) -> StateView:
        """The state view at ``path`` (``/graph`` and its parameters): :class:`Unreachable`
        unless what answered is a state view of the schema this Veylor reads."""
        status, body = await self.call("GET", path, timeout)
        if status != 200 or not is_state_view(body):
            raise Unreachable(f"{self.spec.url}: not Veylor's state view (HTTP {status}, schema {SCHEMA})")
        view: object = body
        return cast(StateView, view)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


async def request(
    spec: AdminSpec, method: str, path: str, timeout: float, token: str | None = None
) -> tuple[int, bytes]:
    """One request to the admin endpoint (:meth:`AdminClient.request`)."""
    return await AdminClient(spec, token).request(method, path, timeout)


def refusal(spec: AdminSpec, status: int, body: Any) -> Refused | None:
    """The admin endpoint's refusal (401, 403, 421 with ``{"refused", "error"}``), if
    ``body`` is one."""
    if not isinstance(body, dict) or not isinstance(body.get("refused"), str):
        return None
    text = f"{spec.url} refused the request (HTTP {status}): {body.get('error')}"
    if body["refused"] == "token":
        text += f" (the token of --token-file or ${TOKEN_ENV} is not one of admin.auth's)"
    return Refused(text)


async def call(
    spec: AdminSpec, method: str, path: str, timeout: float, token: str | None = None
) -> tuple[int, Any]:
    """One request to the admin endpoint (:meth:`AdminClient.call`)."""
    return await AdminClient(spec, token).call(method, path, timeout)


def reload(
    config: str | None, admin: str | None, dry_run: bool, as_json: bool, token_file: str | None = None
) -> int:
    """``veylor reload``: reload a running Veylor and say what it did."""
    try:
        spec = target(config, admin)
        token = admin_token(spec, token_file)
        status, body = asyncio.run(
            call(spec, "POST", "/reload?dry_run=1" if dry_run else "/reload", RELOAD_TIMEOUT, token)
        )
    except Unreachable as exc:
        print(f"veylor reload: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(body, indent=2))
    elif status == 200:
        _print_plan(body, dry_run)
    if status == 200:
        return 0
    if not as_json:
        for problem in body.get("problems", []):
            print(_problem_text(problem), file=sys.stderr)
        if body.get("error"):
            print(f"reload not applied: {body['error']}", file=sys.stderr)
        print(
            f"still running generation {body.get('generation')} (config {str(body.get('digest'))[:12]})",
            file=sys.stderr,
        )
    return 1


def _print_plan(body: dict[str, Any], dry_run: bool) -> None:
    changes = body.get("changes") or []
    if dry_run:
        print("A reload now would:" if changes else "A reload now would change nothing.")
    elif body.get("applied"):
        print(
            f"Reloaded: generation {body['generation']} (config {body['digest'][:12]}), "
            f"applied in {body.get('duration_ms', 0):.0f} ms:"
        )
    else:
        print(f"No changes: still generation {body['generation']} (config {body['digest'][:12]}).")
    for line in changes:
        print(f"  {line}")


def _problem_text(p: Mapping[str, Any]) -> str:
    where = f"{p['file']}:{p['line']}" if p.get("line") else str(p.get("file"))
    key = f" {p['path']}" if p.get("path") else ""
    return f"{where}{key}: {p['message']}"


def health(config: str | None, admin: str | None, token_file: str | None = None) -> int:
    """``veylor health`` (the container's HEALTHCHECK): exit 0 when the admin endpoint
    answers ``/healthz`` within ``HEALTH_TIMEOUT``, 1 when it does not. Without an
    admin endpoint in the configuration there is nothing to ask: 0, saying so (the
    process running is all a health check can know)."""
    if admin is None and config is not None:
        try:
            if admin_address(config) is None:
                print(f"veylor health: {config} has no admin endpoint; healthy while it runs")
                return 0
        except ConfigError as exc:
            # An edit that does not parse: Veylor runs on with what it had (a reload
            # refuses it). Ask the usual admin socket; without one, do not call Veylor
            # unhealthy for a file it refused (a restart would fail on it).
            if not os.path.exists(DEFAULT_ADMIN):
                print(f"veylor health: cannot read {config} ({exc}); not judging", file=sys.stderr)
                return 0
            admin = f"unix:{DEFAULT_ADMIN}"
    try:
        spec = target(config, admin)
        token = admin_token(spec, token_file)  # (/healthz asks for none; sent all the same)
        code, body = asyncio.run(request(spec, "GET", "/healthz", HEALTH_TIMEOUT, token))
    except Unreachable as exc:
        print(f"veylor health: {exc}", file=sys.stderr)
        return 1
    if code != 200 or body.strip() != b"ok":
        print(f"veylor health: {spec.url}/healthz answered HTTP {code}, not Veylor's ok", file=sys.stderr)
        return 1
    print(f"veylor health: {spec.url}: {body.decode(errors='replace').strip()}")
    return 0


def status(config: str | None, admin: str | None, as_json: bool, token_file: str | None = None) -> int:
    """``veylor status``: one screen of text (or the state view as JSON, with ``rates``),
    with rates over one second from two snapshots."""
    try:
        spec = target(config, admin)
        token = admin_token(spec, token_file)
        first = asyncio.run(AdminClient(spec, token).view("/graph", STATUS_TIMEOUT))
        time.sleep(1.0)
        second = asyncio.run(AdminClient(spec, token).view("/graph", STATUS_TIMEOUT))
    except Unreachable as exc:
        print(f"veylor status: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps({**second, "rates": rates(first, second)}, indent=2))
        return 0
    print(status_text(first, second))
    return 0


def rates(a: StateView, b: StateView) -> dict[str, Any]:
    """Per second from ``a`` to ``b``: each source's messages and bytes in, each endpoint's
    deliveries and undelivered messages, each edge's messages (None: not in ``a``)."""
    dt = max(b["time"] - a["time"], 1e-3)

    def per_s(before: Mapping[str, Any] | None, now: float, key: str) -> float | None:
        return None if before is None else round((now - before[key]) / dt, 1)

    edges = {(x["route"], x["endpoint"]): x for x in a["edges"]}
    return {
        "interval": round(dt, 3),
        "sources": {
            n: {
                "messages_in": per_s(a["sources"].get(n), s["messages_in"], "messages_in"),
                "bytes_in": per_s(a["sources"].get(n), s["bytes_in"], "bytes_in"),
            }
            for n, s in b["sources"].items()
        },
        "endpoints": {
            n: {
                "messages_out": per_s(a["endpoints"].get(n), e["messages_out"], "messages_out"),
                "undelivered": _undelivered_rate(a["endpoints"].get(n), e, dt),
            }
            for n, e in b["endpoints"].items()
        },
        "edges": [
            {
                "source": x["source"],
                "route": x["route"],
                "endpoint": x["endpoint"],
                "messages": per_s(edges.get((x["route"], x["endpoint"])), x["messages"], "messages"),
            }
            for x in b["edges"]
        ],
    }


def _undelivered_rate(before: EndpointView | None, now: EndpointView, dt: float) -> float | None:
    return None if before is None else round((undelivered(now) - undelivered(before)) / dt, 1)


def status_text(a: StateView, b: StateView) -> str:
    """The state of ``b``, with rates from ``a`` to ``b``: a header line (sources up,
    clients, deliveries and drops per second, slow clients now), the last reload, then
    each source (why it is down), endpoint (its drops and slow clients) and edge."""
    r = rates(a, b)
    now = b["time"]

    def per_s(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}/s"

    sources, endpoints = b["sources"], b["endpoints"]
    up = sum(1 for s in sources.values() if s["state"] == "connected")
    clients = sum(e["clients"] for e in endpoints.values())
    slow = sum(e["slow_clients"] for e in endpoints.values())
    deliveries = sum(x["messages_out"] or 0 for x in r["endpoints"].values())
    drops = sum(x["undelivered"] or 0 for x in r["endpoints"].values())
    lines = [
        f"veylor {b['version']} (pid {b['pid']}), up {_duration(b['uptime'])}, "
        f"generation {b['config']['generation']} (config {b['config']['digest'][:12]})",
        f"sources {up}/{len(sources)} up, {plural(clients, 'client')}, {deliveries:,.0f} deliveries/s, "
        f"{drops:,.0f} drops/s, {plural(slow, 'slow client')} now",
    ]
    last = b["reloads"]["last"]
    change = b["reloads"].get("last_change")
    label = "last reload"
    if (
        last is not None
        and last["ok"]
        and not last["changes"]
        and change is not None
        and change["at"] < last["at"]
    ):
        # a later check that changed nothing does not hide the last real change
        lines.append(f"last reload: checked, no change, {_duration(now - last['at'])} ago ({last['reason']})")
        last, label = change, "last change"
    if last is not None:
        result = "applied" if last["applied"] else "no changes" if last["ok"] else "REFUSED"
        lines.append(
            f"{label}: {result}, {_duration(now - last['at'])} ago ({last['reason']}); "
            f"{plural(len(last['changes']), 'change')}, {plural(len(last['problems']), 'problem')}"
        )
        lines += [f"  {line}" for line in last["changes"]]
        lines += [f"  {_problem_text(p)}" for p in last["problems"]]
        if last.get("error"):
            lines.append(f"  {last['error']}")
    lines += ["", "sources"]
    for name, s in sources.items():
        lines.append(
            f"  {name:<20} {s['state']:<10} {per_s(r['sources'][name]['messages_in']):>10} "
            f"{s['messages_in']:>12,} msgs  {s.get('url', '')}"
        )
        why = _why_down(s, now)
        if why:
            lines.append(f"  {'':<20} {why}")
    lines += ["", "endpoints"]
    for name, e in endpoints.items():
        rate = r["endpoints"][name]
        lines.append(
            f"  {name:<20} {plural(e['clients'], 'client'):>11} {per_s(rate['messages_out']):>12} deliveries  "
            f"{undelivered(e):,} dropped ({per_s(rate['undelivered'])}), {e['slow_clients']} slow now  {e['address']}"
        )
    lines += ["", "edges"]
    for edge, rate in zip(b["edges"], r["edges"], strict=True):
        lines.append(
            f"  {edge['source']} -> {edge['route']} -> {edge['endpoint']}: "
            f"{per_s(rate['messages'])} ({edge['messages']:,} total)"
        )
    return "\n".join(lines)


def _why_down(s: SourceView, now: float) -> str:
    """Why a source is not connected, and when it tries again (empty while connected
    without an error to tell)."""
    parts = []
    if s.get("last_error") and s["state"] != "connected":
        parts.append(f"last error: {s.get('last_error')}")
    failures = s.get("failures") or 0
    if failures:
        parts.append(f"{plural(failures, 'failed attempt')} in a row")
    since = s.get("connected_since")
    if since is not None and s["state"] == "connected":
        return ""
    heard = s.get("last_message_at")
    if heard is not None:
        parts.append(f"last message {_duration(now - heard)} ago")
    retry = s.get("next_attempt_at")
    if retry is not None and retry >= now:
        parts.append(f"next try in {_duration(retry - now)}")
    return "; ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
