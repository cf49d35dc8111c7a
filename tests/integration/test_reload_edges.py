"""The edges of a reload, found by an adversarial review of the step-based plan: a
reload whose bind fails leaves nothing behind; requests made while Veylor stops are
answered; keepalive and compression switched by reload lose nothing and close no
healthy client; Unix clients accepted while the listener is re-attached are served;
no secret reaches the snapshot or `veylor check --json`.

Each test's docstring says what was wrong before the fix it guards. Real sockets on
127.0.0.1, real Unix sockets, or a real ``veylor`` process; bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import textwrap
import time
from pathlib import Path

import pytest
from conftest import run_veylor
from helpers import eventually, free_port, veylor_inprocess, ws_client
from websockets.asyncio.server import serve

from veylor.config import load_config
from veylor.graph import build_graph
from veylor.observe.state import snapshot as state_view
from veylor.runtime import Runtime, StartupError
from veylor.server import Server


def graph_of(tmp_path: Path, text: str, name: str = "next.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return build_graph(load_config(path, env={}))


# ---------------------------------------------------------------- keepalive (da09fb3)


async def test_keepalive_turned_on_by_reload_does_not_close_clients_that_answer_pings(tmp_path, upstream):
    """da09fb3: a reload that turns pings on (ping_interval was null) starts the timer,
    but the first round compares each client's ``last_seen`` (its last frame, possibly
    long ago: a receive-only client sends nothing while pings are off) with
    interval + timeout, so a healthy client that would answer every ping is closed
    (1011 "keepalive ping timeout") before it was ever pinged.
    websocket.py: WebSocketEndpoint.update / start_keepalive / _ping_all."""
    port = free_port()
    config = f"""
sources: {{up: {{url: "{upstream.url}"}}}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}, ping_interval: null}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        # A standard client: answers pings (websockets does), sends nothing of its own.
        client = await ws_client(f"ws://127.0.0.1:{port}/", ping_interval=None)
        ep = rt.endpoints["ws"]
        await eventually(lambda: len(ep.clients) == 1)
        await asyncio.sleep(1.5)  # idle, as receive-only clients are, while pings are off
        on = graph_of(
            tmp_path, config.replace("ping_interval: null", "ping_interval: 0.3, ping_timeout: 0.5")
        )
        await rt.apply(on)
        assert rt.endpoints["ws"] is ep
        await asyncio.sleep(1.5)  # several ping rounds, each answered at once
        assert ep.stats.keepalive_closed == 0, "a client that answers pings was closed by the first round"
        assert client.close_code is None, f"closed with {client.close_code} {client.close_reason!r}"
        await client.close()


# ---------------------------------------------------------------- stats of a failed apply


async def test_a_reload_whose_bind_fails_leaves_no_counters_for_endpoints_that_never_ran(tmp_path, upstream):
    """create_endpoint runs before bind and registers the new endpoint's stats by name
    (Stats.endpoint); when a bind then fails, _Execution.undo closes the listeners but
    Stats.retain is never called: snapshot() reports an endpoint that is not configured
    (until some later reload succeeds). supervisor.py: _Execution.create_endpoint/undo."""
    port, busy_port = free_port(), free_port()
    config = f"""
sources: {{up: {{url: "{upstream.url}"}}}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    busy = socket.socket()
    busy.bind(("127.0.0.1", busy_port))
    busy.listen()
    try:
        async with veylor_inprocess(tmp_path, config) as rt:
            bad = graph_of(
                tmp_path,
                config.replace(
                    "endpoints: {",
                    f"endpoints: {{ghost: {{websocket: {{host: 127.0.0.1, port: {busy_port}, path: /}}}}, ",
                ).replace("to: ws}", "to: [ws, ghost]}"),
            )
            with pytest.raises(StartupError):
                await rt.apply(bad)
            assert set(rt.endpoints) == {"ws"}
            snapshot = state_view(rt)
            assert set(snapshot["endpoints"]) == {"ws"}, snapshot["endpoints"]
    finally:
        busy.close()


# ---------------------------------------------------------------- Server.reload during shutdown


async def test_a_reload_requested_while_veylor_shuts_down_is_answered(tmp_path, upstream):
    """Reloader.request() returns a future; Reloader.stop() answers the requests pending
    *at that moment*, but a request made after it (Server.reload() while the runtime is
    still stopping, up to 5 s) is appended to _waiters that nobody reads: the caller
    waits forever. reload.py: Reloader.request / stop; server.py: Server.reload."""
    port = free_port()
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
sources: {{up: {{url: "{upstream.url}"}}}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    )
    server = Server.load(str(path), watch="off")
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.reloader is not None and server.runtime is not None, what="ready")
    # A client that never answers the close keeps the runtime's stop busy ~2 s.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 101")
    await eventually(lambda: len(server.runtime.endpoints["ws"].clients) == 1)
    server.stop()
    await eventually(lambda: server.reloader._stop.is_set(), what="reloading stopped")
    late = server.reload("admin request during shutdown")
    await asyncio.wait_for(serving, 10)
    writer.close()
    try:
        outcome = await asyncio.wait_for(late, 2)
    except TimeoutError:
        pytest.fail("a reload requested during shutdown never got an outcome (its future hangs)")
    assert not outcome.applied


# ---------------------------------------------------------------- secrets in snapshot()


async def test_snapshot_never_shows_a_secret_that_the_log_masks(tmp_path):
    """Source.status() (new, read by Runtime.snapshot for the admin endpoint to come)
    returns ``last_error`` raw. An upstream that echoes the API key in its close reason
    (common: "invalid api key ...") puts the header value, which every log line masks
    (SECRETS), verbatim into snapshot(). source.py: Source.status."""
    secret = "sk-live-0123456789abcdef"
    up_port, port = free_port(), free_port()

    async def rejecting(conn):
        await conn.close(1008, f"invalid api key {conn.request.headers.get('X-Api-Key')}")

    upstream = await serve(rejecting, "127.0.0.1", up_port)
    config = f"""
sources:
  up:
    url: "ws://127.0.0.1:{up_port}/feed"
    headers: {{X-Api-Key: "{secret}"}}
    reconnect: {{initial_delay: 5, max_delay: 5}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    try:
        async with veylor_inprocess(tmp_path, config) as rt:
            source = rt.sources["up"]
            await eventually(lambda: source.last_error is not None, what="the rejection")
            text = json.dumps(state_view(rt))
            assert secret not in text, state_view(rt)["sources"]["up"]
    finally:
        upstream.close()
        await upstream.wait_closed()


def test_check_json_masks_every_query_value_the_log_treats_as_secret(tmp_path):
    """redact_url (used by safe_url: as_json, describe, Source.status) tests the query
    key as written, url_secrets tests it percent-decoded: ``?%74oken=...`` is masked in
    logs but printed by ``veylor check --json`` (and status()). model.py: redact_url."""
    secret = "SUPERSECRETVALUE42"
    (tmp_path / "config.yaml").write_text(
        f"""
sources: {{up: {{url: "wss://feed.example/ws?%74oken={secret}"}}}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {free_port()}, path: /}}}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    )
    result = run_veylor("check", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout, json.loads(result.stdout)["sources"]["up"]["url"]


# ---------------------------------------------------------------- Unix listener re-attach


async def test_unix_reattach_does_not_chmod_a_file_that_is_not_its_socket(tmp_path, upstream):
    """UnixListener.attach (a reload that changes the mode) does os.chmod(path) with no
    check that the path is still the socket it bound (_bound holds its dev/inode for
    exactly this): whatever is there now is chmodded, following symlinks. Run as root,
    a symlink dropped in the socket directory makes Veylor chmod any file.
    unix.py: UnixListener.attach (inherited from 995f593's UnixEndpoint.adopt)."""
    sock = tmp_path / "feed.sock"
    victim = tmp_path / "victim"
    victim.write_text("not Veylor's")
    os.chmod(victim, 0o600)
    config = f"""
sources: {{up: {{url: "{upstream.url}"}}}}
endpoints: {{ux: {{unix: {{path: "{sock}", mode: "0660"}}}}}}
routes: {{r: {{from: up, to: ux}}}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        assert stat.S_ISSOCK(os.lstat(sock).st_mode)
        os.unlink(sock)  # someone replaced the path
        os.symlink(victim, sock)
        await rt.apply(graph_of(tmp_path, config.replace('"0660"', '"0666"')))
        mode = stat.S_IMODE(os.stat(victim).st_mode)
        assert mode == 0o600, f"a file Veylor does not own was chmodded to {mode:04o}"
        assert os.path.islink(sock) and victim.exists()  # (and it is left alone at stop)


async def test_unix_clients_accepted_while_the_listener_is_reattached_are_not_orphaned(tmp_path, upstream):
    """The listener's protocol factory binds a UnixClient to the endpoint at accept time;
    connection_made (which adds it to that endpoint's clients) runs one loop hop later.
    A reload that re-attaches the listener in between (framing or mode change) retires
    the old endpoint (close_clients: it has none yet) and then connection_made adds the
    client to the retired endpoint: never closed, never routed, not closed at shutdown
    either. unix.py: _Acceptor / UnixClient.connection_made (inherited from adopt)."""
    path = tmp_path / "feed.sock"
    config = f"""
sources: {{up: {{url: "{upstream.url}"}}}}
endpoints: {{ux: {{unix: {{path: "{path}"}}}}}}
routes: {{r: {{from: up, to: ux}}}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        await upstream.wait_connected()
        old = rt.endpoints["ux"]
        lines = graph_of(tmp_path, config.replace(f'path: "{path}"', f'path: "{path}", framing: lines'))
        socks = []
        for _ in range(3):  # in the kernel's backlog: the loop accepts them at its next poll
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(path))
            s.setblocking(False)
            socks.append(s)
        await asyncio.sleep(0)  # the poll accepts them; their connection_made is queued after us
        await rt.apply(lines)
        assert rt.endpoints["ux"] is not old
        await asyncio.sleep(0.2)
        await upstream.send("after")
        loop = asyncio.get_running_loop()
        orphans = []
        for s in socks:
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 100), 2)
            except TimeoutError:
                orphans.append(s)
                continue
            assert data in (b"", b"after\n"), data  # closed (1.x framing gone), or served as lines
        for s in socks:
            s.close()
        assert not orphans, (
            f"{len(orphans)} of {len(socks)} clients neither closed nor served; "
            f"the retired endpoint holds {len(old.clients)} clients"
        )


# ---------------------------------------------------------------- undo of a failed bind


def test_a_failed_bind_does_not_hang_on_clients_of_a_listener_it_bound(tmp_path):
    """All-or-nothing binds: when a later bind fails, _Execution.undo awaits
    listener.close() of each listener this apply bound. A client that connected to such a
    listener meanwhile (the later bind resolving a host name yields to the loop: DNS)
    is attached to an endpoint object that never started and is in no table: nobody
    closes it, and websockets' Server.wait_closed waits for its handler: the reload
    hangs for as long as that client stays (reloads queue behind it, forever).
    supervisor.py: _Execution.undo; websocket.py: WebSocketListener.close (as 995f593's
    _unbind did: inherited, not introduced)."""

    async def scenario() -> str:
        loop = asyncio.get_running_loop()
        up_port, port, new_port, busy_port = free_port(), free_port(), free_port(), free_port()
        busy = socket.socket()
        busy.bind(("127.0.0.1", busy_port))
        busy.listen()
        base = f"""
sources: {{up: {{url: "ws://127.0.0.1:{up_port}/"}}}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
        rt = Runtime()
        await rt.start(graph_of(tmp_path, base, "base.yaml"))
        bad = graph_of(
            tmp_path,
            base.replace(
                "routes:",
                f"  fresh: {{websocket: {{host: 127.0.0.1, port: {new_port}, path: /}}}}\n"
                f"  named: {{websocket: {{host: localhost, port: {busy_port}, path: /}}}}\nroutes:",
            ),
        )
        # Slow name resolution (a DNS server that takes a while): the executor is busy.
        workers = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
        sleepers = [loop.run_in_executor(None, time.sleep, 1.5) for _ in range(workers)]
        connected = asyncio.Event()

        async def client() -> None:
            while True:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", new_port)
                except OSError:
                    await asyncio.sleep(0.01)
                    continue
                writer.write(
                    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                )
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101"), head
                connected.set()
                await reader.read()  # until Veylor closes it
                return

        task = asyncio.create_task(client())
        try:
            try:
                await asyncio.wait_for(rt.apply(bad), 6)
            except StartupError:
                outcome = "aborted"
            except TimeoutError:
                outcome = "hung"
            else:
                outcome = "applied"
            return f"{outcome}; client connected to the ghost endpoint: {connected.is_set()}"
        finally:
            task.cancel()
            await asyncio.gather(*sleepers, return_exceptions=True)
            await asyncio.wait_for(rt.stop(), 10)
            busy.close()

    # On the default asyncio loop (its name resolution runs in the default executor),
    # in a thread of its own.
    result = _run_in_thread(scenario)
    assert result.startswith("aborted"), result


def _run_in_thread(make):
    import threading

    out: list[object] = []

    def target() -> None:
        try:
            out.append(asyncio.run(make()))
        except BaseException as exc:  # pragma: no cover - reported below
            out.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(40)
    assert not thread.is_alive(), "the scenario did not end"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


# ---------------------------------------------------------------- compression toggled mid-pass


async def test_compression_turned_back_on_between_two_messages_of_a_pass_loses_none(tmp_path, upstream):
    """WebSocketEndpoint keeps two pending lists: ``pending`` (shared frames, always) and
    ``pending_messages`` (only while per_client). A reload that turns compression back
    on (per_client False -> True: clients that negotiated deflate are still in
    ``compressed``) between two messages of one event-loop pass leaves the first message
    only in ``pending``; flush() then writes the compressed clients only
    ``pending_messages``: they silently lose it (and messages_out counts it delivered).
    websocket.py: enqueue/flush/_compression_changed. (Here the pass is made explicit:
    dispatch, apply, dispatch in one callback.)"""
    from test_kinds import RawClient, compression_config

    port = free_port()
    on_text = compression_config(upstream, port, True)
    async with veylor_inprocess(tmp_path, on_text) as rt:
        await upstream.wait_connected()
        client = await RawClient.connect(port, "/", offer_deflate=True)
        assert client.deflate
        ep = rt.endpoints["ws"]
        await eventually(lambda: ep.per_client)
        await rt.apply(graph_of(tmp_path, compression_config(upstream, port, False), "off.yaml"))
        assert not ep.per_client
        on = graph_of(tmp_path, on_text, "on.yaml")
        # One pass: a message, the reload's apply (no await suspends in it), a message.
        rt.router.dispatch("up", b"first", True)
        await rt.apply(on)
        rt.router.dispatch("up", b"second", True)
        got = []
        try:
            while len(got) < 2:
                got.append((await asyncio.wait_for(client.frame(), 2))[1])
        except TimeoutError:
            pass
        client.close()
        assert got == [b"first", b"second"], got


# ---------------------------------------------------------------- log masking after failed reloads


async def test_the_running_sources_secrets_stay_masked_after_two_reloads_that_fail_to_bind(tmp_path):
    """Reloader._load calls remember(config) before the apply; Secrets keeps only the
    current and previous generation. Two reloads that load but fail to bind (port in
    use: "nothing was changed") leave SECRETS = {failed #1, failed #2}: the secrets of
    the configuration that still runs are no longer masked in any log line.
    reload.py: Reloader._load; observe/logs.py: Secrets.update (not new in the refactor)."""
    import io
    import logging

    from veylor.observe.logs import RedactingFormatter, remember
    from veylor.reload import Reloader

    secret = "sk-live-RUNNING-0123456789"
    up_port, port, busy_port = free_port(), free_port(), free_port()

    async def rejecting(conn):
        await conn.close(1008, f"invalid api key {conn.request.headers.get('X-Api-Key')}")

    upstream = await serve(rejecting, "127.0.0.1", up_port)
    busy = socket.socket()
    busy.bind(("127.0.0.1", busy_port))
    busy.listen()
    config = f"""
sources:
  up:
    url: "ws://127.0.0.1:{up_port}/feed"
    headers: {{X-Api-Key: "{secret}"}}
    reconnect: {{initial_delay: 0.2, max_delay: 0.2, jitter: 0}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    source_log = logging.getLogger("veylor.source")
    source_log.addHandler(handler)
    try:
        async with veylor_inprocess(tmp_path, config) as rt:
            path = tmp_path / "config.yaml"
            remember(load_config(path, env={}))  # as Server.load does
            reloader = Reloader(str(path), rt, watch="off", env={})
            await eventually(lambda: "invalid api key" in stream.getvalue(), what="a reconnection logged")
            assert secret not in stream.getvalue()  # masked while the running config is remembered
            for n in (1, 2):
                path.write_text(
                    config.replace(secret, f"sk-live-NEW-{n}-0123456789").replace(
                        "endpoints: {",
                        f"endpoints: {{x: {{websocket: {{host: 127.0.0.1, port: {busy_port}, path: /}}}}, ",
                    )
                )
                outcome = await reloader.reload(f"failing #{n}")
                assert outcome.error and not outcome.applied  # nothing was changed ...
            assert rt.sources["up"].spec.headers == (("X-Api-Key", secret),)  # ... S0 still in use
            stream.seek(0)
            stream.truncate(0)
            await eventually(lambda: "invalid api key" in stream.getvalue(), what="a reconnection logged")
            assert secret not in stream.getvalue(), stream.getvalue()
    finally:
        source_log.removeHandler(handler)
        busy.close()
        upstream.close()
        await upstream.wait_closed()
