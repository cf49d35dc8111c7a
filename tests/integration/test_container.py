"""The container image, built and run for real with podman: a minimal Debian base made
with mmdebstrap (no registry is reachable here), the image built on it with
packaging/build-image, then run with a mounted configuration against a real upstream
on this host. Slow (`-m "not slow"` skips it); .ci/run installs podman, runc and
mmdebstrap. Every `podman run` passes the limits it needs (``ulimits()``): no
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
import sys
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
# One Debian tree, one image, for both the image's base and the systemd unit's container
# (tests/integration/test_systemd.py, which boots it with /sbin/init): so the image's
# test base has systemd too, which the image does not use (it stands for
# python:3.11-slim: a Debian with python3 and python3-venv). Made with mmdebstrap: 36 s
# and 38 s of CPU on this 2-core machine, where debootstrap took 67 s and 67 s (it
# installs one package at a time); debootstrap if that is all there is.
TREE = "rootfs-bookworm"
PACKAGES = "python3,python3-venv,systemd,systemd-sysv,dbus,procps"
BOOTSTRAP = shutil.which("mmdebstrap") or shutil.which("debootstrap")

PODMAN = [  # the marks of every test that builds or runs a container
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        shutil.which("podman") is None or BOOTSTRAP is None,
        reason="needs podman and mmdebstrap or debootstrap (.ci/run installs them)",
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


def base_image() -> str:
    """The image's test base, and the systemd unit's container: a minimal Debian
    (bookworm) with ``PACKAGES``, as the podman image ``BASE``. The tree (``TREE`` under
    the cache) is kept between runs on this machine; the container and systemd tests
    run at once, so it is made under a lock, once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{TREE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if run("podman", "image", "exists", BASE, check=False).returncode == 0:
            return BASE
        rootfs = CACHE / TREE
        if not (rootfs / ".complete").exists():
            shutil.rmtree(rootfs, ignore_errors=True)
            assert BOOTSTRAP is not None
            quiet = ["--quiet"] if BOOTSTRAP.endswith("mmdebstrap") else []
            run(
                BOOTSTRAP,
                *quiet,
                "--variant=minbase",
                f"--include={PACKAGES}",
                "bookworm",
                str(rootfs),
                mirror(),
            )
            (rootfs / ".complete").touch()
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--exclude=./.complete", "-c", "."], stdout=subprocess.PIPE
        )
        run("podman", "import", "-", BASE, stdin=tar.stdout)
        tar.wait(60)
    return BASE


def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Veylor's wheel and its dependencies', for this host's Python (the base's too: both
    are Debian bookworm's 3.11): built once per test run, for the image
    (``build-image --wheels``) and the systemd unit's install (``install.sh --wheels``),
    which run at once on two workers; 13 s of CPU each time."""
    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # (the run's directory, above each worker's own)
    out = shared / "wheels"
    with open(shared / "wheels.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "wheels.complete").exists():
            shutil.rmtree(out, ignore_errors=True)
            run(sys.executable, "-m", "pip", "wheel", "-q", "-w", str(out), str(REPO))
            (shared / "wheels.complete").touch()
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = base_image()
    result = run(
        str(REPO / "packaging" / "build-image"), "--base", base, "--tag", IMAGE,
        "--wheels", str(wheels(tmp_path_factory)),
    )  # fmt: skip
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
