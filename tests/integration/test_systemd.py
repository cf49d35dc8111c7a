"""The systemd unit run for real: a container with systemd as PID 1 (a minimal Debian
with systemd, made with debootstrap: no registry is reachable here), Veylor installed
in it as the README says (packaging/install.sh, from wheels built on this host), and
driven with systemctl: start returns once Veylor is READY, reload applies a drop-in in
the same process and fails visibly on a refused one, a killed process is restarted,
stop is clean. Slow; the container is privileged so that systemd can set up the
unit's sandbox (namespaces, a dynamic user) inside it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, ws_client
from test_container import PODMAN, debian_image, run, ulimits

REPO = Path(__file__).resolve().parents[2]
SYSTEMD_BASE = "localhost/veylor-test-systemd:bookworm"
PACKAGES = "python3,python3-venv,systemd,systemd-sysv,dbus,procps"

pytestmark = PODMAN


def systemd_image() -> str:
    return debian_image(SYSTEMD_BASE, "rootfs-systemd", PACKAGES, "CMD=/sbin/init")


class Booted:
    """A container booted with systemd, /src (this tree) and /wheels mounted."""

    def __init__(self, image: str, wheels: Path) -> None:
        self.name = f"veylor-systemd-{uuid.uuid4().hex[:8]}"
        run(
            "podman", "run", "-d", "--name", self.name, "--systemd=always", "--privileged", *ulimits(),
            "--network=host", "-v", f"{REPO}:/src:ro", "-v", f"{wheels}:/wheels:ro", image, "/sbin/init",
        )  # fmt: skip

    def sh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run("podman", "exec", self.name, "sh", "-c", command, check=check, timeout=timeout)

    def main_pid(self) -> int:
        return int(self.sh("systemctl show -p MainPID --value veylor").stdout)

    def journal(self) -> str:
        return self.sh("journalctl -u veylor --no-pager -o cat", check=False).stdout

    def remove(self) -> None:
        run("podman", "rm", "-f", "-t", "0", self.name, check=False)


@pytest.fixture(scope="module")
def booted(tmp_path_factory) -> Iterator[Booted]:
    image = systemd_image()
    wheels = tmp_path_factory.mktemp("wheels")
    run(sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), f"{REPO}[tui]")
    box = Booted(image, wheels)
    try:
        box.sh("systemctl is-system-running --wait || true", timeout=120)
        box.sh("/src/packaging/install.sh --wheels /wheels --no-start", timeout=300)
        # For the test only: keep /run/veylor after stop, to see that Veylor itself
        # removed its sockets (systemd would remove the directory anyway).
        box.sh(
            "mkdir -p /etc/systemd/system/veylor.service.d && printf '[Service]\\nRuntimeDirectoryPreserve=yes\\n'"
            " > /etc/systemd/system/veylor.service.d/test.conf && systemctl daemon-reload"
        )
        yield box
    finally:
        box.remove()


async def test_the_unit_starts_ready_reloads_in_place_refuses_restarts_and_stops(booted, upstream):
    port, more = free_port(), free_port()
    # The upstream's URL as a secret would be: in the root-only environment file.
    booted.sh(f"umask 077 && echo 'FEED_URL={upstream.url}' > /etc/veylor/veylor.env")
    booted.sh(
        "cat > /etc/veylor/config.yaml <<'EOF'\n"
        + textwrap.dedent(
            """\
            sources: {feed: {url: "${FEED_URL}"}}
            endpoints:
              ws: {websocket: {host: 127.0.0.1, port: PORT}}
              ipc: {unix: {path: /run/veylor/feed.sock, mode: "0666"}}
            routes: {all: {from: feed, to: [ws, ipc]}}
            include: [routes.d/*.yaml]
            admin: {unix: /run/veylor/admin.sock, mode: "0660"}
            """
        ).replace("PORT", str(port))
        + "EOF"
    )
    # start returns once Veylor is READY: it listens when systemctl returns.
    booted.sh("systemctl start veylor", timeout=90)
    assert booted.sh("systemctl is-active veylor").stdout.strip() == "active"
    client = await ws_client(f"ws://127.0.0.1:{port}/")
    await upstream.wait_connected()
    await upstream.send("one")
    assert await asyncio.wait_for(client.recv(), 10) == "one"
    pid = booted.main_pid()
    assert pid > 0
    assert "ready:" in booted.journal()
    # The static user install.sh made is the one the unit runs as.
    assert booted.sh(f"stat -c %U /proc/{pid}").stdout.strip() == "veylor"

    # reload applies a drop-in, in the same process; the journal shows what changed and
    # the steps taken. (The unit also watches the files: the watcher may apply the
    # drop-in first, and systemctl reload then finds nothing left to change.)
    booted.sh(
        f"echo 'endpoints: {{more: {{websocket: {{host: 127.0.0.1, port: {more}}}}}}}' > /etc/veylor/routes.d/more.yaml"
        " && echo 'routes: {more: {from: feed, to: more}}' >> /etc/veylor/routes.d/more.yaml"
    )
    booted.sh("systemctl reload veylor", timeout=60)
    assert booted.main_pid() == pid
    journal = booted.journal()
    assert "+ route more" in journal and "steps: create_endpoint more" in journal, journal
    second = await ws_client(f"ws://127.0.0.1:{more}/")
    await upstream.send("two")
    assert await asyncio.wait_for(second.recv(), 10) == "two"
    assert await asyncio.wait_for(client.recv(), 10) == "two"

    # A refused drop-in: systemctl reload fails, the service runs on with the old graph.
    booted.sh("echo 'routes: {bad: {from: feed, to: nowhere}}' > /etc/veylor/routes.d/bad.yaml")
    refused = booted.sh("systemctl reload veylor", check=False, timeout=60)
    assert refused.returncode != 0
    assert "routes.d/bad.yaml:1" in booted.journal()  # refused, with the file and line
    assert booted.sh("systemctl is-active veylor").stdout.strip() == "active"
    assert booted.main_pid() == pid
    await upstream.send("three")
    assert await asyncio.wait_for(client.recv(), 10) == "three"
    booted.sh("rm /etc/veylor/routes.d/bad.yaml")
    await client.close()
    await second.close()

    # Killed: systemd starts it again (Restart=on-failure).
    booted.sh(f"kill -9 {pid}")
    for _ in range(100):
        state = booted.sh("systemctl is-active veylor", check=False).stdout.strip()
        if state == "active" and booted.main_pid() not in (0, pid):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"not restarted: {state}\n{booted.journal()[-2000:]}")

    # stop is clean: exit 0 (no failure recorded), the sockets gone.
    booted.sh("systemctl stop veylor", timeout=60)
    assert booted.sh("systemctl is-active veylor", check=False).stdout.strip() == "inactive"
    assert booted.sh("systemctl show -p Result --value veylor").stdout.strip() == "success"
    assert booted.sh("test -d /run/veylor && ls -A /run/veylor | wc -l").stdout.strip() == "0"
