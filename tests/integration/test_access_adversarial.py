"""The access-control feature attacked: hostile handshakes, abuse of the pending-handshake
cap and timeout, token leaks, large token sets, certificate and tokens-file tricks,
client messages over their rate. Real sockets and processes on 127.0.0.1 and temporary
Unix paths.

Tests that fail show a bug (see each docstring); the others pin what held up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
from helpers import (
    UnixClient,
    Upstream,
    VeylorProcess,
    can_drop_file_permissions,
    eventually,
    free_port,
    make_ca,
    make_cert,
    raw_handshake,
    veylor_inprocess,
    ws_client,
)
from test_access import _config
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from veylor.config import ConfigError, load_config
from veylor.graph import build_graph

pytestmark = pytest.mark.timeout(60)

TOKEN_A = "A" * 8 + "-adversarial-token-A-0123456789"
TOKEN_B = "B" * 8 + "-adversarial-token-B-0123456789"
WRONG = "Z" * 8 + "-a-wrong-but-real-looking-token"


async def _status(port: int, request: bytes, timeout: float = 5.0) -> int:
    """Send a raw handshake request; the HTTP status of the answer (0: closed without one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0
    finally:
        writer.transport.abort()


def _request(path: str = "/", *headers: str, version: str = "HTTP/1.1") -> bytes:
    extra = "".join(h + "\r\n" for h in headers)
    return (
        f"GET {path} {version}\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode("latin-1")


def _self_signed(where: Path, name: str) -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1 (its own CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=veylor {name}",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=where, check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return where / f"{name}.pem", where / f"{name}.key"


def _trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def _is_open(sock: socket.socket) -> bool:
    """Whether the server still holds this connection (nothing to read, no EOF, no reset)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- the pending-handshake cap


async def test_tls_connections_that_never_handshake_count_against_max_pending(tmp_path: Path) -> None:
    """Was a bug. ``max_pending`` counts a connection from ``connection_made``, which asyncio
    (and uvloop) call only once the TLS handshake is over: on a wss:// port, connections
    that never send a ClientHello are not counted at all. Nothing is "closed at once"
    beyond ``max_pending``; each is held until ``ssl_handshake_timeout``, so an
    attacker can hold as many file descriptors as it can open connections (the
    Limits table then: "256 accepted whose handshake is in progress (more are closed at once)")."""
    cert, key = _self_signed(tmp_path / "pki", "server")
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"""
    websocket:
      port: {port}
      tls: {{cert: "{cert}", key: "{key}"}}
      max_pending: 2
      handshake_timeout: 4
    """
    socks: list[socket.socket] = []
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
            for _ in range(20):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            await asyncio.sleep(1.0)  # well within handshake_timeout, well after "at once"
            still_open = sum(_is_open(s) for s in socks)
            listener = rt.listeners[("websocket", "127.0.0.1", port, "tls")]
            assert still_open <= 2, (
                f"{still_open} of 20 silent TLS connections are held (max_pending 2; the listener "
                f"counts {listener.pending} pending)"
            )
    finally:
        for s in socks:
            s.close()
        await upstream.stop()


async def test_handshake_timeout_counts_the_tls_handshake_too(tmp_path: Path) -> None:
    """Was a bug. The handshake timer starts in ``connection_made``, after the TLS handshake,
    which has its own ``ssl_handshake_timeout``: a client may take up to twice
    ``handshake_timeout`` (and, after a reload that lowers it, the TLS part keeps the value
    the port was bound with). docs/operations.md, Limits: "10 s from its TCP connection to its request (TLS
    included)". Here: TLS done at 1.6 s of a 2 s timeout, then silence; the connection
    is still held at 3 s."""
    cert, key = _self_signed(tmp_path / "pki", "server")
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"""
    websocket:
      port: {port}
      tls: {{cert: "{cert}", key: "{key}"}}
      handshake_timeout: 2
    """

    def slow_client() -> bool:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        began = time.monotonic()
        try:
            time.sleep(1.6)
            tls = _trusting(cert).wrap_socket(raw, server_hostname="127.0.0.1")
            time.sleep(max(0.0, 3.0 - (time.monotonic() - began)))
            tls.settimeout(0.05)
            try:
                return tls.recv(1) != b""
            except TimeoutError:
                return True  # nothing, not even an EOF: still held
            except (ssl.SSLError, OSError):
                return False
        finally:
            raw.close()

    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)):
            held = await asyncio.to_thread(slow_client)
            assert not held, "a client that sent no request was still connected 3 s after its TCP connect"
    finally:
        await upstream.stop()


async def _half_requests(port: int, source: str, n: int, into: list[socket.socket]) -> None:
    """``n`` connections from ``source`` (a loopback address) that each send half a
    handshake request (a slowloris: the rest never comes)."""
    loop = asyncio.get_running_loop()
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((source, 0))
            await loop.sock_connect(s, ("127.0.0.1", port))
            await loop.sock_sendall(s, raw_handshake("/")[:60])
        except OSError:
            s.close()
            continue
        into.append(s)


async def _trickle(socks: list[socket.socket], stop: asyncio.Event) -> None:
    """A byte to each attacker every half second, as a slowloris keeps its requests alive."""
    while not stop.is_set():
        for s in socks:
            with contextlib.suppress(OSError):
                s.send(b"X")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def test_a_slowloris_cannot_lock_a_fresh_client_out(tmp_path: Path) -> None:
    """Was a bug (issue 22, 8). With ``max_pending`` slots held by connections that never
    finish their request, every new connection was closed at once, for as long as the
    attack went on: a few hundred idle sockets from one address denied service to
    everyone. Now one source holds at most ``max_pending_per_ip`` (16) pending handshakes,
    more are closed at once; and at ``max_pending`` a new connection closes the oldest
    pending one instead of being refused. Here 1,000 half requests from 127.0.0.2 and 300
    more from 20 other loopback addresses, all trickling a byte every half second; fresh
    clients from 127.0.0.1 each complete their handshake within 1 s."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"needs 4,096 file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))  # (Veylor inherits it)
    upstream = await Upstream().start()
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(_config(upstream, f"websocket: {{port: {port}}}")))
    veylor = await VeylorProcess("-c", str(config)).start()
    attackers: list[socket.socket] = []
    stop = asyncio.Event()
    trickling = asyncio.create_task(_trickle(attackers, stop))
    try:
        await _half_requests(port, "127.0.0.2", 1000, attackers)
        for i in range(20):
            await _half_requests(port, f"127.0.0.{3 + i}", 15, attackers)
        await asyncio.sleep(0.3)  # every one of them accepted, and counted or closed
        for _ in range(5):
            began = time.monotonic()
            try:
                client = await connect(f"ws://127.0.0.1:{port}/", open_timeout=2, compression=None)
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                raise AssertionError(
                    f"a fresh client could not connect during the attack: {type(exc).__name__}: {exc}"
                ) from None
            took = time.monotonic() - began
            await client.close()
            assert took < 1.0, f"a fresh client's handshake took {took:.2f} s"
        await veylor.wait_for("max_pending_per_ip")
        await veylor.wait_for("to make room for a new connection")
    finally:
        stop.set()
        await trickling
        for s in attackers:
            s.close()
        await veylor.stop()
        await upstream.stop()


async def test_one_address_may_take_free_pending_slots_but_never_anothers(tmp_path: Path) -> None:
    """A burst of clients behind one address (a fleet reconnecting after a restart, a load
    test) must not be refused while slots are free: ``max_pending_per_ip`` applies only
    once ``max_pending`` are in progress, where a newcomer from a source that has that
    many is refused, and one from another source closes the oldest."""
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"websocket: {{port: {port}, max_pending: 40, max_pending_per_ip: 4}}"
    socks: list[socket.socket] = []
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
            listener = rt.listeners[("websocket", "127.0.0.1", port)]
            ep = rt.stats.endpoint("ep")
            await _half_requests(port, "127.0.0.2", 40, socks)
            await eventually(lambda: listener.pending == 40, what="40 pending from one address")
            assert ep.refused_pending == 0 and ep.pending_evicted == 0
            await _half_requests(port, "127.0.0.2", 1, socks)  # full, and its source has 40 of them
            await eventually(lambda: ep.refused_pending == 1, what="the newcomer refused")
            await eventually(lambda: not _is_open(socks[-1]), what="the newcomer closed")
            assert _is_open(socks[0])
            await _half_requests(port, "127.0.0.3", 1, socks)  # another source: the oldest goes
            await eventually(lambda: ep.pending_evicted == 1, what="the oldest counted")
            await eventually(lambda: not _is_open(socks[0]), what="the oldest closed")
            assert _is_open(socks[1]) and _is_open(socks[-1])
            assert listener.pending == 40 and ep.refused_pending == 1
    finally:
        for s in socks:
            s.close()
        await upstream.stop()


def test_pending_handshakes_are_counted_by_ipv4_address_and_ipv6_slash_64() -> None:
    """One IPv6 host commonly holds a whole /64: counted by address, it would take every
    slot; an IPv4-mapped address is the IPv4 address."""
    from veylor.runtime.downstream import source_of

    def source(host: str) -> object:
        return source_of(types.SimpleNamespace(get_extra_info=lambda name: (host, 40000)))  # type: ignore[arg-type]

    assert source("192.0.2.1") == "192.0.2.1" != source("192.0.2.2")
    assert source("2001:db8:1:2::1") == source("2001:db8:1:2:ffff::9") == source("2001:db8:1:2::1%eth0")
    assert source("2001:db8:1:2::1") != source("2001:db8:1:3::1")
    assert source("::ffff:192.0.2.1") == "192.0.2.1"


# ---------------------------------------------------------------- client messages upstream


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_a_client_over_its_rate_does_not_make_veylor_decode_what_it_drops(tmp_path: Path) -> None:
    """Was a bug. ``from_client`` runs a route's ``allow`` filters before the client's token
    bucket: every message of a client far over its rate is still JSON-decoded on the
    event loop (a 1 MiB array of small numbers: about 50 ms each), to be dropped
    afterwards. One client over ``rate: 1`` makes the relay spend a CPU-second per
    20 messages it sends, stalling every other client for 50 ms per message ("A client
    over its rate does not slow anyone else"). The same flood against a route with the
    same rate and no ``allow`` is the yardstick."""
    upstream = await Upstream().start()
    plain, filtered = free_port(), free_port()
    allow = "allow: [{json: {path: op, in: [subscribe]}}], "
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(f"""
        sources:
          feed: {{url: "{upstream.url}"}}
        endpoints:
          plain: {{websocket: {{port: {plain}}}}}
          filtered: {{websocket: {{port: {filtered}}}}}
        routes:
          p: {{from: feed, to: plain, upstream: {{rate: 1, burst: 1}}}}
          f: {{from: feed, to: filtered, upstream: {{{allow}rate: 1, burst: 1}}}}
        """)
    )
    big = "[" + ",".join(["1"] * 500_000) + "]"  # 1,000,001 bytes: within max_message_size
    proc = await VeylorProcess("-c", str(tmp_path / "config.yaml")).start()
    assert proc.proc is not None
    try:
        await upstream.wait_connected()

        async def flood(port: int, n: int = 25) -> float:
            client = await ws_client(f"ws://127.0.0.1:{port}/", max_size=None)
            before = _cpu_seconds(proc.proc.pid)
            for _ in range(n):
                await client.send(big)
            marker = f'{{"op": "subscribe", "port": {port}}}'
            for _ in range(20):  # once the flood is processed and the bucket refilled, one goes
                await asyncio.sleep(1.1)
                await client.send(marker)
                with contextlib.suppress(AssertionError):
                    await eventually(lambda: marker in upstream.received, timeout=1, what="the marker")
                    break
            assert marker in upstream.received
            spent = _cpu_seconds(proc.proc.pid) - before
            await client.close()
            return spent

        baseline = await flood(plain)
        with_allow = await flood(filtered)
        assert with_allow < 2 * baseline + 0.4, (
            f"25 over-rate messages cost {with_allow:.2f} CPU-s with an allow filter, {baseline:.2f} without"
        )
    finally:
        await proc.stop()
        await upstream.stop()


# ---------------------------------------------------------------- many tokens


def _tokens_of_many_lengths(n: int, longest: int) -> list[str]:
    """Tokens as a file of several generations and tools may hold them: every length
    from 16 to ``longest`` (``openssl rand -base64``, uuids, named keys...), none
    common enough (more than 64) to be looked up by length."""
    return [secrets.token_urlsafe(longest)[: 16 + i % (longest - 15)] for i in range(n)]


def _named_tokens(n: int) -> list[str]:
    """Tokens named after their client: ``<client>-<hex>``, client names of 1 to 40
    characters: some 400 tokens of each of 40 lengths."""
    rng = random.Random(n)
    return [f"{'c' * rng.randint(1, 40)}-{secrets.token_hex(16)}" for _ in range(n)]


@contextlib.contextmanager
def _secrets_restored():
    """Tests here load the log masker with thousands of tokens: leave it empty after."""
    from veylor.observe.logs import SECRETS

    SECRETS.update(())
    SECRETS.update(())
    try:
        yield SECRETS
    finally:
        SECRETS.update(())
        SECRETS.update(())


@pytest.mark.latency
async def test_reloading_a_changed_tokens_file_does_not_pause_the_event_loop(tmp_path: Path) -> None:
    """Was a bug. A reload rebuilds the log masker (``remember()`` -> ``Secrets.update``) in
    the loader's worker thread; tokens of one length that number more than 64 are looked
    up in a set, but all others still join one RE2 alternation, and ``re2.compile``
    holds the GIL: the event loop cannot run meanwhile. 6,000 tokens of lengths 16 to
    265 (850 KB, under the 1 MiB limit): replacing one froze the loop for about 450 ms.
    docs/operations.md: "A reload never pauses delivery" (no gap over 20 ms)."""
    from veylor.reload import Reloader

    upstream = await Upstream().start()
    port = free_port()
    tokens = _tokens_of_many_lengths(6_000, 265)
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("\n".join(tokens) + "\n")
    tokens_file.chmod(0o600)
    endpoint = f"websocket: {{port: {port}, auth: {{tokens_file: tokens}}}}"
    with _secrets_restored():
        try:
            async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
                path = tmp_path / "config.yaml"
                reloader = Reloader(str(path), rt, load_config(path, env={}), watch="off", env={})
                await reloader.reload("warm up")  # the running configuration's secrets are known
                stop = asyncio.Event()
                gaps: list[float] = []

                async def ticker() -> None:
                    loop = asyncio.get_running_loop()
                    last = loop.time()
                    while not stop.is_set():
                        await asyncio.sleep(0.002)
                        now = loop.time()
                        gaps.append(now - last)
                        last = now

                tick = asyncio.create_task(ticker())
                await asyncio.sleep(0.05)
                rotated = [*tokens[1:], "a-new-token-" + secrets.token_hex(16)]  # one token replaced
                tokens_file.write_text("\n".join(rotated) + "\n")
                outcome = await reloader.reload("rotate one token")
                await asyncio.sleep(0.05)
                stop.set()
                await tick
                assert outcome.applied, outcome
                assert max(gaps) < 0.1, f"the event loop stood still for {max(gaps) * 1000:.0f} ms"
        finally:
            await upstream.stop()


@pytest.mark.latency
@pytest.mark.parametrize("shape", ["one length (hex)", "named (40 lengths)", "lengths 16 to 300"])
async def test_a_404_line_stays_cheap_to_mask_with_a_full_tokens_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, shape: str
) -> None:
    """Was a bug (but for hex tokens of one length). Every line is masked on the event loop.
    Tokens of one length are looked up window by window along each run of non-space
    characters: once per length that has more than 64 tokens; the other tokens join one
    RE2 alternation, which outgrows RE2's DFA. The 404 line holds the request path,
    up to 8 KB, chosen by anyone who can connect, and is logged for every request (see
    the 404 flood test): 15,000 tokens named after their clients make one such line
    cost about 110 ms of the relay's time; tokens of 16 to 300 characters, about 70 ms
    (and 4 ms for any ordinary line)."""
    from veylor.observe.logs import RedactingFormatter, remember

    if shape.startswith("one"):
        tokens = [secrets.token_hex(32) for _ in range(15_000)]
    elif shape.startswith("named"):
        tokens = _named_tokens(15_000)
    else:
        tokens = _tokens_of_many_lengths(6_000, 300)
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("\n".join(tokens) + "\n")
    tokens_file.chmod(0o600)
    assert tokens_file.stat().st_size < 2**20  # within the limit of a tokens file
    caplog.set_level(logging.INFO, "veylor")
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"websocket: {{port: {port}, path: /feed, auth: {{tokens_file: tokens}}}}"
    with _secrets_restored():
        try:
            async with veylor_inprocess(tmp_path, _config(upstream, endpoint)):
                remember(load_config(tmp_path / "config.yaml", env={}))  # as `veylor run` does
                assert await _status(port, _request("/" + "a" * 8000)) == 404
                (record,) = [r for r in caplog.records if "no endpoint at path" in r.getMessage()]
                formatter = RedactingFormatter("%(levelname)s %(name)s: %(message)s")
                assert tokens[7] not in formatter.format(logging.makeLogRecord({"msg": f"x {tokens[7]} y"}))
                formatter.format(record)
                began = time.perf_counter()
                for _ in range(5):
                    formatter.format(record)
                each = (time.perf_counter() - began) / 5
                assert each < 0.01, f"masking one 404 line took {each * 1000:.0f} ms on the event loop"
        finally:
            await upstream.stop()


# ---------------------------------------------------------------- refusals in the log


@pytest.mark.parametrize("refusal", ["wrong token (401)", "unknown path (404)", "max_clients (503)"])
async def test_a_flood_of_refused_handshakes_is_logged_a_few_times_not_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, refusal: str
) -> None:
    """Was a bug (404 and 503). docs/security.md: refusals "are logged at most every 10 s per
    endpoint with a count, so a flood of bad attempts cannot fill the log"; a refusal is
    by "address, path, origin, token, uid". Tokens and origins are throttled; an unknown
    path (404) and a full endpoint (503) log one INFO/WARNING line per attempt, for
    anyone who can open a TCP connection (and each line costs the masker's time, see
    test_a_404_line_stays_cheap_to_mask_with_a_full_tokens_file)."""
    caplog.set_level(logging.INFO, "veylor")
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"""
    websocket: {{port: {port}, path: /feed, auth: {{tokens: ["{TOKEN_A}"]}}}}
    max_clients: 1
    """
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)):
            keeper = await ws_client(f"ws://127.0.0.1:{port}/feed?token={TOKEN_A}")
            if refusal.startswith("wrong"):
                request, expected = _request(f"/feed?token={WRONG}"), 401
            elif refusal.startswith("unknown"):
                request, expected = _request(f"/elsewhere?token={TOKEN_A}"), 404
            else:
                request, expected = _request(f"/feed?token={TOKEN_A}"), 503
            for _ in range(60):
                assert await _status(port, request) == expected
            lines = [r for r in caplog.records if "refused client" in r.getMessage()]
            assert len(lines) <= 3, f"{len(lines)} log lines for 60 refusals: {lines[-1].getMessage()}"
            await keeper.close()
    finally:
        await upstream.stop()


# ---------------------------------------------------------------- tokens in output


def test_check_never_shows_a_token_written_with_the_wrong_type(tmp_path: Path) -> None:
    """Was a bug. The schema's problem messages hide values under ``headers`` and ``on_connect``
    only (``_SECRET_KEYS``), not under ``auth``: a token written as a string instead of
    a list, as a bare number, as the whole ``auth`` value, or taken from the environment
    (``tokens: ${VEYLOR_TOKEN}``: a value that is one reference takes the schema's type,
    here a list) is printed in full by ``veylor check`` and ``--json``. docs/security.md: tokens are
    "never printed by veylor check"."""
    from conftest import run_veylor

    env_token = "env-token-" + secrets.token_hex(8)
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent("""
        sources:
          feed: {url: "wss://example.com/feed"}
        endpoints:
          a: {websocket: {port: 8765, path: /a, auth: {tokens: ${VEYLOR_TOKEN}}}}
          b: {websocket: {port: 8765, path: /b, auth: {tokens: [12345678901234567890123]}}}
          c: {websocket: {port: 8765, path: /c, auth: {tokens: s3cr3t-token-written-as-a-string}}}
          d: {websocket: {port: 8765, path: /d, auth: s3cr3t-token-as-the-whole-auth}}
        routes:
          r: {from: feed, to: [a, b, c, d]}
        """)
    )
    shown = []
    for args in (("check",), ("check", "--json")):
        out = run_veylor(*args, "-c", str(tmp_path / "config.yaml"), env={"VEYLOR_TOKEN": env_token})
        assert out.returncode != 0
        assert "endpoints.a.websocket.auth.tokens" in out.stdout + out.stderr  # located, at least
        text = out.stdout + out.stderr
        for secret in (
            env_token,
            "12345678901234567890123",
            "s3cr3t-token-written-as-a-string",
            "s3cr3t-token-as-the-whole-auth",
        ):
            if secret in text:
                shown.append(f"{' '.join(args)}: {secret}")
    assert not shown, shown


async def test_a_rejected_reload_never_logs_the_new_token(tmp_path: Path) -> None:
    """Was a bug (same cause). A reload rejected because a new token was written as a string
    logs the problem at ERROR with the token in it: the masker knows only the tokens of
    configurations that loaded."""
    upstream = await Upstream().start()
    port = free_port()
    new_token = "new-token-" + secrets.token_hex(12)
    path = tmp_path / "config.yaml"
    good = _config(upstream, f'websocket: {{port: {port}, auth: {{tokens: ["{TOKEN_A}"]}}}}')
    path.write_text(textwrap.dedent(good))
    proc = await VeylorProcess("-c", str(path), "--no-watch").start()
    try:
        path.write_text(textwrap.dedent(good.replace(f'["{TOKEN_A}"]', new_token)))
        proc.signal(signal.SIGHUP)
        await proc.wait_for("rejected", timeout=10)
        await proc.wait_for("auth.tokens", timeout=5)
        proc.signal()
        await proc.wait()
    finally:
        await proc.stop()
        await upstream.stop()
    assert new_token not in proc.log, [line for line in proc.lines if new_token in line]


async def test_vv_never_logs_the_token_of_a_malformed_handshake(tmp_path: Path) -> None:
    """Was a bug. At -vv, websockets logs a request it cannot parse ("! no valid HTTP request")
    with its traceback, whose message holds the raw request line or header value. The
    redactor rewrites only the records it knows (request line, header lines), and the
    masker knows only exact configured tokens: a wrong token (someone's real one, a
    revoked one) or a valid token in another spelling (percent-encoded, which Veylor
    accepts in ``?token=``) is written to the log in full. The well-formed requests of
    test_access.py are masked; these differ by one byte."""
    upstream = await Upstream().start()
    port = free_port()
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(_config(upstream, f'websocket: {{port: {port}, auth: {{tokens: ["{TOKEN_A}"]}}}}'))
    )
    encoded = "%41" + TOKEN_A[1:]  # TOKEN_A, percent-encoded: a valid ?token= (parse_qsl decodes it)
    proc = await VeylorProcess("-c", str(path), "-vv").start()
    try:
        assert await _status(port, _request(f"/?token={encoded}")) == 101  # accepted as TOKEN_A
        await _status(port, _request(f"/?token={WRONG}", version="HTTP/2.0"))
        await _status(port, _request(f"/?token={encoded}", version="HTTP/2.0"))
        await _status(port, _request("/", f"Authorization: Bearer {WRONG}\x01"))
        await proc.wait_for("no valid HTTP request", count=3, timeout=10)
        proc.signal()
        await proc.wait()
    finally:
        await proc.stop()
        await upstream.stop()
    leaked = [line for line in proc.lines if WRONG in line or encoded in line or TOKEN_A in line]
    assert not leaked, leaked


# ---------------------------------------------------------------- certificates


async def _handshake_ok(port: int, ctx: ssl.SSLContext) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"), 5
        )
    except (ssl.SSLError, OSError):
        return False
    writer.transport.abort()
    return True


async def test_garbage_certificate_is_refused_at_reload_and_the_old_one_keeps_serving(
    tmp_path: Path,
) -> None:
    """Held up: a certificate replaced by garbage (or by a certificate whose key is not
    the key file) is refused in the loader with the file and line of ``tls``; the
    listener keeps its context and serves the old certificate."""
    cert, key = _self_signed(tmp_path / "pki", "one")
    other, _other_key = _self_signed(tmp_path / "pki", "two")
    upstream = await Upstream().start()
    port = free_port()
    path = tmp_path / "config.yaml"
    endpoint = f'websocket: {{port: {port}, tls: {{cert: "{cert}", key: "{key}"}}}}'
    ctx = _trusting(cert)
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)):
            assert await _handshake_ok(port, ctx)
            good = cert.read_bytes()
            for bad in (
                b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
                other.read_bytes(),
            ):
                cert.write_bytes(bad)
                with pytest.raises(ConfigError) as err:
                    load_config(path, env={})
                (problem,) = err.value.problems
                assert problem.location.file == str(path) and problem.location.line > 0
                assert "endpoints.ep.websocket.tls" in str(problem)
                assert await _handshake_ok(port, ctx)
            cert.write_bytes(good)
    finally:
        await upstream.stop()


async def test_a_key_changed_between_the_check_and_the_apply_leaves_the_old_certificate_serving(
    tmp_path: Path,
) -> None:
    """Was a bug (a race, but its failure mode is wrong). The loader checks cert and key in its
    thread; the event loop then loads them again from disk into the listener's one
    shared ``SSLContext``. If the files changed in between (a deploy writing the next
    key while a reload runs), ``load_cert_chain`` fails half-way: OpenSSL has already
    replaced the certificate and dropped the old key, so every new TLS handshake fails
    ("no shared cipher"), while the log says "new connections still get the previous
    one"."""
    pki = tmp_path / "pki"
    cert, key = _self_signed(pki, "one")
    cert2, key2 = _self_signed(pki, "two")
    _cert3, key3 = _self_signed(pki, "three")
    upstream = await Upstream().start()
    port = free_port()
    path = tmp_path / "config.yaml"
    endpoint = f'websocket: {{port: {port}, tls: {{cert: "{cert}", key: "{key}"}}}}'
    ctx = _trusting(cert)
    ctx.load_verify_locations(cafile=str(cert2))
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
            assert await _handshake_ok(port, ctx)
            shutil.copy(cert2, cert)
            shutil.copy(key2, key)
            graph = build_graph(load_config(path, env={}))  # what the loader's thread checks
            shutil.copy(key3, key)  # ... and the deploy moves on before the loop applies it
            await rt.apply(graph)
            assert await _handshake_ok(port, ctx), "no new TLS connection can be made any more"
    finally:
        await upstream.stop()


# ---------------------------------------------------------------- tokens files


async def test_a_tokens_file_that_is_a_symlink_is_watched_where_it_points(tmp_path: Path) -> None:
    """Was a bug. The watch covers the directory of each referenced file *as named*
    (``os.path.abspath``, not ``realpath``): a ``tokens_file`` that is a symbolic link to
    a file in another directory (a secrets directory managed elsewhere) is never seen
    to change. Removing a compromised token there revokes nothing until a SIGHUP, while
    a tokens file edited in place is applied at once (test_access.py)."""
    upstream = await Upstream().start()
    port = free_port()
    conf, vault = tmp_path / "conf", tmp_path / "vault"
    conf.mkdir()
    vault.mkdir()
    real = vault / "veylor-tokens"
    real.write_text(f"{TOKEN_A}\n{TOKEN_B}\n")
    real.chmod(0o600)
    (conf / "tokens").symlink_to(real)
    (conf / "config.yaml").write_text(
        textwrap.dedent(_config(upstream, f"websocket: {{port: {port}, auth: {{tokens_file: tokens}}}}"))
    )
    proc = await VeylorProcess("-c", str(conf / "config.yaml")).start()
    try:
        await proc.wait_for("watching")
        a = await ws_client(f"ws://127.0.0.1:{port}/?token={TOKEN_A}")
        b = await ws_client(f"ws://127.0.0.1:{port}/?token={TOKEN_B}")
        await asyncio.sleep(1.5)  # past the watcher's first wake-up, which reloads once anyway
        new = vault / ".veylor-tokens.tmp"
        new.write_text(f"{TOKEN_A}\n")
        new.chmod(0o600)
        new.rename(real)  # written by renaming into place, as docs/operations.md asks
        missed = False
        try:
            await asyncio.wait_for(b.recv(), 5)
        except TimeoutError:
            missed = True  # the watch did not see it: does a SIGHUP apply it?
            proc.signal(signal.SIGHUP)
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(b.recv(), 5)
        except ConnectionClosed:
            pass
        assert b.close_code == 1008
        await a.close()
        assert not missed, "the revocation was applied by SIGHUP only, not by the file watch"
    finally:
        await proc.stop()
        await upstream.stop()


@pytest.mark.parametrize("kind", ["fifo", "symlink to a fifo", "symlink to /dev/zero", "huge", "unreadable"])
def test_a_tokens_file_that_is_not_a_small_regular_file_is_refused_promptly(
    tmp_path: Path, kind: str
) -> None:
    """Held up: a FIFO (no writer: a blocking open would hang the loader), a link to
    one or to a device, a file over 1 MiB, an unreadable file: each refused at once,
    located at ``auth.tokens_file``, no token shown."""
    tokens = tmp_path / "tokens"
    if kind == "fifo":
        os.mkfifo(tokens)
    elif kind == "symlink to a fifo":
        os.mkfifo(tmp_path / "pipe")
        tokens.symlink_to(tmp_path / "pipe")
    elif kind == "symlink to /dev/zero":
        tokens.symlink_to("/dev/zero")
    elif kind == "huge":
        tokens.write_text((TOKEN_A + "\n") * (2**20 // len(TOKEN_A) + 10))
        tokens.chmod(0o600)
    else:
        tokens.write_text(TOKEN_A + "\n")
        tokens.chmod(0)
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(
            _config("ws://127.0.0.1:9/feed", "websocket: {port: 8765, auth: {tokens_file: tokens}}")
        )
    )
    if kind == "unreadable":  # as `veylor check` sees it, root's file capabilities dropped
        from helpers import can_drop_file_permissions, obey_file_permissions

        if not can_drop_file_permissions():
            pytest.skip("cannot drop the capabilities that let root read any file")
        out = subprocess.run(
            [sys.executable, "-m", "veylor", "check", "-c", str(tmp_path / "config.yaml")],
            preexec_fn=obey_file_permissions, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        text = out.stdout + out.stderr
        assert out.returncode != 0 and "auth.tokens_file" in text and "permission denied" in text, text
        assert TOKEN_A not in text
        return
    began = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "config.yaml", env={})
    assert time.monotonic() - began < 5
    (problem,) = err.value.problems
    assert "endpoints.ep.websocket.auth.tokens_file" in str(problem)
    assert TOKEN_A not in str(problem)


# ---------------------------------------------------------------- hostile handshakes (held up)


async def test_tokens_presented_every_odd_way(tmp_path: Path) -> None:
    """Held up: the first Bearer header decides (a right token elsewhere does not rescue a
    wrong one, a wrong query does not spoil a right header); ``bearer`` in any case;
    ``token=`` twice: the first non-empty; the query key is case-sensitive; no prefix,
    suffix or truncation of a token gets in; 120 Authorization headers cost nothing
    special; oversized requests are answered (414/431) and leave no pending count."""
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f'websocket: {{port: {port}, auth: {{tokens: ["{TOKEN_A}", "{TOKEN_B}"]}}}}'
    cases = [
        (_request("/", f"authorization: bearer {TOKEN_A}"), 101),
        (_request("/", f"Authorization: BEARER   {TOKEN_A}  "), 101),
        (_request(f"/?token={TOKEN_A}", f"Authorization: Bearer {WRONG}"), 401),
        (_request(f"/?token={WRONG}", f"Authorization: Bearer {TOKEN_A}"), 101),
        (_request(f"/?token={TOKEN_A}", "Authorization: Bearer "), 101),
        (_request(f"/?token={TOKEN_A}", f"Authorization: Basic {TOKEN_A}"), 101),
        (_request(f"/?token={WRONG}&token={TOKEN_A}"), 401),
        (_request(f"/?token=&token={TOKEN_A}"), 101),
        (_request(f"/?TOKEN={TOKEN_A}"), 401),
        (_request(f"/?tok%65n={TOKEN_A}"), 101),  # percent-decoded, like the value
        (_request(f"/?token={TOKEN_A}x"), 401),
        (_request(f"/?token={TOKEN_A[:-1]}"), 401),
        (_request(f"/?token=x{TOKEN_A}"), 401),
        (_request(f"/?token={TOKEN_A}%00"), 401),
        (_request("/", f"Authorization: Bearer {TOKEN_A}\tx"), 401),
        (_request("/", *[f"Authorization: Bearer {WRONG}{i}" for i in range(119)], f"Authorization: Bearer {TOKEN_A}"), 401),
        (_request("/", *[f"Authorization: Basic x{i}" for i in range(119)], f"Authorization: Bearer {TOKEN_B}"), 101),
        (_request("/", "Authorization: Bearer " + "x" * 9000), 431),
        (_request("/?token=" + "x" * 9000), 414),
        (_request("/", *[f"X-Pad-{i}: y" for i in range(130)], f"Authorization: Bearer {TOKEN_A}"), 431),
    ]  # fmt: skip
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
            got = [await _status(port, request) for request, _ in cases]
            assert got == [status for _, status in cases]
            listener = rt.listeners[("websocket", "127.0.0.1", port)]
            await eventually(lambda: listener.pending == 0, timeout=12, what="no pending handshake left")
            await eventually(lambda: not rt.endpoints["ep"].clients, what="the 101s gone")
    finally:
        await upstream.stop()


async def test_origin_tricks(tmp_path: Path) -> None:
    """Held up for what a browser can send: suffix and prefix tricks, a port, uppercase,
    ``null``, a trailing slash, two Origin headers, an empty one with ``require_origin``
    and a list. (A ``*`` spans dots, slashes and colons: ``https://*.example.org`` also
    matches ``https://x/.example.org``, which no browser sends.)"""
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"""
    websocket:
      port: {port}
      allowed_origins: ["https://app.example.com/", "HTTPS://*.Example.org"]
    """
    cases = {
        "https://app.example.com": 101,
        "HTTPS://APP.EXAMPLE.COM": 101,
        "https://eu.example.org": 101,
        "https://a.b.example.org": 101,
        "https://app.example.com.evil.net": 403,
        "https://app.example.com:8443": 403,
        "http://app.example.com": 403,
        "https://evilapp.example.com": 403,
        "https://example.org": 403,
        "https://example.org.evil.net": 403,
        "https://evil-example.org": 403,
        "https://eu.example.org.evil.net": 403,
        "null": 403,
        "": 403,
        "https://app.example.com/": 403,
    }
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
            got = {o: await _status(port, _request("/", f"Origin: {o}")) for o in cases}
            assert got == cases
            two = _request("/", "Origin: https://app.example.com", "Origin: https://evil.net")
            assert await _status(port, two) == 403
            assert await _status(port, _request("/")) == 101  # no Origin: not a browser
            assert rt.stats.endpoint("ep").refused_origin == sum(s == 403 for s in cases.values()) + 1
    finally:
        await upstream.stop()


async def test_slowloris_request_is_dropped_at_handshake_timeout_and_nothing_leaks(tmp_path: Path) -> None:
    """Held up: a request trickled a byte every 50 ms is dropped at ``handshake_timeout``
    though it keeps sending; connections aborted at every step, oversized requests and
    refusals leave the pending count at 0 and the port usable."""
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"websocket: {{port: {port}, handshake_timeout: 1, max_pending: 8}}"
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
            listener = rt.listeners[("websocket", "127.0.0.1", port)]

            def trickle() -> float:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                began = time.monotonic()
                try:
                    for byte in raw_handshake("/")[:-2]:
                        s.sendall(bytes([byte]))
                        time.sleep(0.05)
                except OSError:
                    pass
                finally:
                    s.close()
                return time.monotonic() - began

            took = await asyncio.gather(*(asyncio.to_thread(trickle) for _ in range(4)))
            assert max(took) < 3, took
            assert rt.stats.endpoint("ep").handshake_timeouts == 4
            for stage in range(40):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw_handshake("/")[: stage * 4])
                if stage % 3 == 0:
                    writer.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                writer.transport.abort()
            await eventually(lambda: listener.pending == 0, timeout=5, what="no pending handshake left")
            clients = [await ws_client(f"ws://127.0.0.1:{port}/") for _ in range(8)]
            for c in clients:
                await c.close()
    finally:
        await upstream.stop()


# ---------------------------------------------------------------- revocation (held up)


def _text_frame(text: str) -> bytes:
    """A masked client text frame (payload under 126 bytes)."""
    payload = text.encode()
    key = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def test_a_revoked_client_that_keeps_sending_reaches_nobody(tmp_path: Path) -> None:
    """Held up: a client whose token a reload removes is closed (1008); frames it keeps
    sending after the close (a raw client that ignores it) never reach the upstream;
    a connection that was waiting to send its request when the token was revoked gets
    401 with it; the other client keeps sending."""
    upstream = await Upstream().start()
    port = free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN_A}\n{TOKEN_B}\n")
    tokens.chmod(0o600)
    endpoint = f"websocket: {{port: {port}, auth: {{tokens_file: tokens}}}}"
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint, ", upstream: true")) as rt:
            await upstream.wait_connected()
            polite = await ws_client(f"ws://127.0.0.1:{port}/?token={TOKEN_A}")
            rogue_r, rogue = await asyncio.open_connection("127.0.0.1", port)
            rogue.write(_request(f"/?token={TOKEN_B}"))
            assert (await rogue_r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            waiting_r, waiting = await asyncio.open_connection("127.0.0.1", port)  # request not sent yet
            rogue.write(_text_frame("before"))
            await eventually(lambda: "before" in upstream.received)
            tokens.write_text(f"{TOKEN_A}\n")
            await rt.apply(build_graph(load_config(tmp_path / "config.yaml", env={})))
            for i in range(20):
                rogue.write(_text_frame(f"after {i}"))
            await polite.send("polite")
            await eventually(lambda: "polite" in upstream.received)
            await asyncio.sleep(0.2)
            assert not [m for m in upstream.received if str(m).startswith("after")]
            close = await asyncio.wait_for(rogue_r.read(4096), 5)
            assert close[:1] == b"\x88" and close[2:4] == (1008).to_bytes(2, "big"), close
            waiting.write(_request(f"/?token={TOKEN_B}"))
            assert (await asyncio.wait_for(waiting_r.readline(), 5)).startswith(b"HTTP/1.1 401")
            rogue.transport.abort()
            waiting.transport.abort()
            await polite.close()
    finally:
        await upstream.stop()


# ---------------------------------------------------------------- allow filters


async def test_an_allow_filter_cannot_be_passed_with_a_duplicate_key(tmp_path: Path) -> None:
    """Was a bug (parser differential). ``allow`` judges a message by Python's ``json``, which
    keeps the *last* of duplicate keys, then forwards the raw bytes. An upstream whose
    parser keeps the first (or refuses duplicates) sees another message than the one
    allowed: ``{"op": "unsubscribe", "op": "subscribe"}`` passes ``op in [subscribe]``
    and reaches the shared upstream as an unsubscribe for everyone, the very case the
    docs/security.md gives for a policy."""
    upstream = await Upstream().start()
    port = free_port()
    route = ", upstream: {allow: [{json: {path: op, in: [subscribe]}}]}"
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, f"websocket: {{port: {port}}}", route)) as rt:
            await upstream.wait_connected()
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            await client.send('{"op": "unsubscribe", "op": "subscribe"}')
            await client.send('{"op": "subscribe", "marker": 1}')
            await eventually(lambda: any("marker" in str(m) for m in upstream.received))
            assert upstream.received == ['{"op": "subscribe", "marker": 1}'], upstream.received
            assert rt.stats.endpoint("ep").upstream_denied == 1
            await client.close()
    finally:
        await upstream.stop()


async def test_allow_filters_on_binary_invalid_and_hostile_input(tmp_path: Path) -> None:
    """Held up: binary junk, binary JSON, JSON nested 100,000 deep, a huge exponent, a
    text filter against binary, invalid UTF-8 text (closed 1007, never forwarded): no
    crash, only what an allow filter passes goes, and the client stays (but for 1007)."""
    upstream = await Upstream().start()
    port = free_port()
    route = ", upstream: {allow: [{json: {path: op, in: [subscribe]}}, {text: {contains: hello}}]}"
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, f"websocket: {{port: {port}}}", route)) as rt:
            await upstream.wait_connected()
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            for message in (
                b"\xff\xfe\x00junk",
                b"hello in binary",
                "[" * 100_000,
                '{"op": 1e999999}',
                '{"op": ["subscribe"]}',
                '{"op": "subscribe"',
                "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
                '{"op": "subscribe"}',
                b'{"op": "subscribe"}',
                "hello",
            ):
                await client.send(message)
            await eventually(lambda: len(upstream.received) >= 3)
            await asyncio.sleep(0.2)
            assert upstream.received == ['{"op": "subscribe"}', b'{"op": "subscribe"}', "hello"]
            assert rt.stats.endpoint("ep").upstream_denied == 7
            assert client.state.name == "OPEN"
            raw_r, raw = await asyncio.open_connection("127.0.0.1", port)
            raw.write(raw_handshake("/"))
            await raw_r.readuntil(b"\r\n\r\n")
            key = b"\x00\x00\x00\x00"
            raw.write(bytes([0x81, 0x80 | 3]) + key + b"\xc3\x28\x41")  # invalid UTF-8 text
            close = await asyncio.wait_for(raw_r.read(4096), 5)
            assert close[:1] == b"\x88" and close[2:4] == (1007).to_bytes(2, "big")
            raw.transport.abort()
            assert len(upstream.received) == 3
            await client.close()
    finally:
        await upstream.stop()


# ---------------------------------------------------------------- Unix peers (held up)


async def test_many_refused_unix_peers_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Held up: 300 connections at once from a uid not allowed are all closed, none
    counted as a client, a handful of log lines; an allowed endpoint beside it serves."""
    caplog.set_level(logging.INFO, "veylor")
    upstream = await Upstream().start()
    closed, opened = tmp_path / "closed.sock", tmp_path / "open.sock"
    config = f"""
    sources:
      feed: {{url: "{upstream.url}"}}
    endpoints:
      closed: {{unix: {{path: "{closed}", allowed_uids: [{os.getuid() + 4242}]}}}}
      opened: {{unix: {{path: "{opened}"}}}}
    routes:
      r: {{from: feed, to: [closed, opened]}}
    """

    async def knock() -> bytes:
        try:
            reader, writer = await asyncio.open_unix_connection(str(closed))
        except OSError:
            return b"refused"
        writer.write(b"\x00\x00\x00\x05hello")
        try:
            return await asyncio.wait_for(reader.read(), 5)
        except OSError:
            return b""
        finally:
            writer.transport.abort()

    try:
        async with veylor_inprocess(tmp_path, config) as rt:
            await upstream.wait_connected()
            allowed = await UnixClient.connect(opened)
            results = await asyncio.gather(*(knock() for _ in range(300)))
            assert set(results) <= {b"", b"refused"}
            assert not rt.endpoints["closed"].clients
            assert rt.stats.endpoint("closed").refused_peer == results.count(b"")
            assert not upstream.received
            await upstream.send("still served")
            assert await allowed.recv() == b"still served"
            lines = [r for r in caplog.records if "are not allowed" in r.getMessage()]
            assert len(lines) <= 3
            await allowed.close()
    finally:
        await upstream.stop()


# ---------------------------------------------------------------- veylor check


def test_check_does_not_call_a_hostname_that_merely_starts_with_localhost_loopback(tmp_path: Path) -> None:
    """Was a bug (small). ``report.exposure`` decides "loopback" by prefix (``127.``, ``::1``,
    ``localhost``): ``host: localhost.example.com`` (any address DNS gives it) is shown
    as ``[loopback]`` and an endpoint there without auth is not flagged OPEN."""
    from conftest import run_veylor

    (tmp_path / "config.yaml").write_text(
        textwrap.dedent("""
        sources:
          feed: {url: "wss://example.com/feed"}
        endpoints:
          lookalike: {websocket: {host: localhost.example.com, port: 8765}}
        routes:
          r: {from: feed, to: lookalike}
        """)
    )
    out = run_veylor("check", "-c", str(tmp_path / "config.yaml"))
    assert out.returncode == 0, out.stderr
    line = next(li for li in out.stdout.splitlines() if "ws://localhost.example.com:8765/ [" in li)
    assert "[loopback]" not in line and "OPEN" in line, line


def test_check_refuses_a_socket_owner_that_cannot_be_a_uid(tmp_path: Path) -> None:
    """Was a bug (small). ``owner``/``group`` accept any integer: ``owner: -5`` passes ``veylor
    check`` (``_uid`` returns it unchecked), then ``veylor run`` dies with an
    OverflowError traceback from ``os.chown`` (not a StartupError naming the endpoint),
    and a reload to it raises out of the apply ("unexpected error")."""
    from conftest import run_veylor

    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(f"""
        sources:
          feed: {{url: "ws://127.0.0.1:9/feed"}}
        endpoints:
          ipc: {{unix: {{path: "{tmp_path}/ipc.sock", owner: -5, group: 4294967296}}}}
        routes:
          r: {{from: feed, to: ipc}}
        """)
    )
    out = run_veylor("check", "-c", str(tmp_path / "config.yaml"))
    assert out.returncode != 0 and "endpoints.ipc.unix.owner" in out.stdout + out.stderr, out.stdout


# ---------------------------------------------------------------- files that come back (issue 22.1)

TOKEN_C = "C" * 8 + "-adversarial-token-C-0123456789"
TOKEN_D = "D" * 8 + "-adversarial-token-D-0123456789"

needs_permissions = pytest.mark.skipif(
    not can_drop_file_permissions(), reason="cannot make a child process obey file permissions here"
)


def _put(path: Path, text: str) -> None:
    """Put a file in place as configuration management does: write beside, rename over."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.chmod(0o600)
    os.replace(tmp, path)


async def _tokens_veylor(tmp_path: Path, watch: bool) -> tuple[Upstream, VeylorProcess, Path, int]:
    upstream = await Upstream().start()
    port = free_port()
    tokens = tmp_path / "tokens"
    _put(tokens, "".join(t + "\n" for t in (TOKEN_A, TOKEN_B, TOKEN_C, TOKEN_D)))
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(_config(upstream, f"websocket: {{port: {port}, auth: {{tokens_file: tokens}}}}"))
    )
    args = ["-c", str(tmp_path / "config.yaml")] + ([] if watch else ["--no-watch"])
    veylor = await VeylorProcess(*args, obey_permissions=True).start()
    return upstream, veylor, tokens, port


@needs_permissions
@pytest.mark.parametrize("gone", ["unreadable", "deleted"])
async def test_a_tokens_file_that_was_unreadable_is_read_again_and_its_removed_tokens_close(
    tmp_path: Path, gone: str
) -> None:
    """Issue 22.1: after the tokens file was unreadable (chmod 000) or deleted for a
    moment, no reload read it again (the cache kept the failed build), so a token taken
    out meanwhile still got in, and its client stayed. Restored without D, one SIGHUP
    applies it: D's client is closed (1008), D is refused, the others stay."""
    upstream, veylor, tokens, port = await _tokens_veylor(tmp_path, watch=False)
    try:
        await upstream.wait_connected()
        a = await ws_client(f"ws://127.0.0.1:{port}/?token={TOKEN_A}")
        d = await ws_client(f"ws://127.0.0.1:{port}/?token={TOKEN_D}")
        if gone == "unreadable":
            tokens.chmod(0)
        else:
            tokens.unlink()
        veylor.signal(signal.SIGHUP)
        await veylor.wait_for("reload (SIGHUP) rejected")
        _put(tokens, "".join(t + "\n" for t in (TOKEN_A, TOKEN_B, TOKEN_C)))
        veylor.signal(signal.SIGHUP)
        await veylor.wait_for("reload #2 (SIGHUP)")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(d.recv(), 10)
        assert d.close_code == 1008
        assert await _status(port, _request(f"/?token={TOKEN_D}")) == 401
        await upstream.send("A stays")
        assert await asyncio.wait_for(a.recv(), 5) == "A stays"
        await a.close()
    finally:
        await veylor.stop()
        await upstream.stop()
    assert TOKEN_D not in veylor.log


@needs_permissions
async def test_a_tokens_file_deleted_and_put_back_applies_with_no_signal(tmp_path: Path) -> None:
    """The same through the file watch: the path is watched while the file is missing."""
    upstream, veylor, tokens, port = await _tokens_veylor(tmp_path, watch=True)
    try:
        await veylor.wait_for("watching")
        await upstream.wait_connected()
        d = await ws_client(f"ws://127.0.0.1:{port}/?token={TOKEN_D}")
        tokens.unlink()
        await veylor.wait_for("rejected", timeout=15)
        _put(tokens, TOKEN_A + "\n")
        await veylor.wait_for("reload #2 (file change", timeout=15)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(d.recv(), 10)
        assert d.close_code == 1008
    finally:
        await veylor.stop()
        await upstream.stop()


@needs_permissions
async def test_a_certificate_missing_for_a_moment_then_renewed_is_served(tmp_path: Path) -> None:
    """Issue 22.1: after the certificate was missing for a moment, a new pair put in place
    was never served (the log kept saying 'does not exist'). Now the watch applies it."""
    pki = tmp_path / "pki"
    ca = make_ca(pki)
    cert, key = make_cert(pki, ca, "server")
    served_cert, served_key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(cert, served_cert)
    shutil.copy(key, served_key)
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"websocket: {{port: {port}, tls: {{cert: cert.pem, key: key.pem}}}}"
    (tmp_path / "config.yaml").write_text(textwrap.dedent(_config(upstream, endpoint)))
    veylor = await VeylorProcess("-c", str(tmp_path / "config.yaml"), obey_permissions=True).start()
    try:
        await veylor.wait_for("watching")
        context = ssl.create_default_context(cafile=str(ca))

        async def serial() -> str:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            number = writer.get_extra_info("peercert")["serialNumber"]
            writer.close()
            return number

        first = await serial()
        served_cert.unlink()
        await veylor.wait_for("does not exist", timeout=15)
        renewed, renewed_key = make_cert(pki, ca, "renewed")
        _put(served_key, renewed_key.read_text())
        _put(served_cert, renewed.read_text())
        await veylor.wait_for("reload #2 (file change", timeout=15)
        assert await serial() not in (first, "")
    finally:
        await veylor.stop()
        await upstream.stop()
