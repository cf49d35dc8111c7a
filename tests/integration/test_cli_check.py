"""`veylor check` as operators run it: a real subprocess, exit codes and output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import run_veylor, write_tree

REPO = Path(__file__).resolve().parents[2]

GOOD = """
sources:
  binance:
    url: wss://stream.example.com/ws?token=abc
    headers: {X-MBX-APIKEY: "${BINANCE_KEY}"}
endpoints:
  public: {websocket: {port: 8765, path: /binance}}
routes:
  btc: {from: binance, to: public, filter: {json: {path: s, in: [BTCUSDT]}}}
"""


def test_check_good_file_prints_graph_and_exits_0(tmp_path):
    write_tree(
        tmp_path,
        {
            "config.yaml": GOOD,
            "routes.d/10-ipc.yaml": """
        endpoints:
          ipc: {unix: {path: /tmp/veylor-check.sock}}
        routes:
          ipc: {from: binance, to: ipc, upstream: true}
    """,
        },
    )
    result = run_veylor("check", "-c", "config.yaml", cwd=tmp_path, env={"BINANCE_KEY": "supersecret"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "config.yaml: the current format;" in out and "v1 format" not in out
    assert "files read: config.yaml, routes.d/10-ipc.yaml" in out
    assert "binance  wss://stream.example.com/ws?token=***" in out
    assert "X-MBX-APIKEY=<redacted>" in out
    assert 'btc  binance -> public; filter: json s in ["BTCUSDT"]; upstream: no' in out
    assert "from routes.d/10-ipc.yaml:2" in out
    assert "OK: 1 source, 2 endpoints, 2 routes" in out
    assert "supersecret" not in out + result.stderr and "token=abc" not in out


def test_check_json(tmp_path):
    write_tree(tmp_path, {"config.yaml": GOOD})
    result = run_veylor("check", "--json", cwd=tmp_path, env={"BINANCE_KEY": "supersecret"})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["shape"] == "v1"
    assert doc["routes"]["btc"]["filter"] == {"json": {"path": "s", "in": ["BTCUSDT"]}}
    assert doc["sources"]["binance"]["headers"] == {"X-MBX-APIKEY": "<redacted>"}
    assert doc["endpoints"]["public"]["websocket"] == {
        "host": "127.0.0.1",
        "port": 8765,
        "path": "/binance",
        "auth": None,
        "allowed_origins": [],
        "require_origin": False,
        "tls": None,
        "handshake_timeout": 10.0,
        "max_pending": 256,
        "max_pending_per_ip": 16,
    }
    assert doc["endpoints"]["public"]["exposure"] == "loopback"
    assert "supersecret" not in result.stdout


def test_check_bad_files_prints_every_problem_and_exits_1(tmp_path):
    write_tree(
        tmp_path,
        {
            "config.yaml": GOOD.replace("wss://stream", "http://stream")
            + "  eth: {from: binanse, to: public}\n",
            "routes.d/x.yaml": "routes:\n  y: {from: binance, to: nowhere}\n",
        },
    )
    result = run_veylor("check", cwd=tmp_path, env={"BINANCE_KEY": "k"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("config.yaml:3 sources.binance.url: 'http://stream.example.com/ws?token=***'")
    assert lines[1] == "config.yaml:9 routes.eth.from: unknown source 'binanse'; did you mean 'binance'?"
    assert lines[2] == "routes.d/x.yaml:2 routes.y.to: unknown endpoint 'nowhere'"
    assert lines[-1] == "config.yaml: 3 problems found"
    assert result.stdout == ""


def test_check_json_on_bad_file(tmp_path):
    write_tree(tmp_path, {"config.yaml": "sources: {s: {url: 'ws://x', bogus: 1}}\n"})
    result = run_veylor("check", "--json", cwd=tmp_path)
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert doc["problems"][0] == {
        "file": "config.yaml",
        "line": 1,
        "column": 30,
        "path": "sources.s.bogus",
        "message": "unknown key 'bogus' (expected one of: headers, max_message_size, nats, on_connect, "
        "on_disconnect, open_timeout, ping_interval, ping_timeout, reconnect, subprotocols, "
        "tls, upstream_queue, url)",
        "severity": "error",
    }


def test_missing_config_file(tmp_path):
    result = run_veylor("check", "-c", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "nope.yaml: no such file (given with -c); check the path" in result.stderr


def test_default_config_is_dot_config_yaml_and_options_go_before_or_after_the_command(tmp_path):
    write_tree(tmp_path, {"config.yaml": GOOD, "other.yaml": GOOD.replace("8765", "8766")})
    assert (
        "config.yaml: the current format"
        in run_veylor("check", cwd=tmp_path, env={"BINANCE_KEY": "k"}).stdout
    )
    before = run_veylor("-c", "other.yaml", "check", cwd=tmp_path, env={"BINANCE_KEY": "k"})
    after = run_veylor("check", "-c", "other.yaml", cwd=tmp_path, env={"BINANCE_KEY": "k"})
    assert before.returncode == after.returncode == 0
    assert "127.0.0.1:8766" in before.stdout and "127.0.0.1:8766" in after.stdout


def test_legacy_file_says_which_shape_it_read(tmp_path):
    write_tree(tmp_path, {"config.yaml": "sources:\n  - url: wss://a.example/ws\n    websocket_port: 9000\n"})
    result = run_veylor("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the Veylor 1.1 format (translated to the current one)" in result.stdout
    assert "ws://0.0.0.0:9000/*" in result.stdout


def test_shipped_example_config_is_valid(tmp_path):
    shutil.copy(REPO / "config.yaml.example", tmp_path / "config.yaml")
    result = run_veylor("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_shipped_dropin_examples_are_valid(tmp_path):
    shutil.copy(REPO / "config.yaml.example", tmp_path / "config.yaml")
    (tmp_path / "routes.d").mkdir()
    examples = sorted((REPO / "routes.d").glob("*.yaml.example"))
    assert len(examples) >= 2
    for example in examples:
        shutil.copy(example, tmp_path / "routes.d" / example.name.removesuffix(".example"))
    result = run_veylor("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Every example was read, in order, and each defines something the graph shows.
    dropins = [f"routes.d/{e.name.removesuffix('.example')}" for e in examples]
    assert f"files read: {', '.join(['config.yaml', *dropins])}\n" in result.stdout
    for dropin in dropins:
        assert f"from {dropin}:" in result.stdout, dropin


def test_version_and_help():
    assert run_veylor("--version").stdout.startswith("veylor ")
    help_text = run_veylor("--help").stdout
    for word in ("--config", "--verbose", "--tui", "check"):
        assert word in help_text


def test_check_prints_the_admin_endpoints_exposure(tmp_path):
    """Was: the access section listed endpoints only; the admin endpoint, which can
    reload Veylor and show its state, was not in it. Now: its address and exposure, the
    Host names it answers to, its token and whether it allows reloads; a network
    address without auth is marked OPEN."""
    token = "0123456789abcdef-admin-token"
    (tmp_path / "admin.tokens").write_text(token + "\n")
    (tmp_path / "admin.tokens").chmod(0o600)
    admin = (
        'admin: {listen: "127.0.0.1:9900", allowed_hosts: [veylor.internal], '
        "auth: {tokens_file: admin.tokens}, read_only: true}\n"
    )
    write_tree(tmp_path, {"config.yaml": admin + GOOD})
    result = run_veylor("check", "-c", "config.yaml", cwd=tmp_path, env={"BINANCE_KEY": "k"})
    assert result.returncode == 0, result.stderr
    access = result.stdout.split("\naccess (")[1]
    assert "(admin)  http://127.0.0.1:9900 [loopback]\n" in access
    assert "Host: 127.0.0.1, localhost, veylor.internal\n" in access
    assert f"auth 1 token from {tmp_path / 'admin.tokens'}; read_only (no reload, no taps)" in access
    assert token not in result.stdout
    as_json = json.loads(
        run_veylor("check", "--json", "-c", "config.yaml", cwd=tmp_path, env={"BINANCE_KEY": "k"}).stdout
    )["admin"]
    assert as_json["exposure"] == "loopback" and as_json["read_only"] is True
    assert as_json["auth"] == {"tokens": 1, "tokens_file": str(tmp_path / "admin.tokens")}

    write_tree(tmp_path, {"config.yaml": 'admin: {listen: "0.0.0.0:9900"}\n' + GOOD})
    result = run_veylor("check", "-c", "config.yaml", cwd=tmp_path, env={"BINANCE_KEY": "k"})
    assert result.returncode == 0, result.stderr
    assert (
        "(admin)  http://0.0.0.0:9900 [network]  OPEN: reachable from the network and no auth"
        in result.stdout
    )
    assert "Host: any IP address, localhost\n" in result.stdout
    assert "auth OFF; reloads and taps allowed" in result.stdout

    write_tree(
        tmp_path, {"config.yaml": 'admin: {unix: /tmp/veylor-check-admin.sock, mode: "0600"}\n' + GOOD}
    )
    result = run_veylor("check", "-c", "config.yaml", cwd=tmp_path, env={"BINANCE_KEY": "k"})
    assert "(admin)  unix:/tmp/veylor-check-admin.sock [local]" in result.stdout, result.stdout
