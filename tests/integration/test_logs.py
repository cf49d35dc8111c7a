"""What reaches the log: no secret at any level, and a volume an operator can read.

Veylor runs as a real process (``python -m veylor``); its whole standard error is
searched.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import pytest
from helpers import Upstream, VeylorProcess, eventually, free_port, ws_client

from veylor.observe.logs import SECRETS, RedactingFormatter, Secrets, WebsocketsRedactor

pytestmark = pytest.mark.timeout(60)

SECRET_ENV = {
    "TOKEN": "s3cr3t-token",
    "APIKEY": "apikey-value-42",
    "ONCONNECT": "on-connect-secret",
    "URLPASS": "url-password-7",
    "QUERYSECRET": "query-secret-9",
}


def secret_config(up: Upstream, port: int) -> str:
    return f"""
sources:
  feed:
    url: ws://127.0.0.1:{up.port}/feed
    headers: {{Authorization: "Bearer ${{TOKEN}}", X-Api-Key: "${{APIKEY}}"}}
    on_connect:
      - {{op: auth, key: "${{ONCONNECT}}"}}
    reconnect: {{initial_delay: 0.1, max_delay: 0.2}}
  creds:
    url: "ws://user:${{URLPASS}}@127.0.0.1:{up.port}/creds?apikey=${{QUERYSECRET}}&x=1"
    reconnect: {{initial_delay: 0.1, max_delay: 0.2}}
  down:
    url: "ws://user:${{URLPASS}}@127.0.0.1:{free_port()}/closed?token=${{QUERYSECRET}}"
    reconnect: {{initial_delay: 0.1, max_delay: 0.2}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}
routes:
  r: {{from: feed, to: ws, upstream: true}}
  r2: {{from: creds, to: ws}}
  r3: {{from: down, to: ws}}
"""


@pytest.mark.parametrize("flags", [[], ["-v"], ["-vv", "--trace-frames"]])
async def test_no_secret_reaches_the_log_at_any_level(tmp_path, flags):
    up = await Upstream().start()
    port = free_port()
    (tmp_path / "config.yaml").write_text(secret_config(up, port))
    proc = VeylorProcess(*flags, "-c", str(tmp_path / "config.yaml"), "--no-watch", env=SECRET_ENV)
    try:
        await proc.start()
        await up.wait_connected(2)
        await eventually(lambda: len(up.received) >= 1, what="on_connect")
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        await client.send(f"client says {SECRET_ENV['TOKEN']}")  # a secret echoed by a client is masked too
        await up.send("tick 1")
        assert await asyncio.wait_for(client.recv(), 5) == "tick 1"
        await eventually(lambda: len(up.received) >= 2, what="client message upstream")
        await up.stop(abort=True)  # disconnect and reconnect paths log URLs and errors
        await asyncio.sleep(0.5)
        await client.close()
        proc.signal(signal.SIGTERM)
        assert await proc.wait() == 0
    finally:
        await proc.stop()
        await up.stop()
    log = proc.log
    # The upstream really got the secrets: the test exercises the paths that carry them.
    assert any(h.get("authorization") == "Bearer s3cr3t-token" for h in up.headers)
    assert '"key":"on-connect-secret"' in up.received[0]
    for name, value in SECRET_ENV.items():
        assert value not in log, f"{name} leaked with {flags}:\n{log}"
    if "-vv" in flags:
        assert "Authorization: ***" in log  # the handshake is logged, its value masked
        assert "X-Api-Key: ***" in log
        assert "payload not logged" in log  # on_connect frame in the protocol trace
    if "--trace-frames" in flags:
        assert "on_connect message 1" in log
        assert "source feed < text 6 bytes: tick 1" in log
        assert "client says ***" in log
    else:
        assert "tick 1" not in log  # frames are not logged without --trace-frames


async def test_verbose_does_not_log_every_frame(tmp_path):
    """-v is Veylor's own detail; frames need --trace-frames."""
    up = await Upstream().start()
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        f"""
sources:
  feed: {{url: "{up.url}"}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}
routes:
  r: {{from: feed, to: ws}}
"""
    )
    proc = VeylorProcess("-v", "-c", str(tmp_path / "config.yaml"), "--no-watch")
    try:
        await proc.start()
        await up.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        await eventually(lambda: "client 127.0.0.1" in proc.log, what="client connected line")
        for i in range(200):
            await up.send(f"message-{i}")
        for _ in range(200):
            await asyncio.wait_for(client.recv(), 5)
        await client.close()
        proc.signal(signal.SIGTERM)
        await proc.wait()
    finally:
        await proc.stop()
        await up.stop()
    assert "message-1" not in proc.log
    assert len(proc.lines) < 40, proc.log


async def test_many_failing_sources_log_a_few_lines_each(tmp_path):
    """200 sources that cannot connect, retried every 0.05-0.1 s for 3 s: the first failure
    of each is logged, the rest is summarized (at most once a minute): not 30 lines each."""
    n = 200
    closed = free_port()
    sources = "".join(
        f"  s{i}: {{url: 'ws://127.0.0.1:{closed}/{i}', reconnect: {{initial_delay: 0.05, max_delay: 0.1}}}}\n"
        for i in range(n)
    )
    routes = "".join(f"  r{i}: {{from: s{i}, to: ws}}\n" for i in range(n))
    (tmp_path / "config.yaml").write_text(
        f"sources:\n{sources}endpoints:\n  ws: {{websocket: {{port: {free_port()}}}}}\nroutes:\n{routes}"
    )
    proc = VeylorProcess("-c", str(tmp_path / "config.yaml"), "--no-watch")
    try:
        await proc.start()
        await asyncio.sleep(3)
        proc.signal(signal.SIGTERM)
        await proc.wait()
    finally:
        await proc.stop()
    per_source = [line for line in proc.lines if "source s1:" in line]
    assert len(per_source) == 2, per_source  # "connecting to", "cannot connect ... retrying"
    assert len(proc.lines) <= 2 * n + 20, f"{len(proc.lines)} lines"


# ------------------------------------------------------------------ the formatter, directly


def test_redacting_formatter_masks_known_values_in_messages_and_tracebacks():
    secrets = Secrets()
    secrets.update(["hunter2-pass", "abc"])  # too short to mask by value: masked by structure only
    assert secrets.mask("login with hunter2-pass now") == "login with *** now"
    assert "abc" not in secrets
    SECRETS.update(["tb-secret-value"])
    fmt = RedactingFormatter("%(message)s")
    try:
        raise ValueError("failed with tb-secret-value")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "oops", (), sys.exc_info())
    text = fmt.format(record)
    assert "tb-secret-value" not in text and "failed with ***" in text


def test_websockets_header_lines_are_masked_except_harmless_ones():
    redactor = WebsocketsRedactor()

    def run(msg: str, *args: object) -> str:
        record = logging.LogRecord("veylor.websockets.upstream", logging.DEBUG, __file__, 1, msg, args, None)
        redactor.filter(record)
        return record.getMessage()

    assert run("> %s: %s", "Authorization", "Bearer x") == "> Authorization: ***"
    assert run("> %s: %s", "Cookie", "a=b") == "> Cookie: ***"
    assert run("> %s: %s", "Host", "127.0.0.1:1") == "> Host: 127.0.0.1:1"
    assert run("< GET %s HTTP/1.1", "/feed?token=abc&x=1") == "< GET /feed?token=***&x=1 HTTP/1.1"


def test_no_secret_in_the_problems_of_an_invalid_configuration(tmp_path):
    """Problems are printed (and logged) before any secret is known to the formatter: the
    values of headers and on_connect messages are not shown, URLs are shown masked."""
    from conftest import run_veylor

    (tmp_path / "config.yaml").write_text(
        """
sources:
  s:
    url: "https://user:SEKRETPW1234@example.com/ws?token=SEKRETQ1234"
    headers: {X-Api-Key: 987654321012, Authorization: [Bearer SEKRETLIST1]}
    on_connect: '{"op":"auth","key":"SEKRETOC1234"}'
  t: {url: "wss://example.com/ws?token=SEKRET TOKEN5678#frag"}
  u: {url: "ws://SEKRETUSER1234@[::1/ws"}
endpoints:
  e: {websocket: {port: 18001}}
routes:
  r: {from: s, to: e}
  r2: {from: t, to: e}
  r3: {from: u, to: e}
"""
    )
    secrets = ("SEKRET", "987654321012")
    for args in (["check"], ["check", "--json"], []):
        result = run_veylor(*args, "-c", str(tmp_path / "config.yaml"))
        assert result.returncode == 1
        out = result.stdout + result.stderr
        assert "problem" in out
        for secret in secrets:
            assert secret not in out, (args, out)
    text = run_veylor("check", "-c", str(tmp_path / "config.yaml")).stderr
    assert "expected a string, got a number (not shown: it may be a secret)" in text
    assert "'https://***@example.com/ws?token=***' is not a ws:// or wss:// URL" in text
