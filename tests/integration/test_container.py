"""The container image, built and run for real with podman: a minimal Debian base made
with debootstrap (no registry is reachable here), the image built on it with
packaging/build-image, then run with a mounted configuration against a real upstream
on this host. Slow (`-m "not slow"` skips it); .ci/run installs podman, runc and
debootstrap. Every `podman run` passes the limits it needs (``ulimits()``): no
containers.conf is needed."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import resource
import shutil
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import UnixClient, eventually, free_port, ws_client

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("VEYLOR_TEST_CACHE", "/var/cache/veylor-test"))
BASE = "localhost/veylor-test-base:bookworm"
IMAGE = "localhost/veylor-test:dev"
# One debootstrap tree for both the image's base and the systemd unit's container
# (tests/integration/test_systemd.py): each debootstrap took 53 s and 55 s of CPU on a
# fresh machine. So the image's test base has systemd too, which the image does not use
# (it stands for python:3.11-slim: a Debian with python3 and python3-venv).
TREE = "rootfs-bookworm"
PACKAGES = "python3,python3-venv,systemd,systemd-sysv,dbus,procps"

PODMAN = [  # the marks of every test that builds or runs a container
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        shutil.which("podman") is None or shutil.which("debootstrap") is None,
        reason="needs podman and debootstrap (.ci/run installs them)",
    ),
]
pytestmark = PODMAN


def run(*args: str, timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=check, **kw)


def ulimits() -> list[str]:
    """`--ulimit` options for `podman run`: this process's own hard limits. Unless told,
    rootful podman gives a container 1,048,576 open files and processes, which a machine
    where podman may not raise its own limits (no CAP_SYS_RESOURCE: inside a container,
    some CI) cannot grant: runc then fails ("error setting rlimit type 7"). What podman
    has it can always give (processes: at most pid_max, podman lowers its own limit to
    that). packaging/build-image does the same for its one `podman run`."""
    files = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], int(Path("/proc/sys/fs/nr_open").read_text()))
    processes = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    if processes == resource.RLIM_INFINITY or processes > pid_max:
        processes = pid_max
    return ["--ulimit", f"nofile={files}:{files}", "--ulimit", f"nproc={processes}:{processes}"]


def mirror() -> str:
    """The Debian mirror this machine's apt is configured with."""
    for source in [*Path("/etc/apt/sources.list.d").glob("*"), Path("/etc/apt/sources.list")]:
        if source.is_file():
            m = re.search(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+debian/?)\s*$", source.read_text(), re.M)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


def debian_image(tag: str, tree: str, packages: str, *changes: str) -> str:
    """A minimal Debian (bookworm) with ``packages``, as the podman image ``tag``; the
    debootstrap tree (``tree`` under the cache) is kept between runs on this machine.
    ``changes``: Containerfile instructions for the import (CMD=...)."""
    if run("podman", "image", "exists", tag, check=False).returncode == 0:
        return tag
    rootfs = CACHE / tree
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{tree}.lock", "w") as lock:  # (the container and systemd tests run at once)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (rootfs / ".complete").exists():
            shutil.rmtree(rootfs, ignore_errors=True)
            run(
                "debootstrap", "--variant=minbase", f"--include={packages}", "bookworm", str(rootfs), mirror()
            )
            (rootfs / ".complete").touch()
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--exclude=./.complete", "-c", "."], stdout=subprocess.PIPE
    )
    run("podman", "import", *(f"--change={c}" for c in changes), "-", tag, stdin=tar.stdout)
    tar.wait(60)
    return tag


def base_image() -> str:
    """The image's test base: python3 and python3-venv (and systemd, unused: see TREE)."""
    return debian_image(BASE, TREE, PACKAGES)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    base = base_image()
    result = run(
        str(REPO / "packaging" / "build-image"), "--base", base, "--tag", "localhost/veylor-test:dev"
    )
    assert "built localhost/veylor-test:dev" in result.stdout, result.stdout + result.stderr
    yield IMAGE
    run("podman", "image", "prune", "-f", check=False)  # the layers earlier builds left


class Container:
    """One `podman run -d` of the image, with /etc/veylor and /run/veylor from the test."""

    def __init__(self, image: str, config: Path, sockets: Path) -> None:
        self.name = f"veylor-test-{uuid.uuid4().hex[:8]}"
        run(
            "podman", "run", "-d", "--name", self.name, "--network=host", *ulimits(),
            "-v", f"{config}:/etc/veylor:ro", "-v", f"{sockets}:/run/veylor", image,
        )  # fmt: skip

    def logs(self) -> str:
        result = run("podman", "logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self) -> dict:
        return json.loads(run("podman", "inspect", self.name).stdout)[0]["State"]

    def remove(self) -> None:
        run("podman", "rm", "-f", "-t", "0", self.name, check=False)


async def test_the_image_runs_a_mounted_configuration_reloads_and_stops_cleanly(image, tmp_path, upstream):
    config, sockets = tmp_path / "etc", tmp_path / "run"
    (config / "routes.d").mkdir(parents=True)
    sockets.mkdir()
    os.chmod(sockets, 0o777)  # the container's user (uid 10001) makes its sockets here
    port, more = free_port(), free_port()
    (config / "config.yaml").write_text(
        textwrap.dedent(
            f"""
            sources: {{feed: {{url: "{upstream.url}"}}}}
            endpoints:
              ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /ws}}}}
              ipc: {{unix: {{path: /run/veylor/feed.sock, mode: "0666"}}}}
            routes: {{all: {{from: feed, to: [ws, ipc]}}}}
            include: [routes.d/*.yaml]
            admin: {{unix: /run/veylor/admin.sock, mode: "0666"}}
            """
        )
    )
    os.chmod(config / "config.yaml", 0o644)
    box = Container(image, config, sockets)
    try:
        await eventually(lambda: "ready:" in box.logs(), 60, 0.2, "the container's Veylor ready")
        await upstream.wait_connected()
        # Not root: the image's own user.
        assert run("podman", "exec", box.name, "id", "-u").stdout.strip() == "10001"
        assert run("podman", "top", box.name, "user").stdout.split()[1:] == ["veylor"]
        # Messages reach a WebSocket client and a Unix client (the socket on the volume).
        client = await ws_client(f"ws://127.0.0.1:{port}/ws")
        unix = await UnixClient.connect(sockets / "feed.sock")
        await upstream.send("hello")
        assert await asyncio.wait_for(client.recv(), 10) == "hello"
        assert await unix.recv(timeout=10) == b"hello"
        # The TUI is in the image: `veylor top` asks only for a terminal (exec -it).
        top = run("podman", "exec", box.name, "veylor", "top", check=False)
        assert top.returncode == 2 and "needs a terminal" in top.stderr and "pip install" not in top.stderr
        # The man page and the shell completions are in the image (the wheel's data).
        shared = run(
            "podman",
            "exec",
            box.name,
            "ls",
            "/opt/veylor/share/man/man1",
            "/opt/veylor/share/bash-completion/completions",
        )
        assert "veylor.1" in shared.stdout and "\nveylor\n" in shared.stdout, shared.stdout
        assert run("podman", "exec", box.name, "veylor", "completion", "bash").stdout.startswith(
            "# bash completion"
        )
        # The image's health check (veylor health through the admin socket).
        assert run("podman", "healthcheck", "run", box.name, check=False).returncode == 0
        # A drop-in written to the mounted directory is applied by itself.
        (config / "routes.d" / "more.yaml").write_text(
            f"endpoints: {{more: {{websocket: {{host: 127.0.0.1, port: {more}}}}}}}\n"
            "routes: {more: {from: feed, to: more}}\n"
        )
        os.chmod(config / "routes.d" / "more.yaml", 0o644)
        await eventually(lambda: "+ route more" in box.logs(), 30, 0.2, "the drop-in applied")
        second = await ws_client(f"ws://127.0.0.1:{more}/")
        await upstream.send("again")
        assert await asyncio.wait_for(second.recv(), 10) == "again"
        assert await asyncio.wait_for(client.recv(), 10) == "again"
        # SIGHUP through podman reloads.
        run("podman", "kill", "--signal", "HUP", box.name)
        await eventually(lambda: "SIGHUP" in box.logs(), 20, 0.2, "the reload on SIGHUP")
        await client.close()
        await second.close()
        await unix.close()
        # podman stop: SIGTERM, a clean exit within 5 s, no socket file left.
        started = time.monotonic()
        run("podman", "stop", "-t", "10", box.name)
        assert time.monotonic() - started < 5.0
        assert box.state()["ExitCode"] == 0, box.logs()
        assert sorted(p.name for p in sockets.iterdir()) == []
    finally:
        box.remove()
