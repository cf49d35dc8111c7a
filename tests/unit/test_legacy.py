"""Veylor 1.0 and 1.1 files load unchanged and mean what they meant."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from veylor.config import ConfigError, UnixListen, WebSocketListen, load_config
from veylor.config.schema import definition

# A 1.1 file as operators wrote them: each source with its own endpoints.
V11 = """
# Veylor 1.1
sources:
  - url: wss://stream.binance.com:9443/ws/btcusdt@trade
    headers:
      X-MBX-APIKEY: abc
    websocket_port: 8765
    unix_socket_path: /tmp/binance.sock
  - url: wss://ws.kraken.com
    websocket_host: 127.0.0.1
    websocket_port: 8766
  - url: wss://ws.kraken.com
    unix_socket_path: /tmp/kraken2.sock
performance:
  max_queue_size: 500
  reconnect_delay: 2
  reconnect_max_attempts: 10
"""

V10 = """
sources:
  - url: wss://stream.binance.com:9443/ws
    name: binance
    headers: {X-MBX-APIKEY: abc}
  - url: wss://ws.kraken.com/v2
rebroadcast:
  websocket:
    enabled: true
    host: 0.0.0.0
    port: 9000
  unix_socket:
    enabled: true
    path: /tmp/veylor.sock
performance:
  reconnect_delay: 45
"""


def test_v11_file_translates_to_per_source_endpoints(tree):
    tree({"config.yaml": V11})
    config = load_config("config.yaml", env={})
    assert config.shape == "1.1"
    names = list(config.sources)
    assert names == ["stream.binance.com-ws-btcusdt-trade", "ws.kraken.com", "ws.kraken.com-2"]
    binance = config.sources[names[0]]
    assert binance.headers == (("X-MBX-APIKEY", "abc"),)
    assert binance.on_disconnect == "close_clients"  # 1.1 closed clients when the source dropped
    assert binance.upstream_queue == 500
    assert binance.reconnect.initial_delay == 2 and binance.reconnect.max_attempts == 10
    ws = config.endpoints[f"{names[0]}-ws"]
    # 1.1's websocket_host defaulted to 0.0.0.0; 1.x clients could use any path.
    assert ws.listen == WebSocketListen("0.0.0.0", 8765, "*")
    assert config.endpoints[f"{names[0]}-unix"].listen == UnixListen(
        "/tmp/binance.sock", 0o660, "length-prefixed"
    )
    assert config.endpoints[f"{names[1]}-ws"].listen == WebSocketListen("127.0.0.1", 8766, "*")
    assert list(config.endpoints) == [
        f"{names[0]}-ws",
        f"{names[0]}-unix",
        f"{names[1]}-ws",
        f"{names[2]}-unix",
    ]
    for name in names:
        route = config.routes[name]
        assert route.source == name and route.upstream is True  # every 1.x client could send
    assert config.routes[names[0]].endpoints == (f"{names[0]}-ws", f"{names[0]}-unix")
    # Locations point into the 1.x file.
    assert config.sources[names[1]].origin.line == 8
    assert config.warnings == ()


V11_NAMES = ["stream.binance.com-ws-btcusdt-trade", "ws.kraken.com", "ws.kraken.com-2"]

# V11 edited: other ports, header, socket path and delay; binance moved last; a source added.
V11_EDITED = """
sources:
  - url: wss://ws.kraken.com
    websocket_host: 127.0.0.1
    websocket_port: 8767
  - url: wss://ws.kraken.com
    unix_socket_path: /tmp/kraken-b.sock
  - url: wss://stream.binance.com:9443/ws/btcusdt@trade
    headers:
      X-MBX-APIKEY: xyz
    websocket_port: 8775
    unix_socket_path: /tmp/binance.sock
  - url: wss://ws.bitstamp.net
    websocket_port: 8768
performance:
  max_queue_size: 500
  reconnect_delay: 5
  reconnect_max_attempts: 10
"""


def test_v11_names_are_stable_when_loaded_again(tree, tmp_path):
    """A name follows its source's URL, nothing else: not the process (another Python,
    another hash seed: a restart), not the values around it, not its place in the list
    (an edited file, reloaded). A reload compares sources by name: a name that moved
    would drop a live upstream connection and every client of its endpoints."""
    tree({"config.yaml": V11})
    code = "import sys, veylor.config as c; print(*c.load_config(sys.argv[1], env={}).sources)"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "config.yaml")],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == V11_NAMES
    # Edited and reloaded: each source keeps its name, and its endpoints theirs.
    tree({"config.yaml": V11_EDITED})
    config = load_config("config.yaml", env={})
    assert list(config.sources) == [V11_NAMES[1], V11_NAMES[2], V11_NAMES[0], "ws.bitstamp.net"]
    assert config.sources[V11_NAMES[0]].url == "wss://stream.binance.com:9443/ws/btcusdt@trade"
    assert config.sources[V11_NAMES[0]].headers == (("X-MBX-APIKEY", "xyz"),)
    assert config.endpoints[f"{V11_NAMES[0]}-ws"].listen.port == 8775
    assert config.endpoints[f"{V11_NAMES[1]}-ws"].listen.port == 8767
    assert config.endpoints[f"{V11_NAMES[2]}-unix"].listen.path == "/tmp/kraken-b.sock"


def test_v10_file_translates_to_shared_endpoints(tree):
    tree({"config.yaml": V10})
    config = load_config("config.yaml", env={})
    assert config.shape == "1.0"
    assert list(config.sources) == ["binance", "ws.kraken.com-v2"]
    assert config.endpoints["websocket"].listen == WebSocketListen("0.0.0.0", 9000, "*")
    assert config.endpoints["unix"].listen.path == "/tmp/veylor.sock"
    for route in config.routes.values():
        assert route.endpoints == ("websocket", "unix") and route.upstream is True
    kraken = config.sources["ws.kraken.com-v2"]
    assert kraken.reconnect.initial_delay == 45
    assert kraken.reconnect.max_delay == 45  # raised so that initial <= max
    assert kraken.upstream_queue == definition("source")["properties"]["upstream_queue"]["default"]


def test_v10_disabled_unix_socket(tree):
    tree({"config.yaml": V10.replace("    enabled: true\n    path", "    enabled: false\n    path")})
    config = load_config("config.yaml", env={})
    assert list(config.endpoints) == ["websocket"]


def test_v11_source_without_port_or_socket_is_an_error(tree):
    tree(
        {
            "config.yaml": "sources:\n  - url: wss://a.example\n  - url: wss://b.example\n    websocket_port: 1\n"
        }
    )
    with pytest.raises(ConfigError) as err:
        load_config("config.yaml", env={})
    (problem,) = err.value.problems
    assert (problem.location.line, problem.path) == (2, ("sources", 0))
    assert "websocket_port or unix_socket_path" in problem.message


def test_v10_with_nothing_enabled_is_an_error(tree):
    tree({"config.yaml": "sources: [{url: 'wss://a.example'}]\nrebroadcast: {websocket: {enabled: false}}\n"})
    with pytest.raises(ConfigError) as err:
        load_config("config.yaml", env={})
    assert "rebroadcast enables no endpoint" in err.value.problems[0].message


def test_unknown_legacy_keys_are_warnings_as_1x_ignored_them(tree):
    tree({"config.yaml": V11 + "log_level: debug\n"})
    config = load_config("config.yaml", env={})
    (warning,) = config.warnings
    assert warning.path == ("log_level",) and "ignored, as Veylor 1.x did" in warning.message


def test_legacy_value_errors_are_located_in_the_1x_file(tree):
    tree({"config.yaml": V11.replace("websocket_port: 8766", "websocket_port: 99999")})
    with pytest.raises(ConfigError) as err:
        load_config("config.yaml", env={})
    (problem,) = err.value.problems
    assert (problem.location.line, problem.path) == (10, ("sources", 1, "websocket_port"))


def test_legacy_main_file_with_v1_dropins(tree):
    tree(
        {
            "config.yaml": V10,
            "routes.d/extra.yaml": "endpoints: {dash: {websocket: {port: 9100}}}\n"
            "routes: {dash: {from: binance, to: dash}}\n",
        }
    )
    config = load_config("config.yaml", env={})
    assert config.routes["dash"].source == "binance"


def test_two_v11_sources_on_one_port_is_an_error_as_the_bind_would_fail(tree):
    tree(
        {
            "config.yaml": "sources:\n  - {url: 'wss://a.example', websocket_port: 9}\n"
            "  - {url: 'wss://b.example', websocket_port: 9}\n"
        }
    )
    with pytest.raises(ConfigError) as err:
        load_config("config.yaml", env={})
    (problem,) = err.value.problems
    assert problem.location.line == 3 and "already served by endpoint 'a.example-ws'" in problem.message
