"""The systemd unit (packaging/veylor.service) and the packaged configuration:
`systemd-analyze verify` passes, the exposure score `systemd-analyze security` gives
is below 2.0 and is the one docs/operations.md reports, and the configuration the unit runs
(packaging/config/) passes `veylor check`. The unit run for real under systemd is in
test_systemd.py (slow)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_veylor

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "veylor.service"
VEYLOR = Path(sys.executable).parent / "veylor"  # this venv's console script

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


def test_the_unit_verifies(tmp_path):
    # verify checks that ExecStart= and friends exist: point them at this venv's veylor.
    unit = tmp_path / "veylor.service"
    unit.write_text(UNIT.read_text().replace("/opt/veylor/bin/veylor", str(VEYLOR)))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman (.ci/run installs it)")
def test_the_container_unit_verifies_and_waits_for_veylor_ready():
    unit = REPO / "packaging" / "veylor-container.service"
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    text = unit.read_text()
    assert "Type=notify" in text and "--sdnotify=container" in text


def test_the_unit_is_hardened_below_2_and_the_docs_say_how_much():
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for veylor.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    assert score < 2.0
    assert f"exposure level {score}" in (REPO / "docs" / "operations.md").read_text()


def test_the_unit_keeps_unix_peer_credentials_and_lets_socket_files_be_given_away():
    # The fast half of test_systemd.py's Unix tests: no user namespace of its own (in
    # one, every other uid is 65534 to SO_PEERCRED and to chown), and chown (of
    # @privileged) allowed back after the filter's deny list.
    text = UNIT.read_text()
    assert not re.search(r"^PrivateUsers=(?!no\b|false\b|0\b|off\b)", text, re.M | re.I)
    filters = re.findall(r"^SystemCallFilter=(.*)$", text, re.M)
    assert filters.index("@chown") > filters.index("~@privileged @resources"), filters


def test_the_unit_notifies_reloads_synchronously_and_restarts():
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "ExecStartPre=/opt/veylor/bin/veylor check -c /etc/veylor/config.yaml",
        "ExecReload=/opt/veylor/bin/veylor reload -c /etc/veylor/config.yaml",
        "Restart=on-failure",
        "RuntimeDirectory=veylor",
        "ConfigurationDirectory=veylor",
        "DynamicUser=yes",
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert re.search(r"^WatchdogSec=\d+", text, re.M) and re.search(r"^LimitNOFILE=\d+", text, re.M)


def test_the_packaged_configuration_checks_and_puts_the_admin_endpoint_in_run_veylor():
    config = REPO / "packaging" / "config" / "config.yaml"
    result = run_veylor("check", "-c", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unix: /run/veylor/admin.sock" in config.read_text()
