"""Access control with real clients: tokens (401), origins (403), Unix peers
(SO_PEERCRED), what clients may send upstream (allow filters, per-client rates), handshake
limits, and TLS both ways (wss:// endpoints, wss:// sources with a test CA made here with
openssl). Reloads apply each rule in place: a revoked token closes its client (1008), a
renewed certificate reaches new connections while existing ones stay.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import textwrap
import time
from pathlib import Path

import pytest
from helpers import (
    UnixClient,
    Upstream,
    VeylorProcess,
    eventually,
    free_port,
    make_ca,
    make_cert,
    raw_handshake,
    veylor_inprocess,
    ws_client,
)
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from veylor.config import load_config
from veylor.graph import build_graph
from veylor.observe.state import snapshot as state_view

pytestmark = pytest.mark.timeout(60)

TOKEN_A = "a" * 8 + "-token-of-client-A-0123456789"
TOKEN_B = "b" * 8 + "-token-of-client-B-0123456789"


def _config(upstream: Upstream | str, endpoint: str, route: str = "") -> str:
    """A source (``upstream``, or a URL), one endpoint ``ep`` (its YAML, indented as
    given) and a route between them."""
    url = upstream if isinstance(upstream, str) else upstream.url
    return f"""
    sources:
      feed: {{url: "{url}", reconnect: {{initial_delay: 0.05, max_delay: 0.2}}}}
    endpoints:
      ep:
{textwrap.indent(textwrap.dedent(endpoint).strip(), " " * 8)}
    routes:
      r: {{from: feed, to: ep{route}}}
    """


def _metric(rt, name: str) -> dict[str, float]:
    """``/metrics`` as the runtime renders it (checked by Prometheus' parser): the
    samples of family ``name`` of endpoint ``ep``, by their other label."""
    from prometheus_client.parser import text_string_to_metric_families

    from veylor.observe.metrics import render

    out = {}
    for family in text_string_to_metric_families(render(state_view(rt))):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("endpoint") == "ep":
                other = [v for k, v in sample.labels.items() if k != "endpoint"]
                out[other[0] if other else ""] = sample.value
    return out


async def _refused(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as err:
        await ws_client(url, **kwargs)
    return err.value.response.status_code


async def test_tokens_no_token_401_wrong_401_right_101(tmp_path: Path) -> None:
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"""
    websocket:
      port: {port}
      auth: {{tokens: ["{TOKEN_A}", "{TOKEN_B}"]}}
    """
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
            await upstream.wait_connected()
            url = f"ws://127.0.0.1:{port}/"
            assert await _refused(url) == 401
            assert (
                await _refused(url, additional_headers={"Authorization": "Bearer wrong-token-0123456789"})
                == 401
            )
            assert await _refused(url + "?token=wrong-token-0123456789") == 401
            assert await _refused(url, additional_headers={"Authorization": f"Basic {TOKEN_A}"}) == 401
            by_header = await ws_client(url, additional_headers={"Authorization": f"Bearer {TOKEN_A}"})
            by_query = await ws_client(f"{url}?token={TOKEN_B}")
            await eventually(lambda: len(rt.endpoints["ep"].clients) == 2)
            await upstream.send("hello")
            assert await asyncio.wait_for(by_header.recv(), 5) == "hello"
            assert await asyncio.wait_for(by_query.recv(), 5) == "hello"
            stats = rt.stats.endpoint("ep")
            assert (stats.refused_no_token, stats.refused_token, stats.accepted) == (2, 2, 2)
            refused = _metric(rt, "veylor_endpoint_refused_total")
            assert (refused["no_token"], refused["token"], refused["origin"]) == (2, 2, 0)
            from veylor.tui.endpoints import refused as shown_refused  # the TUI's "refused" column

            assert shown_refused(state_view(rt)["endpoints"]["ep"]) == 4
            await by_header.close()
            await by_query.close()
    finally:
        await upstream.stop()


async def test_foreign_origin_403_and_require_origin(tmp_path: Path) -> None:
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"""
    websocket:
      port: {port}
      allowed_origins: ["https://app.example.com", "https://*.example.org"]
    """
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
            url = f"ws://127.0.0.1:{port}/"
            assert await _refused(url, origin="https://evil.example.net") == 403
            assert await _refused(url, origin="null") == 403
            assert await _refused(url, origin="https://app.example.com.evil.net") == 403
            for allowed in ("https://app.example.com", "https://APP.example.com", "https://eu.example.org"):
                conn = await ws_client(url, origin=allowed)
                await conn.close()
            conn = await ws_client(url)  # no Origin: not a browser; allowed unless require_origin
            await conn.close()
            assert rt.stats.endpoint("ep").refused_origin == 3
        endpoint += "  require_origin: true\n"
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
            assert await _refused(url) == 403
            conn = await ws_client(url, origin="https://app.example.com")
            await conn.close()
    finally:
        await upstream.stop()


async def test_unix_peer_with_a_uid_not_allowed_is_refused(tmp_path: Path) -> None:
    upstream = await Upstream().start()
    me = os.getuid()
    closed, opened = tmp_path / "closed.sock", tmp_path / "open.sock"
    config = f"""
    sources:
      feed: {{url: "{upstream.url}"}}
    endpoints:
      closed: {{unix: {{path: "{closed}", allowed_uids: [{me + 4242}]}}}}
      opened: {{unix: {{path: "{opened}", allowed_uids: [{me + 4242}], allowed_gids: [{os.getgid()}]}}}}
    routes:
      r: {{from: feed, to: [closed, opened]}}
    """
    try:
        async with veylor_inprocess(tmp_path, config) as rt:
            await upstream.wait_connected()
            refused = await UnixClient.connect(closed)
            assert await asyncio.wait_for(refused.reader.read(), 5) == b""  # closed at once
            allowed = await UnixClient.connect(opened)
            await eventually(lambda: len(rt.endpoints["opened"].clients) == 1)
            await upstream.send("for the allowed")
            assert await allowed.recv() == b"for the allowed"
            assert rt.stats.endpoint("closed").refused_peer == 1
            assert not rt.endpoints["closed"].clients
            await allowed.close()
            await refused.close()
    finally:
        await upstream.stop()


async def test_a_client_over_its_rate_is_limited_while_another_still_reaches_the_upstream(
    tmp_path: Path,
) -> None:
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"websocket: {{port: {port}}}"
    route = ", upstream: {rate: 2, burst: 5}"
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint, route)) as rt:
            await upstream.wait_connected()
            flooder = await ws_client(f"ws://127.0.0.1:{port}/")
            polite = await ws_client(f"ws://127.0.0.1:{port}/")
            for i in range(200):
                await flooder.send(f"flood {i}")
            for i in range(3):
                await polite.send(f"polite {i}")
            await eventually(lambda: sum(1 for m in upstream.received if m.startswith("polite")) == 3)
            await asyncio.sleep(0.2)
            flood = [m for m in upstream.received if m.startswith("flood")]
            # The burst, and what the rate refilled while the flood was sent (well under a second).
            assert 5 <= len(flood) <= 8, flood
            assert flood == [f"flood {i}" for i in range(len(flood))]
            stats = rt.stats.endpoint("ep")
            assert stats.upstream_limited == 200 - len(flood)
            assert stats.upstream_blocked == stats.upstream_limited
            assert _metric(rt, "veylor_endpoint_upstream_refused_total")["rate"] == 200 - len(flood)
            messages = _metric(rt, "veylor_endpoint_client_messages_total")
            assert (messages["forwarded"], messages["blocked"]) == (len(flood) + 3, 200 - len(flood))
            assert flooder.state.name == "OPEN"  # over_rate: drop keeps it connected
            await flooder.close()
            await polite.close()
    finally:
        await upstream.stop()


async def test_over_rate_close_closes_a_client_that_stays_over_it(tmp_path: Path) -> None:
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"websocket: {{port: {port}}}"
    route = ", upstream: {rate: 5, burst: 1, over_rate: close}"
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint, route)) as rt:
            await upstream.wait_connected()
            flooder = await ws_client(f"ws://127.0.0.1:{port}/")
            with pytest.raises(ConnectionClosed):
                for _ in range(2000):  # 50 a second for up to 40 s: closed after 5 s over the rate
                    await flooder.send("x")
                    await asyncio.sleep(0.02)
            assert flooder.close_code == 1008
            assert rt.stats.endpoint("ep").rate_closed == 1
    finally:
        await upstream.stop()


async def test_allow_list_lets_only_matching_messages_through(tmp_path: Path) -> None:
    upstream = await Upstream().start()
    port, sock = free_port(), tmp_path / "lines.sock"
    config = f"""
    sources:
      feed: {{url: "{upstream.url}"}}
    endpoints:
      ws: {{websocket: {{port: {port}}}}}
      lines: {{unix: {{path: "{sock}", framing: lines}}}}
    routes:
      r:
        from: feed
        to: [ws, lines]
        upstream:
          allow:
            - json: {{path: op, in: [subscribe, ping]}}
            - text: {{contains: "hello"}}
    """
    try:
        async with veylor_inprocess(tmp_path, config) as rt:
            await upstream.wait_connected()
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            for message in ('{"op": "subscribe"}', '{"op": "unsubscribe"}', "garbage", "hello there"):
                await client.send(message)
            await client.send(b'{"op": "ping"}')  # binary JSON: filters read it too
            _reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(b'{"op": "unsubscribe"}\n{"op": "subscribe", "from": "unix"}\n')
            await writer.drain()
            expected = [
                '{"op": "subscribe"}',
                "hello there",
                b'{"op": "ping"}',
                '{"op": "subscribe", "from": "unix"}',
            ]
            await eventually(lambda: len(upstream.received) == 4, what="the allowed messages")
            await asyncio.sleep(0.2)
            assert sorted(map(str, upstream.received)) == sorted(map(str, expected))
            assert rt.stats.endpoint("ws").upstream_denied == 2
            assert rt.stats.endpoint("lines").upstream_denied == 1
            await client.close()
            writer.close()
    finally:
        await upstream.stop()


async def test_handshake_timeout_and_pending_cap(tmp_path: Path) -> None:
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f"websocket: {{port: {port}, handshake_timeout: 0.5, max_pending: 2}}"

    def silent() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        return s

    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
            first, second = silent(), silent()
            await asyncio.sleep(0.1)
            third = silent()  # a third pending handshake: the oldest is closed to make room
            assert await asyncio.to_thread(first.recv, 10) == b""
            assert rt.stats.endpoint("ep").pending_evicted == 1
            began = time.monotonic()
            assert await asyncio.to_thread(second.recv, 10) == b""  # dropped at handshake_timeout
            assert await asyncio.to_thread(third.recv, 10) == b""
            assert time.monotonic() - began < 4
            assert rt.stats.endpoint("ep").handshake_timeouts == 2
            # A slow but complete handshake within the limit, once the slots are free.
            s = silent()
            s.sendall(raw_handshake("/")[:20])
            await asyncio.sleep(0.2)
            s.sendall(raw_handshake("/")[20:])
            assert (await asyncio.to_thread(s.recv, 1024)).startswith(b"HTTP/1.1 101")
            for sock in (first, second, third, s):
                sock.close()
            assert rt.listeners[("websocket", "127.0.0.1", port)].pending == 0
    finally:
        await upstream.stop()


async def test_token_removed_from_tokens_file_closes_its_client_on_reload(tmp_path: Path) -> None:
    upstream = await Upstream().start()
    port = free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# clients\n{TOKEN_A}\n\n{TOKEN_B}\n")
    tokens.chmod(0o600)
    endpoint = f"websocket: {{port: {port}, auth: {{tokens_file: tokens}}}}"
    config = _config(upstream, endpoint)
    try:
        async with veylor_inprocess(tmp_path, config) as rt:
            await upstream.wait_connected()
            a = await ws_client(
                f"ws://127.0.0.1:{port}/", additional_headers={"Authorization": f"Bearer {TOKEN_A}"}
            )
            b = await ws_client(f"ws://127.0.0.1:{port}/?token={TOKEN_B}")
            tokens.write_text(f"{TOKEN_A}\n")
            applied = await rt.apply(build_graph(load_config(tmp_path / "config.yaml", env={})))
            assert [s.op for s in applied.plan.steps] == ["update_endpoint"]
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(b.recv(), 5)
            assert b.close_code == 1008
            await upstream.send("still here")
            assert await asyncio.wait_for(a.recv(), 5) == "still here"
            assert rt.stats.endpoint("ep").revoked == 1
            assert await _refused(f"ws://127.0.0.1:{port}/?token={TOKEN_B}") == 401
            await a.close()
    finally:
        await upstream.stop()


# ---------------------------------------------------------------- TLS


def _client_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


async def _peer_cert(port: int, ca: Path) -> dict:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client_context(ca))
    cert = writer.get_extra_info("peercert")
    writer.close()
    return cert


async def test_wss_endpoint_with_a_test_ca_and_certificate_renewed_on_reload(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca = make_ca(pki)
    cert, key = make_cert(pki, ca, "server")
    upstream = await Upstream().start()
    port = free_port()
    endpoint = f'websocket: {{port: {port}, tls: {{cert: "{cert}", key: "{key}"}}}}'
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, endpoint)) as rt:
            await upstream.wait_connected()
            url = f"wss://127.0.0.1:{port}/"
            client = await ws_client(url, ssl=_client_context(ca))
            await eventually(lambda: len(rt.endpoints["ep"].clients) == 1)
            await upstream.send("over TLS")
            assert await asyncio.wait_for(client.recv(), 5) == "over TLS"
            with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust the CA
                await ws_client(url)
            with pytest.raises((ConnectionError, OSError, InvalidHandshake, EOFError)):  # plain ws://
                conn = await ws_client(f"ws://127.0.0.1:{port}/")
                await conn.recv()
            # TLS 1.2 at least (a TLS 1.1 client cannot be made here: this OpenSSL refuses it itself).
            listener = rt.listeners[("websocket", "127.0.0.1", port, "tls")]
            assert listener.context.minimum_version == ssl.TLSVersion.TLSv1_2
            assert client.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")

            serial = (await _peer_cert(port, ca))["serialNumber"]
            renewed, renewed_key = make_cert(pki, ca, "renewed")
            shutil.copy(renewed, cert)
            shutil.copy(renewed_key, key)
            applied = await rt.apply(build_graph(load_config(tmp_path / "config.yaml", env={})))
            assert [s.op for s in applied.plan.steps] == ["update_endpoint"]
            assert (await _peer_cert(port, ca))["serialNumber"] != serial
            await upstream.send("after the renewal")
            assert await asyncio.wait_for(client.recv(), 5) == "after the renewal"  # not closed
            await client.close()
    finally:
        await upstream.stop()


async def test_wss_source_verifies_with_ca_file_and_says_so_when_verification_is_off(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca = make_ca(pki)
    cert, key = make_cert(pki, ca, "upstream")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    received: list[str] = []

    async def feed(conn) -> None:
        await conn.send("from a TLS upstream")
        async for message in conn:
            received.append(message)

    up_port, port = free_port(), free_port()
    async with serve(feed, "127.0.0.1", up_port, ssl=server_ctx):
        url = f"wss://127.0.0.1:{up_port}/"
        for tls, ok in ((f'{{ca_file: "{ca}"}}', True), ("{}", False), ("{verify: false}", True)):
            config = f"""
            sources:
              feed: {{url: "{url}", tls: {tls}, reconnect: {{initial_delay: 0.05, max_delay: 0.1}}}}
            endpoints:
              ep: {{websocket: {{port: {port}}}}}
            routes:
              r: {{from: feed, to: ep}}
            """
            async with veylor_inprocess(tmp_path, config) as rt:
                source = rt.sources["feed"]
                if ok:
                    await eventually(lambda s=source: s.state == "connected", timeout=10)
                else:
                    await eventually(lambda s=source: s.failures >= 1, timeout=10)
                    assert "certificate verification failed" in source.status()["last_error"]
                    assert rt.stats.source("feed").connects == 0


async def test_verify_false_is_logged_at_every_connect_and_tokens_never(tmp_path: Path) -> None:
    """A subprocess at -vv: the warning for tls.verify false, and no token (right or
    wrong, header or query) in any line."""
    pki = tmp_path / "pki"
    ca = make_ca(pki)
    cert, key = make_cert(pki, ca, "upstream")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    up_port, port = free_port(), free_port()
    wrong = "wrong-but-maybe-someones-real-token"

    async def feed(conn) -> None:
        await conn.close()  # close at once: Veylor reconnects, and warns again

    async with serve(feed, "127.0.0.1", up_port, ssl=server_ctx):
        (tmp_path / "config.yaml").write_text(
            textwrap.dedent(f"""
            sources:
              feed: {{url: "wss://127.0.0.1:{up_port}/", tls: {{verify: false}},
                      reconnect: {{initial_delay: 0.05, max_delay: 0.1}}}}
            endpoints:
              ep: {{websocket: {{port: {port}, auth: {{tokens: ["{TOKEN_A}"]}}}}}}
            routes:
              r: {{from: feed, to: ep}}
            """)
        )
        proc = await VeylorProcess("-c", str(tmp_path / "config.yaml"), "-vv").start()
        try:
            await proc.wait_for("WITHOUT checking its TLS certificate", count=2, timeout=10)
            assert await _refused(f"ws://127.0.0.1:{port}/?token={wrong}") == 401
            assert (
                await _refused(
                    f"ws://127.0.0.1:{port}/", additional_headers={"Authorization": f"Bearer {wrong}"}
                )
                == 401
            )
            ok = await ws_client(f"ws://127.0.0.1:{port}/?token={TOKEN_A}&x=1")
            ok2 = await ws_client(
                f"ws://127.0.0.1:{port}/", additional_headers={"Authorization": f"Bearer {TOKEN_A}"}
            )
            await proc.wait_for("refused client", timeout=5)
            await proc.wait_for("connected (2 clients)", timeout=5)
            await ok.close()
            await ok2.close()
            proc.signal()
            await proc.wait()
        finally:
            await proc.stop()
    assert "GET /?token=" in proc.log  # -vv logs the request line ...
    for secret in (TOKEN_A, wrong):
        assert secret not in proc.log  # ... with the token masked


def test_check_prints_each_endpoints_access(tmp_path: Path) -> None:
    from conftest import run_veylor

    (tmp_path / "tokens").write_text(TOKEN_A + "\n")
    (tmp_path / "tokens").chmod(0o600)
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(f"""
        sources:
          feed: {{url: "wss://example.com/feed"}}
        endpoints:
          public: {{websocket: {{host: 0.0.0.0, port: 8765}}}}
          private:
            websocket: {{port: 8766, auth: {{tokens_file: tokens}}, allowed_origins: ["https://app.example.com"]}}
          ipc: {{unix: {{path: "{tmp_path}/ipc.sock", mode: "0600", allowed_uids: [0, 1000]}}}}
        routes:
          all: {{from: feed, to: [public, private, ipc], upstream: {{rate: 10}}}}
        """)
    )
    out = run_veylor("check", "-c", str(tmp_path / "config.yaml"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "OPEN: reachable from the network and no auth" in text
    assert f"auth 1 token from {tmp_path}/tokens" in text
    assert "origins https://app.example.com" in text
    assert "peers: uids 0,1000" in text
    assert "clients may send to: feed (rate 10/s burst 10, over it: drop) via route all" in text
    assert TOKEN_A not in text
    doc = json.loads(run_veylor("check", "--json", "-c", str(tmp_path / "config.yaml")).stdout)
    assert doc["endpoints"]["public"]["exposure"] == "network"
    assert doc["endpoints"]["private"]["websocket"]["auth"] == {
        "tokens": 1,
        "tokens_file": f"{tmp_path}/tokens",
    }
    assert doc["routes"]["all"]["upstream_policy"]["rate"] == 10
    assert TOKEN_A not in json.dumps(doc)


async def test_an_edited_tokens_file_elsewhere_is_applied_by_the_file_watch(tmp_path: Path) -> None:
    """The tokens file is outside the configuration's directory: the watch covers it too,
    and an edit revokes the removed token's client without SIGHUP."""
    upstream = await Upstream().start()
    port = free_port()
    secrets, conf = tmp_path / "secrets", tmp_path / "conf"
    secrets.mkdir()
    conf.mkdir()
    tokens = secrets / "tokens"
    tokens.write_text(f"{TOKEN_A}\n{TOKEN_B}\n")
    tokens.chmod(0o600)
    (conf / "config.yaml").write_text(
        textwrap.dedent(f"""
        sources:
          feed: {{url: "{upstream.url}"}}
        endpoints:
          ep: {{websocket: {{port: {port}, auth: {{tokens_file: ../secrets/tokens}}}}}}
        routes:
          r: {{from: feed, to: ep}}
        """)
    )
    proc = await VeylorProcess("-c", str(conf / "config.yaml")).start()
    try:
        await proc.wait_for("watching")
        assert str(secrets) in await proc.wait_for("watching")
        a = await ws_client(f"ws://127.0.0.1:{port}/?token={TOKEN_A}")
        b = await ws_client(f"ws://127.0.0.1:{port}/?token={TOKEN_B}")
        tokens.write_text(f"{TOKEN_A}\n")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(b.recv(), 10)
        assert b.close_code == 1008
        await proc.wait_for("no longer allowed")
        assert a.state.name == "OPEN"
        await a.close()
        proc.signal()
        assert await proc.wait() == 0
    finally:
        await proc.stop()
        await upstream.stop()
    for token in (TOKEN_A, TOKEN_B):
        assert token not in proc.log


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root (CI runs as root)")
async def test_unix_socket_file_gets_its_owner_and_group_and_keeps_them_across_a_reload(
    tmp_path: Path,
) -> None:
    import grp
    import pwd

    upstream = await Upstream().start()
    sock = tmp_path / "owned.sock"
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid

    def config(mode: str) -> str:
        return f"""
        sources:
          feed: {{url: "{upstream.url}"}}
        endpoints:
          ep: {{unix: {{path: "{sock}", mode: "{mode}", owner: nobody, group: nogroup}}}}
        routes:
          r: {{from: feed, to: ep}}
        """

    try:
        async with veylor_inprocess(tmp_path, config("0660")) as rt:
            st = sock.stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody, nogroup, 0o660)
            (tmp_path / "config.yaml").write_text(textwrap.dedent(config("0640")))
            await rt.apply(build_graph(load_config(tmp_path / "config.yaml", env={})))
            st = sock.stat()
            assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody, nogroup, 0o640)
    finally:
        await upstream.stop()


def _without_cap_fowner() -> None:
    """A ``preexec_fn``: the child (root here) keeps CAP_CHOWN but loses CAP_FOWNER, as a
    service given CAP_CHOWN alone for ``owner`` (the systemd unit's drop-in, docs/operations.md)."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(24, 3, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_FOWNER
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root (CI runs as root)")
async def test_unix_socket_file_gets_another_owner_with_cap_chown_alone(tmp_path: Path) -> None:
    """Was a bug: the socket file was given its owner, then its mode. Only its owner (or
    CAP_FOWNER) may change a file's mode, so a service with CAP_CHOWN alone could not
    listen with ``owner`` set ("permission denied"), and a reload's new mode was not
    applied. Now the mode comes first, and a reload takes the file back to change it."""
    import grp
    import pwd

    upstream = await Upstream().start()
    sock = tmp_path / "owned.sock"
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    conf = tmp_path / "config.yaml"

    def config(mode: str) -> str:
        return textwrap.dedent(
            f"""
            sources:
              feed: {{url: "{upstream.url}"}}
            endpoints:
              ep: {{unix: {{path: "{sock}", mode: "{mode}", owner: nobody, group: nogroup}}}}
            routes:
              r: {{from: feed, to: ep}}
            """
        )

    conf.write_text(config("0660"))
    proc = VeylorProcess("-c", str(conf), "--no-watch")
    proc.preexec = _without_cap_fowner
    try:
        await proc.start()
        st = sock.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody, nogroup, 0o660)
        conf.write_text(config("0640"))
        proc.signal(signal.SIGHUP)
        await proc.wait_for("reload #", 10)
        st = sock.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (nobody, nogroup, 0o640), proc.log
        assert "not applied" not in proc.log
    finally:
        await proc.stop()
        await upstream.stop()


async def test_turning_tls_on_for_a_port_in_use_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """ws:// to wss:// on one port is another listener at the same address: the reload
    cannot bind it while the old one holds the port. It is refused saying so (not
    'another process listens there'), and the old listener keeps serving."""
    from veylor.runtime import StartupError

    pki = tmp_path / "pki"
    ca = make_ca(pki)
    cert, key = make_cert(pki, ca, "server")
    upstream = await Upstream().start()
    port = free_port()
    try:
        async with veylor_inprocess(tmp_path, _config(upstream, f"websocket: {{port: {port}}}")) as rt:
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            secure = f'websocket: {{port: {port}, tls: {{cert: "{cert}", key: "{key}"}}}}'
            (tmp_path / "config.yaml").write_text(textwrap.dedent(_config(upstream, secure)))
            with pytest.raises(StartupError, match="restart Veylor"):
                await rt.apply(build_graph(load_config(tmp_path / "config.yaml", env={})))
            await upstream.wait_connected()
            await upstream.send("still served")
            assert await asyncio.wait_for(client.recv(), 5) == "still served"
            await client.close()
    finally:
        await upstream.stop()
