"""The systemd unit run for real: a container with systemd as PID 1 (a minimal Debian
with systemd, made with mmdebstrap: no registry is reachable here), Veylor installed
in it as docs/operations.md says (packaging/install.sh, from wheels built on this host), and
driven with systemctl: start returns once Veylor is READY, reload applies a drop-in in
the same process and fails visibly on a refused one, a killed process is restarted,
stop is clean; Unix clients of other users are told apart by their own uid and gid
(SO_PEERCRED), and socket files get the configured owner and group. Slow; the container
is privileged so that systemd can set up the unit's sandbox (namespaces, a dynamic
user) inside it."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import eventually, free_port, ws_client
from test_container import PODMAN, base_image, run, ulimits, wheels

REPO = Path(__file__).resolve().parents[2]
# Users of the container whose clients connect to Veylor's Unix sockets: alice (uid
# 1000) and carol (1002, primary group desk) are allowed, bob (1001) is not; alice and
# carol are in traders, the group a socket file is given to.
USERS = (
    "groupadd -g 2000 desk && groupadd -g 2001 traders"
    " && useradd -u 1000 -G traders alice && useradd -u 1001 bob && useradd -u 1002 -g desk -G traders carol"
)
# A Unix client run as one of them: connects, says so, then prints the first message
# (4-byte big-endian length, then the payload) or how the connection ended.
PEER_CLIENT = """\
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print("refused", exc.strerror, flush=True)
    sys.exit()
print("connected", flush=True)
data = b""
try:
    while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except OSError as exc:
    print("closed", exc.strerror, flush=True)
    sys.exit()
print("message", data[4:].decode() if len(data) >= 4 else "closed", flush=True)
"""

pytestmark = PODMAN


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

    def client(self, user: str, path: str) -> PeerClient:
        """A Unix client of ``path`` run as ``user`` (see PEER_CLIENT)."""
        return PeerClient(self.name, user, path)

    def remove(self) -> None:
        run("podman", "rm", "-f", "-t", "0", self.name, check=False)


class PeerClient:
    """A Unix client in the container, as a user of it; its lines are read off the loop."""

    def __init__(self, box: str, user: str, path: str) -> None:
        self.process = subprocess.Popen(
            ["podman", "exec", "--user", user, box, "python3", "/usr/local/bin/peer-client", path],
            stdout=subprocess.PIPE,
            text=True,
        )

    async def line(self, timeout: float = 30) -> str:
        assert self.process.stdout is not None
        return (await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), timeout)).strip()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)


@pytest.fixture(scope="module")
def booted(tmp_path_factory) -> Iterator[Booted]:
    box = Booted(base_image(), wheels(tmp_path_factory))  # (booted with /sbin/init: see Booted)
    try:
        box.sh("systemctl is-system-running --wait || true", timeout=120)
        box.sh("/src/packaging/install.sh --wheels /wheels --no-start", timeout=300)
        # For the test only: keep /run/veylor after stop, to see that Veylor itself
        # removed its sockets (systemd would remove the directory anyway).
        box.sh(
            "mkdir -p /etc/systemd/system/veylor.service.d && printf '[Service]\\nRuntimeDirectoryPreserve=yes\\n'"
            " > /etc/systemd/system/veylor.service.d/test.conf && systemctl daemon-reload"
        )
        box.sh(USERS)
        box.sh(f"cat > /usr/local/bin/peer-client <<'EOF'\n{PEER_CLIENT}EOF")
        yield box
    finally:
        box.remove()


def test_install_sh_installs_the_man_page_and_completions_again_on_an_upgrade(booted):
    """Linked from /opt/veylor/share (the wheel's data), as the command is: an upgrade
    updates them. Run again (an upgrade of the same version), install.sh leaves them so."""
    links = {
        "/usr/local/share/man/man1/veylor.1": "/opt/veylor/share/man/man1/veylor.1",
        "/usr/local/share/bash-completion/completions/veylor": "/opt/veylor/share/bash-completion/completions/veylor",
        "/usr/local/share/zsh/site-functions/_veylor": "/opt/veylor/share/zsh/site-functions/_veylor",
    }
    for attempt in range(2):
        if attempt:
            booted.sh("/src/packaging/install.sh --wheels /wheels --no-start", timeout=300)
        for link, target in links.items():
            assert booted.sh(f"test -s {link} && readlink -f {link}").stdout.strip() == target, link
        # No fish in this image: no /etc/fish made for it.
        assert booted.sh("test -e /etc/fish", check=False).returncode != 0
        if booted.sh("command -v man", check=False).returncode == 0:  # (not in this minimal image)
            assert booted.sh("man -w veylor").stdout.strip() == "/usr/local/share/man/man1/veylor.1"
        page = booted.sh("cat /usr/local/share/man/man1/veylor.1").stdout
        assert "veylor \\- declarative WebSocket fan\\-out router" in page
        # bash takes the completion and it completes.
        completed = booted.sh(
            "bash -c '. /usr/local/share/bash-completion/completions/veylor"
            ' && COMP_WORDS=(veylor ch) COMP_CWORD=1 && _veylor && echo "${COMPREPLY[*]}"\''
        )
        assert completed.stdout.strip() == "check", completed.stdout + completed.stderr


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


def start_with(booted: Booted, config: str, dropin: str = "") -> int:
    """(Re)start the unit with ``config`` as /etc/veylor/config.yaml and ``dropin``
    added to its [Service] section; where this run's journal starts. The drop-in also
    undoes the fixture's RuntimeDirectoryPreserve=yes (its name sorts after test.conf):
    with DynamicUser=, a preserved runtime directory lives in /run/private (mode 0700),
    where other users cannot reach a socket."""
    booted.sh(
        "systemctl stop veylor && rm -f /etc/veylor/routes.d/*.yaml", timeout=60
    )  # (no reload on the way)
    mark = len(booted.journal())
    booted.sh("cat > /etc/veylor/config.yaml <<'EOF'\n" + textwrap.dedent(config) + "EOF")
    booted.sh(
        f"printf '[Service]\\nRuntimeDirectoryPreserve=no\\n{dropin}\\n'"
        " > /etc/systemd/system/veylor.service.d/unix.conf"
    )
    started = booted.sh("systemctl daemon-reload && systemctl restart veylor", check=False, timeout=90)
    assert started.returncode == 0, started.stderr + booted.journal()[mark:]
    return mark


def stop(booted: Booted) -> None:
    """Stop the unit and remove what :func:`start_with` added to it."""
    booted.sh("systemctl stop veylor", timeout=60)
    booted.sh("rm -f /etc/systemd/system/veylor.service.d/unix.conf && systemctl daemon-reload")


async def test_unix_peers_are_told_apart_by_their_own_uid_and_gid_under_the_unit(booted, upstream):
    # The unit must not put Veylor in a user namespace of its own (PrivateUsers=): there
    # every other uid and gid is nobody (65534) to SO_PEERCRED, and allowed_uids and
    # allowed_gids match no one. Mode 0666: the file lets everyone connect, the
    # credentials decide.
    mark = start_with(
        booted,
        f"""\
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints:
          ipc: {{unix: {{path: /run/veylor/peers.sock, mode: "0666", allowed_uids: [1000], allowed_gids: [2000]}}}}
        routes: {{all: {{from: feed, to: ipc}}}}
        admin: {{unix: /run/veylor/admin.sock}}
        """,
    )
    await upstream.wait_connected()
    clients = {user: booted.client(user, "/run/veylor/peers.sock") for user in ("alice", "bob", "carol")}
    try:
        for client in clients.values():
            assert await client.line() == "connected"
        # alice by her uid, carol by her primary group (desk, 2000); bob is neither.
        assert (await clients["bob"].line()).startswith(("closed", "message closed"))
        await eventually(
            lambda: all(f"uid {uid}) connected" in booted.journal()[mark:] for uid in (1000, 1002)),
            30,
            0.2,
            "alice and carol connected, by their uids",
        )
        journal = booted.journal()[mark:]
        assert "uid 1001): uid 1001 and gid 1001 are not allowed" in journal, journal
        assert "65534" not in journal
        await upstream.send("for alice and carol")
        assert await clients["alice"].line() == "message for alice and carol"
        assert await clients["carol"].line() == "message for alice and carol"
    finally:
        for client in clients.values():
            client.kill()
        stop(booted)


async def test_unix_socket_files_get_the_configured_owner_and_group_under_the_unit(booted, upstream):
    config = f"""\
        sources: {{feed: {{url: "{upstream.url}"}}}}
        endpoints:
          ipc: {{unix: {{path: /run/veylor/desk.sock, mode: "0660", owner: OWNER, group: GROUP}}}}
        routes: {{all: {{from: feed, to: ipc}}}}
        admin: {{unix: /run/veylor/admin.sock}}
        """
    try:
        # A group the service is a member of (SupplementaryGroups=, as docs/operations.md says): no
        # capability needed. With mode 0660 its members connect, others cannot.
        mark = start_with(
            booted,
            config.replace("OWNER", "veylor").replace("GROUP", "traders"),
            "SupplementaryGroups=traders",
        )
        assert booted.sh("stat -c '%U %G %a' /run/veylor/desk.sock").stdout.split() == [
            "veylor",
            "traders",
            "660",
        ]
        await upstream.wait_connected()
        alice, bob = (
            booted.client("alice", "/run/veylor/desk.sock"),
            booted.client("bob", "/run/veylor/desk.sock"),
        )
        try:
            assert await bob.line() == "refused Permission denied"
            assert await alice.line() == "connected"
            await eventually(
                lambda: "uid 1000) connected" in booted.journal()[mark:], 30, 0.2, "alice connected"
            )
            await upstream.send("for traders")
            assert await alice.line() == "message for traders"
        finally:
            alice.kill()
            bob.kill()
        # Another user as the owner: the operator gives the unit CAP_CHOWN in a drop-in.
        mark = start_with(
            booted,
            config.replace("OWNER", "alice").replace("GROUP", "desk"),
            "CapabilityBoundingSet=CAP_CHOWN\\nAmbientCapabilities=CAP_CHOWN",
        )
        assert booted.sh("stat -c '%U %G %a' /run/veylor/desk.sock").stdout.split() == [
            "alice",
            "desk",
            "660",
        ]
        # ... and a new mode by reload, though the file is alice's (no CAP_FOWNER).
        booted.sh("sed -i 's/0660/0640/' /etc/veylor/config.yaml && systemctl reload veylor", timeout=60)
        assert booted.sh("stat -c '%U %G %a' /run/veylor/desk.sock").stdout.split() == [
            "alice",
            "desk",
            "640",
        ]
        assert "not applied" not in booted.journal()[mark:]
    finally:
        stop(booted)
