"""The admin endpoint against a web page: what a browser can be made to send to a
loopback admin endpoint (issue 22, point 2), as raw HTTP over real sockets to a real
Veylor process.

- DNS rebinding: a page whose name an attacker points at 127.0.0.1 is same-origin with
  the admin endpoint, so the browser lets it read the answers and send any header. Its
  name is in ``Host``: only the endpoint's address, ``localhost`` and
  ``admin.allowed_hosts`` are answered (421 otherwise).
- A cross-site page cannot read answers, but it can send: a form POST, an ``<img>``
  GET. Such requests carry ``Origin`` or ``Sec-Fetch-Site: cross-site``/``same-site``
  and get 403; ``POST /reload`` also needs a header no form can send.
- ``admin.auth`` (bearer tokens, as endpoints have) and ``admin.read_only``.

Each test's docstring says what was wrong before ("Was:").
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from pathlib import Path

import pytest
from conftest import run_veylor
from helpers import Upstream, free_port
from helpers import quiet_veylor as veylor
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(120)

TOKEN = "0123456789abcdef-admin-token"
WRONG = "0123456789abcdef-not-the-token"
RELOAD = {"X-Veylor-Reload": "1"}
# What a browser sends with a form POST from another site (text/plain needs no preflight).
FORM = {"Content-Type": "text/plain", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}


async def http(
    where: int | Path,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    host: str | None = "127.0.0.1",
) -> tuple[int, str]:
    """One request as a browser (or anyone) could write it, on its own connection to
    ``where`` (a port on 127.0.0.1 or a Unix socket): ``(status, body)``. ``host``:
    the Host header (None: none)."""
    if isinstance(where, Path):
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(where)), 5)
    else:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", where), 5)
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    try:
        writer.write("\r\n".join(lines).encode() + body)
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, rest.decode(errors="replace")


class Admin:
    """A Veylor process with an admin endpoint on 127.0.0.1 (or a Unix socket), an
    upstream, and its configuration file."""

    def __init__(self, tmp_path: Path, upstream: Upstream, admin: str = "") -> None:
        self.dir = tmp_path
        self.upstream = upstream
        self.port, self.admin = free_port(), free_port()
        self.main = tmp_path / "config.yaml"
        self.extra = admin
        self.proc = None

    def config(self, admin: str | None = None, routes: str = "") -> str:
        extra = self.extra if admin is None else admin
        listen = f'listen: "127.0.0.1:{self.admin}"' if "unix:" not in extra else ""
        inner = ", ".join(x for x in (listen, extra) if x)
        text = textwrap.dedent(
            f"""
            admin: {{{inner}}}
            sources: {{up: {{url: "{self.upstream.url}"}}}}
            endpoints: {{e: {{websocket: {{port: {self.port}}}}}}}
            routes:
              r: {{from: up, to: e}}
            """
        )
        return text + routes

    async def start(self, *args: str, env: dict[str, str] | None = None) -> Admin:
        self.main.write_text(self.config())
        self.proc = veylor("-c", str(self.main), "--no-watch", *args, env=env)
        await self.proc.start()
        await self.upstream.wait_connected()
        return self

    def pending_change(self) -> None:
        """An edit a reload would apply (a new route): a reload that happened shows."""
        self.main.write_text(self.config(routes="  r2: {from: up, to: e}\n"))

    async def metrics(self, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple], float]:
        status, text = await http(self.admin, "GET", "/metrics", headers)
        assert status == 200, text
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    async def stop(self) -> None:
        if self.proc is not None:
            await self.proc.stop()


def m(name: str, **labels: str) -> tuple[str, tuple]:
    return (name, tuple(sorted(labels.items())))


def reloads(metrics: dict[tuple[str, tuple], float]) -> tuple[float, float, float]:
    """Reloads ok and failed, and the generation: any reload moves one of them."""
    return (
        metrics[m("veylor_config_reloads_total", result="ok")],
        metrics[m("veylor_config_reloads_total", result="failed")],
        metrics[m("veylor_config_generation")],
    )


def refused(metrics: dict[tuple[str, tuple], float], reason: str) -> float:
    return metrics[m("veylor_admin_refused_total", reason=reason)]


@pytest.fixture
async def admin(tmp_path, upstream):
    made: list[Admin] = []

    def make(extra: str = "") -> Admin:
        made.append(Admin(tmp_path, upstream, extra))
        return made[-1]

    yield make
    for a in made:
        await a.stop()


# ---------------------------------------------------------------------- DNS rebinding


async def test_a_page_under_another_name_gets_no_state_and_no_reload(admin):
    """Was: with ``admin: {listen: "127.0.0.1:9900"}``, a request with ``Host:
    evil.example`` (a page whose name resolves to 127.0.0.1: DNS rebinding, same-origin
    for the browser, which then lets it read answers and send any header) got 200 from
    /graph, /graph?tap=ROUTE (live messages), /metrics and POST /reload (a reload)."""
    a = await admin().start()
    a.pending_change()
    before = await a.metrics()
    evil = ("evil.example", f"evil.example:{a.admin}", f"127.0.0.1.evil.example:{a.admin}")
    asked = 0
    for host in evil:
        for method, path, headers in (
            ("GET", "/graph", {}),
            ("GET", "/graph?tap=r", {}),
            ("GET", "/metrics", {}),
            ("GET", "/readyz", {}),
            ("POST", "/reload", RELOAD),  # same-origin: the page may send any header
            ("POST", "/reload", {"Content-Type": "application/json"}),
        ):
            status, body = await http(a.admin, method, path, headers, host=host)
            asked += 1
            assert status == 421, (host, method, path, status, body)
            assert json.loads(body)["refused"] == "host"
            assert "generation" not in body and "sources" not in body and "veylor_" not in body
    after = await a.metrics()
    assert reloads(after) == reloads(before), "a refused request reloaded Veylor"
    assert refused(after, "host") == refused(before, "host") + asked
    # Logged, not once per request: a page can send thousands.
    assert 1 <= sum("admin: refused" in line for line in a.proc.lines) <= 2, a.proc.log
    assert "evil.example" in a.proc.log
    # Its own names are answered, with any port (a forwarded one too) or none.
    for host in ("127.0.0.1", f"127.0.0.1:{a.admin}", "localhost", f"LOCALHOST:{a.admin}", "localhost.:1"):
        assert (await http(a.admin, "GET", "/metrics", host=host))[0] == 200, host
    # The pending change was real: a reload with a right Host applies it.
    status, body = await http(a.admin, "POST", "/reload", RELOAD)
    assert status == 200 and json.loads(body)["applied"], body


async def test_a_name_in_allowed_hosts_is_answered_and_a_reload_changes_the_list(admin):
    """A name Prometheus (or a proxy) reaches the admin endpoint by is listed in
    ``admin.allowed_hosts``; a reload changes the list in place, on the same listener."""
    a = await admin("allowed_hosts: [veylor.internal]").start()
    assert (await http(a.admin, "GET", "/metrics", host=f"veylor.internal:{a.admin}"))[0] == 200
    assert (await http(a.admin, "GET", "/metrics", host="VEYLOR.internal."))[0] == 200
    assert (await http(a.admin, "GET", "/metrics", host="prom.internal"))[0] == 421
    a.main.write_text(a.config(admin="allowed_hosts: [prom.internal]"))
    status, body = await http(a.admin, "POST", "/reload", RELOAD)
    assert status == 200, body
    assert f"~ admin http://127.0.0.1:{a.admin}: allowed_hosts prom.internal" in json.loads(body)["changes"]
    assert (await http(a.admin, "GET", "/metrics", host="prom.internal"))[0] == 200
    assert (await http(a.admin, "GET", "/metrics", host="veylor.internal"))[0] == 421


# ---------------------------------------------------------------------- cross-site requests


async def test_a_cross_site_form_post_does_not_reload(admin):
    """Was: a form on any web site (``Content-Type: text/plain``, ``Origin:
    http://evil.example``) posted to /reload reloaded Veylor. Now a request from a web
    page (Origin, Sec-Fetch-Site cross-site or same-site) is refused, and POST /reload
    needs X-Veylor-Reload or a JSON Content-Type, which no form can send."""
    a = await admin().start()
    a.pending_change()
    before = await a.metrics()
    posts = [
        FORM,  # a form on another site, as a browser sends it
        {"Content-Type": "text/plain"},  # the same, from a browser that sends no Origin
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {},  # fetch(url, {method: "POST", mode: "no-cors"}) without a body
        {"Origin": "null", **RELOAD},  # a sandboxed page that somehow got a preflight through
        {"Sec-Fetch-Site": "cross-site", **RELOAD},
        {"Sec-Fetch-Site": "same-site", **RELOAD},  # another port of this host: another origin
    ]
    for headers in posts:
        status, body = await http(a.admin, "POST", "/reload", headers, body=b'{"a": 1}')
        assert status == 403, (headers, status, body)
    after = await a.metrics()
    assert reloads(after) == reloads(before), "a form reloaded Veylor"
    assert refused(after, "origin") - refused(before, "origin") == 4
    assert refused(after, "form") - refused(before, "form") == 4
    # What Veylor's own clients send is accepted: the header, or a JSON body.
    status, body = await http(a.admin, "POST", "/reload?dry_run=1", {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["changes"], body
    status, body = await http(a.admin, "POST", "/reload", RELOAD)
    assert status == 200 and json.loads(body)["applied"], body


async def test_web_pages_get_no_state_but_prometheus_and_the_address_bar_do(admin):
    """Was: a page on any site could make the browser ask /graph?tap=ROUTE (a tap shows
    messages) or /metrics, with an ``<img>`` or a no-cors fetch. Now what carries Origin
    or Sec-Fetch-Site cross-site or same-site gets 403; Prometheus (neither header), a
    browser's address bar (Sec-Fetch-Site: none) and /healthz are answered."""
    a = await admin().start()
    for path in ("/graph", "/graph?tap=r", "/metrics", "/readyz"):
        for headers in (
            {"Origin": "http://evil.example"},
            {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"},
            {"Sec-Fetch-Site": "same-site"},
        ):
            status, body = await http(a.admin, "GET", path, headers)
            assert status == 403 and json.loads(body)["refused"] == "origin", (path, headers, body)
    prometheus = {
        "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
        "User-Agent": "Prometheus/2.53.0",
        "X-Prometheus-Scrape-Timeout-Seconds": "10",
    }
    typed = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-User": "?1"}
    for headers in (prometheus, typed, {"Sec-Fetch-Site": "same-origin"}):
        assert (await http(a.admin, "GET", "/metrics", headers))[0] == 200, headers
        assert (await http(a.admin, "GET", "/graph?tap=r", headers))[0] == 200, headers
    assert (await http(a.admin, "GET", "/healthz", {"Origin": "http://evil.example"}))[0] == 200
    assert refused(await a.metrics(), "origin") == 12


# ---------------------------------------------------------------------- token, read_only


async def test_admin_token_is_required_counted_and_never_logged(admin, tmp_path):
    """``admin: {auth: {tokens_file}}``: every request but /healthz needs ``Authorization:
    Bearer TOKEN`` (401 otherwise, counted as no_token or token); /readyz without a token
    answers the verdict only (a probe); no token reaches the log."""
    tokens = tmp_path / "admin.tokens"
    tokens.write_text(f"# admin\n{TOKEN}\n")
    os.chmod(tokens, 0o600)
    a = await admin(f'auth: {{tokens_file: "{tokens}"}}').start()
    a.pending_change()
    good = {"Authorization": f"Bearer {TOKEN}"}
    wrong = {"Authorization": f"Bearer {WRONG}"}
    for method, path, headers in (
        ("GET", "/graph", {}),
        ("GET", "/graph?tap=r", {}),
        ("GET", "/metrics", {}),
        ("POST", "/reload", RELOAD),
        ("GET", "/metrics", {"Authorization": f"Basic {TOKEN}"}),
    ):
        status, body = await http(a.admin, method, path, headers)
        assert status == 401 and json.loads(body)["refused"] == "no_token", (path, body)
    for method, path, headers in (("GET", "/metrics", wrong), ("POST", "/reload", {**wrong, **RELOAD})):
        status, body = await http(a.admin, method, path, headers)
        assert status == 401 and json.loads(body)["refused"] == "token", (path, body)
    assert (await http(a.admin, "GET", "/readyz", wrong))[0] == 401
    metrics = await a.metrics(good)
    assert refused(metrics, "no_token") == 5 and refused(metrics, "token") == 3
    assert reloads(metrics)[2] == 1, "a request without the token reloaded Veylor"
    assert (await http(a.admin, "GET", "/healthz"))[0] == 200
    status, body = await http(a.admin, "GET", "/readyz")
    assert status == 200 and json.loads(body) == {"ready": True}
    status, body = await http(a.admin, "GET", "/readyz", good)
    assert status == 200 and "last_reload" in json.loads(body)
    status, body = await http(a.admin, "GET", "/graph", {"authorization": f"bearer {TOKEN}"})
    assert status == 200 and "sources" in json.loads(body)
    status, body = await http(a.admin, "POST", "/reload", {**good, **RELOAD})
    assert status == 200 and json.loads(body)["applied"], body
    # A token removed from the file is refused after the reload that reads it.
    tokens.write_text(f"{WRONG}\n")
    assert (await http(a.admin, "POST", "/reload", {**good, **RELOAD}))[0] == 200
    assert (await http(a.admin, "GET", "/metrics", good))[0] == 401
    assert (await http(a.admin, "GET", "/metrics", wrong))[0] == 200
    await asyncio.sleep(0.2)
    assert TOKEN not in a.proc.log and WRONG not in a.proc.log


@pytest.mark.slow  # (a dozen veylor processes: 11 s)
async def test_veylor_cli_sends_the_admin_token_from_a_file_the_environment_or_the_config(admin, tmp_path):
    """``veylor reload|status|health`` against an admin endpoint with auth: the token of
    ``--token-file``, else ``$VEYLOR_ADMIN_TOKEN``, else the configuration's own (the
    unit's ExecReload= has nothing to add); without one, exit 2 saying what to give."""
    tokens = tmp_path / "admin.tokens"
    tokens.write_text(TOKEN + "\n")
    os.chmod(tokens, 0o600)
    mine = tmp_path / "my.token"
    mine.write_text(TOKEN + "\n")
    a = await admin(f'auth: {{tokens_file: "{tokens}"}}').start()
    url = f"http://127.0.0.1:{a.admin}"
    no_env = {"VEYLOR_ADMIN_TOKEN": ""}

    def cli(*args: str, env: dict[str, str] | None = None):
        return asyncio.to_thread(run_veylor, *args, env={**no_env, **(env or {})})

    refused_ = await cli("status", "--json", "--admin", url)
    assert refused_.returncode == 2
    assert "HTTP 401" in refused_.stderr and "--token-file" in refused_.stderr, refused_.stderr
    wrong = await cli("status", "--json", "--admin", url, env={"VEYLOR_ADMIN_TOKEN": WRONG})
    assert wrong.returncode == 2 and "wrong token" in wrong.stderr and WRONG not in wrong.stderr
    missing = await cli("status", "--admin", url, "--token-file", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "--token-file" in missing.stderr

    status = await cli("status", "--json", "--admin", url, "--token-file", str(mine))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["sources"]["up"]["state"] == "connected"
    a.pending_change()
    reload = await cli("reload", "--admin", url, env={"VEYLOR_ADMIN_TOKEN": TOKEN})
    assert reload.returncode == 0, reload.stderr
    assert "Reloaded: generation 2" in reload.stdout and "+ route r2" in reload.stdout
    # -c CONFIG: the configuration's own token, when this user can read it.
    again = await cli("reload", "-c", str(a.main))
    assert again.returncode == 0 and "No changes" in again.stdout, again.stderr
    text = await cli("status", "-c", str(a.main))
    assert text.returncode == 0 and "generation 2" in text.stdout, text.stderr
    health = await cli("health", "--admin", url)  # /healthz needs no token
    assert health.returncode == 0, health.stderr
    # The TUI's reader (veylor top) sends it too.
    from veylor.observe.client import target
    from veylor.tui.reader import OverHttp, Unavailable

    reader = OverHttp(target(None, url), TOKEN)
    try:
        assert (await reader.read())["config"]["generation"] == 2
        assert (await reader.reload())["ok"]
    finally:
        await reader.close()
    anonymous = OverHttp(target(None, url))
    try:
        with pytest.raises(Unavailable, match="401"):
            await anonymous.read()
    finally:
        await anonymous.close()


async def test_read_only_refuses_reloads_and_taps(admin):
    """``admin: {read_only: true}``: POST /reload and taps (/graph?tap=, which show
    messages) get 403 saying why; state and metrics are served."""
    a = await admin("read_only: true").start()
    a.pending_change()
    for method, path, headers in (
        ("POST", "/reload", RELOAD),
        ("POST", "/reload?dry_run=1", RELOAD),
        ("GET", "/graph?tap=r", {}),
        ("GET", "/graph?clients=&tap=r", {}),
    ):
        status, body = await http(a.admin, method, path, headers)
        assert status == 403, (path, body)
        assert json.loads(body)["refused"] == "read_only" and "read_only" in json.loads(body)["error"]
    status, body = await http(a.admin, "GET", "/graph?tap=")
    assert status == 200 and "tap" not in json.loads(body)
    metrics = await a.metrics()
    assert reloads(metrics)[2] == 1 and refused(metrics, "read_only") == 4
    result = await asyncio.to_thread(run_veylor, "reload", "-c", str(a.main))
    assert result.returncode == 2 and "read_only" in result.stderr, result.stderr


# ---------------------------------------------------------------------- Unix socket


async def test_a_unix_socket_admin_keeps_its_mode_as_the_gate(admin, tmp_path):
    """On a Unix socket no browser can connect: any Host is answered (curl
    --unix-socket http://x/... keeps working), and ``veylor reload|status|health`` work
    through it, with a token when auth is on. A request from a web page (bridged there
    by a proxy) is still refused."""
    sock = tmp_path / "admin.sock"
    a = await admin(f'unix: "{sock}", mode: "0600", auth: {{tokens: ["{TOKEN}"]}}').start()
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    good = {"Authorization": f"Bearer {TOKEN}"}
    for host in ("veylor", "x", "evil.example", "localhost"):
        assert (await http(sock, "GET", "/metrics", good, host=host))[0] == 200, host
    assert (await http(sock, "GET", "/metrics", {**good, "Origin": "http://evil.example"}))[0] == 403
    assert (await http(sock, "POST", "/reload", {**good, **FORM}))[0] == 403
    assert (await http(sock, "GET", "/metrics"))[0] == 401
    env = {"VEYLOR_ADMIN_TOKEN": TOKEN}
    a.pending_change()
    reload = await asyncio.to_thread(run_veylor, "reload", "--admin", f"unix:{sock}", env=env)
    assert reload.returncode == 0 and "Reloaded: generation 2" in reload.stdout, reload.stderr
    status = await asyncio.to_thread(run_veylor, "status", "-c", str(a.main), env={"VEYLOR_ADMIN_TOKEN": ""})
    assert status.returncode == 0 and "generation 2" in status.stdout, status.stderr
    health = await asyncio.to_thread(run_veylor, "health", "-c", str(a.main))
    assert health.returncode == 0, health.stderr
