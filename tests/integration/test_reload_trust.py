"""Reloads an operator can trust: they never stall delivery, the watcher watches only the
configuration, failures and recoveries are said, and unreadable files are problems.

Veylor runs as a real process except where a test must reach inside (the stall test
slows the loader down on purpose). Tests that need a file Veylor may not read run it
without root's power to read anything (``obey_permissions``), as a service user would be.
"""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest
from conftest import run_veylor
from helpers import (
    Upstream,
    VeylorProcess,
    can_drop_file_permissions,
    eventually,
    free_port,
    obey_file_permissions,
    veylor_inprocess,
    ws_client,
)

from veylor import reload as reload_module
from veylor.config import files as files_module
from veylor.config import loader as loader_module
from veylor.config.files import FileCache
from veylor.config.loader import load_config
from veylor.reload import Reloader

pytestmark = pytest.mark.timeout(90)

needs_permissions = pytest.mark.skipif(
    not can_drop_file_permissions(), reason="cannot make a child process obey file permissions here"
)


def main_config(up: Upstream, port: int) -> str:
    return textwrap.dedent(
        f"""
        sources:
          a: {{url: "{up.url}", reconnect: {{initial_delay: 0.1, max_delay: 0.5}}}}
        endpoints:
          e: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}
        routes:
          r: {{from: a, to: e}}
        """
    )


def dropin(name: str, port: int, path: str = "/x") -> str:
    return textwrap.dedent(
        f"""
        endpoints:
          {name}: {{websocket: {{host: 127.0.0.1, port: {port}, path: {path}}}}}
        routes:
          {name}-r: {{from: a, to: {name}}}
        """
    )


@pytest.fixture
async def up():
    upstream = await Upstream().start()
    yield upstream
    await upstream.stop()


@pytest.fixture
def shared_dir():
    """A configuration directory outside pytest's private tmp (mode 0700), so that a
    process without root's file powers can still reach it; removed afterwards."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="veylor-test-"))
    path.chmod(0o755)
    yield path
    for p in [path, *path.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    shutil.rmtree(path)


# ------------------------------------------------------------------ the data plane never stalls


@pytest.mark.latency
async def test_a_slow_load_does_not_stall_delivery(tmp_path, up, monkeypatch):
    """Loading runs off the event loop: a load that takes a second (a huge configuration)
    leaves the loop serving clients the whole time."""
    port = free_port()
    config = main_config(up, port)
    async with veylor_inprocess(tmp_path, config) as rt:
        await up.wait_connected()
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        await eventually(lambda: len(rt.endpoints["e"].clients) == 1)
        real_load = loader_module.load_config

        def slow_load(*args, **kwargs):
            import time

            time.sleep(1.0)  # blocks whichever thread runs it
            return real_load(*args, **kwargs)

        monkeypatch.setattr(reload_module, "load_config", slow_load)
        reloader = Reloader(str(tmp_path / "config.yaml"), rt, watch="off", env={})
        (tmp_path / "config.yaml").write_text(config + "  r2: {from: a, to: e}\n")  # a new route
        gaps = []
        received = []

        async def feed_and_receive() -> None:
            loop = asyncio.get_running_loop()
            last = loop.time()
            for i in range(60):
                await up.send(f"m{i}")
                received.append(await asyncio.wait_for(client.recv(), 5))
                now = loop.time()
                gaps.append(now - last)
                last = now
                await asyncio.sleep(0.02)

        feeding = asyncio.create_task(feed_and_receive())
        await asyncio.sleep(0.1)
        applied = (await reloader.reload("test")).applied
        await feeding
        assert applied
        assert received == [f"m{i}" for i in range(60)]
        # A blocked loop would show one gap of a second; a served one, only its pacing.
        assert max(gaps) < 0.5, max(gaps)
        await client.close()


def test_the_file_cache_reparses_only_changed_files(tree, tmp_path):
    files = {"config.yaml": "sources: {a: {url: 'ws://127.0.0.1:1/'}}\n"}
    for i in range(20):
        files[f"routes.d/{i:02d}.yaml"] = dropin(f"e{i}", 9000 + i)
    tree(files)
    cache = FileCache()
    first = load_config("config.yaml", env={}, cache=cache)
    assert (cache.hits, cache.misses) == (0, 21)
    second = load_config("config.yaml", env={}, cache=cache)
    assert (cache.hits, cache.misses) == (21, 21)
    assert second == first and second.routes["e3-r"] is first.routes["e3-r"]  # built once, too
    (tmp_path / "routes.d" / "07.yaml").write_text(dropin("e7", 9107))
    third = load_config("config.yaml", env={}, cache=cache)
    assert (cache.hits, cache.misses) == (41, 22)
    assert third.endpoints["e7"].listen.port == 9107
    (tmp_path / "routes.d" / "07.yaml").unlink()
    assert "e7" not in load_config("config.yaml", env={}, cache=cache).endpoints


def test_a_watcher_reload_reads_only_reported_files_and_files_whose_stat_changed(tree, tmp_path, monkeypatch):
    files = {"config.yaml": "sources: {a: {url: 'ws://127.0.0.1:1/'}}\n"}
    for i in range(10):
        files[f"routes.d/{i:02d}.yaml"] = dropin(f"e{i}", 9000 + i)
    tree(files)
    cache = FileCache()
    first = load_config("config.yaml", env={}, cache=cache)
    reads: list[str] = []
    real = files_module._read_blob

    def counting(label, load):
        reads.append(os.path.basename(label))
        return real(label, load)

    monkeypatch.setattr(files_module, "_read_blob", counting)
    reported = str(tmp_path / "routes.d" / "03.yaml")
    same = load_config("config.yaml", env={}, cache=cache, changed=frozenset({reported}))
    assert reads == ["03.yaml"] and same.digest == first.digest
    reads.clear()
    (tmp_path / "routes.d" / "05.yaml").write_text(dropin("e5", 9105))  # a change nobody reported
    changed = load_config("config.yaml", env={}, cache=cache, changed=frozenset())
    assert reads == ["05.yaml"]  # its stat changed: read again
    assert changed.endpoints["e5"].listen.port == 9105 and changed.digest != first.digest
    reads.clear()
    load_config("config.yaml", env={}, cache=cache)  # SIGHUP: every file is read
    assert len(reads) == 11


def test_a_cached_file_is_read_again_when_a_variable_it_uses_changes(tree):
    tree(
        {
            "config.yaml": "sources: {a: {url: 'ws://127.0.0.1:${P}/'}}\n"
            "endpoints: {e: {websocket: {port: 9000}}}\nroutes: {r: {from: a, to: e}}\n"
        }
    )
    cache = FileCache()
    assert load_config("config.yaml", env={"P": "1"}, cache=cache).sources["a"].url.endswith(":1/")
    assert load_config("config.yaml", env={"P": "2"}, cache=cache).sources["a"].url.endswith(":2/")


# ------------------------------------------------------------------ the watcher's scope


async def test_watcher_ignores_logs_and_other_files_near_the_configuration(tmp_path, up):
    """The 1.x habit `veylor > veylor.log` next to config.yaml caused reloads forever."""
    etc = tmp_path / "etc"
    (etc / "routes.d").mkdir(parents=True)
    (etc / "logs").mkdir()
    port = free_port()
    (etc / "config.yaml").write_text(main_config(up, port))
    veylor = await VeylorProcess("-v", "-c", str(etc / "config.yaml")).start()
    try:
        await veylor.wait_for("catching up after the watch started")
        await veylor.wait_for("no changes")
        before = len(veylor.lines)
        for i in range(20):
            for noise in ("veylor.log", "logs/veylor.log", "routes.d/10-a.yaml.example", ".config.yaml.swp"):
                with open(etc / noise, "a") as fh:
                    fh.write(f"line {i}\n")
            (etc / "config.yaml~").write_text("backup")
            await asyncio.sleep(0.05)
        (etc / ".git").mkdir()
        (etc / ".git" / "index").write_text("x")
        await asyncio.sleep(1.0)
        noise_lines = [line for line in veylor.lines[before:] if "reload" in line or "file change" in line]
        assert noise_lines == [], noise_lines
        # ... while a real drop-in still reloads.
        (etc / "routes.d" / "10-a.yaml").write_text(dropin("extra", port, "/extra"))
        await veylor.wait_for("reload #2 (file change: 10-a.yaml)")
    finally:
        await veylor.stop()


async def test_a_new_include_directory_is_watched_for_every_file(tmp_path, up):
    """A directory added through include was watched for its first file only."""
    etc = tmp_path / "etc"
    etc.mkdir()
    port = free_port()
    (etc / "config.yaml").write_text(main_config(up, port))
    veylor = await VeylorProcess("-c", str(etc / "config.yaml")).start()
    try:
        await veylor.wait_for("watching")
        await asyncio.sleep(1.2)  # past the catch-up look
        (etc / "config.yaml").write_text(main_config(up, port) + "include: [more/*.yaml]\n")
        await veylor.wait_for("reload #2 (", 10)  # include changed (nothing else yet)
        (etc / "more").mkdir()
        (etc / "more" / "a.yaml").write_text(dropin("ea", port, "/a"))
        await veylor.wait_for("reload #3 (", 10)
        await veylor.wait_for(f"watching {etc}, {etc}/more", 10)
        (etc / "more" / "b.yaml").write_text(dropin("eb", port, "/b"))
        # (the new watch's catch-up look may be served by the same reload)
        line = await veylor.wait_for("file change: b.yaml)", 10)
        assert "reload #4 (" in line, line
        client = await ws_client(f"ws://127.0.0.1:{port}/b")
        await up.send("to b")
        assert await asyncio.wait_for(client.recv(), 5) == "to b"
        await client.close()
    finally:
        await veylor.stop()


# ------------------------------------------------------------------ unreadable files and directories


@needs_permissions
def test_check_reports_an_unreadable_routes_dir(shared_dir):
    (shared_dir / "config.yaml").write_text(
        "sources: {a: {url: 'ws://127.0.0.1:1/'}}\nendpoints: {e: {websocket: {port: 9000}}}\n"
        "routes: {r: {from: a, to: e}}\n"
    )
    (shared_dir / "routes.d").mkdir()
    (shared_dir / "routes.d" / "10.yaml").write_text(dropin("x", 9001))
    (shared_dir / "routes.d").chmod(0)
    result = _check_unprivileged(shared_dir)
    assert result.returncode == 1, result.stdout
    assert f"config.yaml: cannot list directory {shared_dir}/routes.d" in result.stderr
    assert "(default include pattern 'routes.d/*.yaml'): permission denied" in result.stderr
    assert "OK" not in result.stdout


@needs_permissions
@pytest.mark.parametrize("mode", [0o000, 0o600])
def test_check_reports_an_unreadable_dropin(shared_dir, mode):
    (shared_dir / "config.yaml").write_text("sources: {a: {url: 'ws://127.0.0.1:1/'}}\n")
    (shared_dir / "routes.d").mkdir()
    target = shared_dir / "routes.d" / "10.yaml"
    target.write_text(dropin("x", 9001))
    if mode:  # the directory can be listed but not entered
        (shared_dir / "routes.d").chmod(0o644)
    else:
        target.chmod(0)
    result = _check_unprivileged(shared_dir)
    assert result.returncode == 1
    assert "permission denied" in result.stderr and "10.yaml" in result.stderr


def _check_unprivileged(directory: Path):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "veylor", "check", "-c", str(directory / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=obey_file_permissions,
    )


@needs_permissions
async def test_unreadable_routes_dir_on_reload_keeps_the_running_graph_and_recovery_is_said(shared_dir, up):
    port = free_port()
    (shared_dir / "config.yaml").write_text(main_config(up, port))
    (shared_dir / "routes.d").mkdir()
    (shared_dir / "routes.d" / "10.yaml").write_text(dropin("x", port, "/x"))
    veylor = await VeylorProcess(
        "-c", str(shared_dir / "config.yaml"), "--no-watch", obey_permissions=True
    ).start()
    try:
        client = await ws_client(f"ws://127.0.0.1:{port}/x")
        (shared_dir / "routes.d").chmod(0)
        veylor.signal(signal.SIGHUP)
        await veylor.wait_for("reload (SIGHUP) rejected")
        line = await veylor.wait_for("cannot list directory")
        assert "permission denied" in line
        await up.wait_connected()
        await up.send("still served")
        assert await asyncio.wait_for(client.recv(), 5) == "still served"
        (shared_dir / "routes.d").chmod(0o755)
        veylor.signal(signal.SIGHUP)
        await veylor.wait_for("the configuration is valid again")
        await client.close()
    finally:
        await veylor.stop()


@needs_permissions
async def test_an_unwatchable_directory_is_said_and_retried_and_sighup_still_works(shared_dir, up):
    port = free_port()
    conf = shared_dir / "conf"
    conf.mkdir()
    (conf / "extra.yaml").write_text(dropin("x", port, "/x"))
    (shared_dir / "config.yaml").write_text(main_config(up, port) + "include: [conf/extra.yaml]\n")
    conf.chmod(0o311)  # its file can be read by name, but the directory cannot be listed
    veylor = await VeylorProcess("-c", str(shared_dir / "config.yaml"), obey_permissions=True).start()
    try:
        line = await veylor.wait_for("cannot watch the configuration files")
        assert "permission denied" in line and "SIGHUP" in line
        assert "watching" not in veylor.log
        (conf / "extra.yaml").write_text(dropin("y", port, "/y"))
        veylor.signal(signal.SIGHUP)  # the only trigger while the watch is down: it works
        await veylor.wait_for("reload #2 (SIGHUP)")
        conf.chmod(0o755)
        veylor.signal(signal.SIGHUP)  # each reload retries the watch
        await veylor.wait_for(f"watching {shared_dir}, {conf}")
        await asyncio.sleep(1.2)  # past the catch-up look
        (conf / "extra.yaml").write_text(dropin("z", port, "/z"))
        await veylor.wait_for("reload #3 (file change: extra.yaml)")
    finally:
        await veylor.stop()


@needs_permissions
async def test_a_directory_unreadable_for_a_moment_is_watched_again_by_itself(shared_dir, up):
    """Issue 22.1: after the configuration directory was unreadable for a moment (chmod
    000, then 755), a drop-in added afterwards was never applied without a signal: the
    watch that failed waited for a reload that nothing triggered. It is retried by itself
    now, said once, and its return is said."""
    port = free_port()
    (shared_dir / "config.yaml").write_text(main_config(up, port))
    routes = shared_dir / "routes.d"
    routes.mkdir()
    veylor = await VeylorProcess("-c", str(shared_dir / "config.yaml"), obey_permissions=True).start()
    try:
        await veylor.wait_for("watching")
        shared_dir.chmod(0)
        # Anything that makes Veylor look (here the directory's own change) finds it unreadable.
        await veylor.wait_for("cannot watch the configuration files", timeout=15)
        await asyncio.sleep(4)  # at least one retry while still unreadable: said once only
        assert veylor.log.count("cannot watch the configuration files") == 1
        shared_dir.chmod(0o755)
        await veylor.wait_for("file watch restored", timeout=15)
        (routes / "10-x.yaml").write_text(dropin("x", port, "/x"))  # no signal
        await veylor.wait_for("reload #2 (file change", timeout=15)
        client = await ws_client(f"ws://127.0.0.1:{port}/x")
        await up.wait_connected()
        await up.send("after the outage")
        assert await asyncio.wait_for(client.recv(), 5) == "after the outage"
        await client.close()
    finally:
        shared_dir.chmod(0o755)
        await veylor.stop()


async def test_a_routes_dir_removed_and_made_again_is_watched_again(tmp_path, up):
    """The kernel's watch on a directory ends with the directory: a routes.d removed and
    made again (as a deployment that replaces it does) was never watched again, so a
    drop-in put in the new one waited for a signal."""
    port = free_port()
    (tmp_path / "config.yaml").write_text(main_config(up, port))
    routes = tmp_path / "routes.d"
    routes.mkdir()
    veylor = await VeylorProcess("-c", str(tmp_path / "config.yaml")).start()
    try:
        await veylor.wait_for("watching")
        await asyncio.sleep(1.2)  # past the catch-up look
        routes.rmdir()
        await veylor.wait_for("watching anew", timeout=15)
        routes.mkdir()
        await asyncio.sleep(1.5)
        (routes / "10-x.yaml").write_text(dropin("x", port, "/x"))  # no signal
        await veylor.wait_for("reload #2 (file change", timeout=15)
        client = await ws_client(f"ws://127.0.0.1:{port}/x")
        await up.wait_connected()
        await up.send("in the new directory")
        assert await asyncio.wait_for(client.recv(), 5) == "in the new directory"
        await client.close()
    finally:
        await veylor.stop()


async def test_recovery_after_a_rejected_reload_is_logged(tmp_path, up):
    port = free_port()
    main = tmp_path / "config.yaml"
    main.write_text(main_config(up, port))
    (tmp_path / "routes.d").mkdir()
    veylor = await VeylorProcess("-c", str(main), "--no-watch").start()
    try:
        bad = tmp_path / "routes.d" / "10-bad.yaml"
        bad.write_text("routes: {oops: {from: nowhere, to: e}}\n")
        veylor.signal(signal.SIGHUP)
        await veylor.wait_for("reload (SIGHUP) rejected")
        bad.unlink()  # removing the bad file: back to the running configuration
        veylor.signal(signal.SIGHUP)
        line = await veylor.wait_for("valid again")
        assert "still generation 1" in line
        bad.write_text("routes: {oops: {from: nowhere, to: e}}\n")
        veylor.signal(signal.SIGHUP)
        await veylor.wait_for("rejected: 1 problem", count=2)
        bad.write_text(dropin("fixed", port, "/fixed"))  # fixing it: a new generation
        veylor.signal(signal.SIGHUP)
        line = await veylor.wait_for("reload #2 (")
        assert "(the configuration is valid again)" in line
    finally:
        await veylor.stop()


def test_check_does_not_claim_nothing_was_changed(tmp_path):
    (tmp_path / "config.yaml").write_text("sources: {a: {url: 'http://x'}}\n")
    result = run_veylor("check", "-c", str(tmp_path / "config.yaml"))
    assert result.returncode == 1
    assert "nothing was changed" not in result.stderr
    assert os.path.basename("config.yaml") in result.stderr


async def test_a_reload_rebuilds_the_fanout_only_of_sources_whose_routes_changed(tmp_path, up):
    port = free_port()
    other = await Upstream().start()
    try:
        (tmp_path / "routes.d").mkdir()
        (tmp_path / "routes.d" / "b-src.yaml").write_text(
            f"sources: {{b: {{url: '{other.url}'}}}}\n"
            f"endpoints: {{f: {{websocket: {{host: 127.0.0.1, port: {port}, path: /f}}}}}}\n"
        )
        (tmp_path / "routes.d" / "b.yaml").write_text("routes: {rb: {from: b, to: f}}\n")
        (tmp_path / "config.yaml").write_text(main_config(up, port))
        async with veylor_inprocess(tmp_path, (tmp_path / "config.yaml").read_text()) as rt:
            reloader = Reloader(str(tmp_path / "config.yaml"), rt, watch="off", env={})
            (tmp_path / "routes.d" / "c.yaml").write_text("routes: {rc: {from: a, to: f}}\n")
            assert (await reloader.reload("first: the running graph now comes from the cache")).applied
            (tmp_path / "routes.d" / "c.yaml").unlink()
            assert (await reloader.reload("second")).applied
            before = dict(rt.router.table)
            (tmp_path / "routes.d" / "b.yaml").write_text("routes: {rb: {from: b, to: [f, e]}}\n")
            assert (await reloader.reload("test")).applied
            assert rt.router.table["a"] is before["a"]  # untouched: the same object
            assert rt.router.table["b"] is not before["b"]
            client = await ws_client(f"ws://127.0.0.1:{port}/")
            await eventually(lambda: len(rt.endpoints["e"].clients) == 1)
            await up.wait_connected()
            await other.wait_connected()
            await up.send("from a")
            await other.send("from b")
            got = {await asyncio.wait_for(client.recv(), 5) for _ in range(2)}
            assert got == {"from a", "from b"}
            await client.close()
    finally:
        await other.stop()


async def test_a_slow_writer_never_gets_a_partial_file_applied(tmp_path, up):
    """A file cut at a line break is often valid YAML: one was applied and removed an
    endpoint. A changed file is loaded once it has been still for the settle time (30 ms):
    this writer pauses 10 ms between lines, for longer than the watcher's debounce.

    The writer times its own pauses: on a loaded machine (the suite runs in parallel) one
    can last longer than the settle time, and then a partial file *should* be loaded. Such
    a run proves nothing either way and is made again, with a fresh Veylor, up to 5 times."""
    lines = ["endpoints:", "  x: {websocket: {host: 127.0.0.1, port: PORT, path: /x}}", "routes:"]
    lines += [f"  r{i:02d}: {{from: a, to: x}}" for i in range(60)]
    for attempt in range(5):
        etc = tmp_path / f"etc{attempt}"
        (etc / "routes.d").mkdir(parents=True)
        port = free_port()
        (etc / "config.yaml").write_text(main_config(up, port))
        veylor = await VeylorProcess("-v", "-c", str(etc / "config.yaml")).start()
        try:
            await veylor.wait_for("catching up after the watch started")
            await asyncio.sleep(0.3)
            longest = 0.0
            with open(etc / "routes.d" / "10-slow.yaml", "w") as fh:
                last = time.monotonic()
                for line in lines:
                    fh.write(line.replace("PORT", str(port)) + "\n")
                    fh.flush()
                    now = time.monotonic()
                    longest, last = max(longest, now - last), now
                    await asyncio.sleep(0.01)
            if longest > 0.025:
                continue  # the writer itself was held up past the settle time
            line = await veylor.wait_for("reload #2 (", 10)
            await asyncio.sleep(1.0)  # anything else that was going to happen
            reloads = [entry for entry in veylor.lines if "reload" in entry and "(file change" in entry]
            assert len([r for r in reloads if "reload #" in r]) == 1, reloads
            assert not any("rejected" in r for r in reloads), reloads  # no partial file even tried
            assert "61 changes" in line, line  # the endpoint and all 60 routes at once
            return
        finally:
            await veylor.stop()
    pytest.fail("the writer was held up past the settle time in 5 runs of 5")
