"""Loading a v1 main file and its drop-ins into a typed Config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from veylor.config import ConfigError, UnixListen, WebSocketListen, load_config, parse_size
from veylor.config.common import format_size, redact_url
from veylor.config.schema import definition, schema, schema_path

MAIN = """
version: 1
sources:
  binance:
    url: wss://stream.example.com/ws
    headers: {X-MBX-APIKEY: "${BINANCE_KEY}"}
    on_connect:
      - {method: SUBSCRIBE, params: [btcusdt@trade], id: 1}
      - plain text
    reconnect: {initial_delay: 1, max_attempts: 5}
    max_message_size: 2MiB
endpoints:
  public:
    websocket: {port: 8765, path: /binance}
  ipc:
    unix: {path: /tmp/veylor-test.sock, mode: "0600", framing: lines}
routes:
  btc-trades:
    from: binance
    to: [public, ipc]
    filter: {json: {path: s, in: [BTCUSDT]}}
"""


def test_v1_file_loads_with_defaults_from_the_schema(tree):
    tree({"config.yaml": MAIN})
    config = load_config("config.yaml", env={"BINANCE_KEY": "k"})
    assert config.shape == "v1"
    src = config.sources["binance"]
    assert src.headers == (("X-MBX-APIKEY", "k"),)
    assert [o.data for o in src.on_connect] == [
        '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}',
        "plain text",
    ]
    assert src.reconnect.initial_delay == 1 and src.reconnect.max_attempts == 5
    # Unset keys take the schema's defaults: one place for defaults.
    reconnect_defaults = definition("reconnect")["properties"]
    assert src.reconnect.max_delay == reconnect_defaults["max_delay"]["default"]
    assert src.ping_interval == definition("source")["properties"]["ping_interval"]["default"]
    assert src.max_message_size == 2 * 1024 * 1024
    assert src.on_disconnect == "keep"
    public = config.endpoints["public"]
    assert public.listen == WebSocketListen("127.0.0.1", 8765, "/binance")
    assert public.client_buffer == parse_size(
        definition("endpoint")["properties"]["client_buffer"]["default"]
    )
    assert public.slow_client == "disconnect" and public.compression is False
    assert config.endpoints["ipc"].listen == UnixListen("/tmp/veylor-test.sock", 0o600, "lines")
    route = config.routes["btc-trades"]
    assert route.source == "binance" and route.endpoints == ("public", "ipc")
    assert route.upstream is False
    assert route.origin.file == "config.yaml" and route.origin.line == 17
    assert config.files == ("config.yaml",)
    assert config.warnings == ()


def test_dropins_merge_in_lexical_order_and_keep_their_lines(tree):
    tree(
        {
            "config.yaml": MAIN,
            "routes.d/20-later.yaml": """
                routes:
                  eth:
                    from: binance
                    to: public
            """,
            "routes.d/10-first.yaml": """
                endpoints:
                  extra:
                    websocket: {port: 8766}
                routes:
                  everything:
                    from: binance
                    to: extra
                    upstream: true
            """,
            "routes.d/ignored.yaml.example": "routes: {x: {from: nope, to: nope}}",
            "routes.d/.hidden.yaml": "routes: {x: {from: nope, to: nope}}",
        }
    )
    config = load_config("config.yaml", env={"BINANCE_KEY": "k"})
    assert config.files == ("config.yaml", "routes.d/10-first.yaml", "routes.d/20-later.yaml")
    assert list(config.routes) == ["btc-trades", "everything", "eth"]
    assert config.routes["everything"].origin.file == "routes.d/10-first.yaml"
    assert config.routes["everything"].origin.line == 5
    assert config.routes["everything"].upstream is True
    assert config.routes["eth"].origin.line == 2
    assert config.endpoints["extra"].origin.file == "routes.d/10-first.yaml"


def test_missing_or_empty_routes_d_is_fine(tree):
    tree({"config.yaml": MAIN})
    assert load_config("config.yaml", env={"BINANCE_KEY": "k"}).files == ("config.yaml",)
    tree({"routes.d/empty.yaml": "# nothing yet\n", "routes.d/null-sections.yaml": "routes:\n"})
    config = load_config("config.yaml", env={"BINANCE_KEY": "k"})
    assert len(config.files) == 3 and list(config.routes) == ["btc-trades"]


def test_custom_include_patterns_and_absolute_main_path(tree, tmp_path):
    tree(
        {
            "etc/main.yaml": MAIN + "include: [conf.d/*.yml, extra.yaml]\n",
            "etc/conf.d/a.yml": "routes: {a: {from: binance, to: ipc}}\n",
            "etc/extra.yaml": "routes: {b: {from: binance, to: ipc}}\n",
            "etc/routes.d/not-included.yaml": "routes: {c: {from: binance, to: ipc}}\n",
        }
    )
    main = tmp_path / "etc" / "main.yaml"
    config = load_config(main, env={"BINANCE_KEY": "k"})
    assert list(config.routes) == ["btc-trades", "a", "b"]
    assert config.files[1] == str(tmp_path / "etc" / "conf.d" / "a.yml")


def test_only_dropins_define_everything(tree):
    tree(
        {
            "config.yaml": "version: 1\n",
            "routes.d/a.yaml": """
                sources: {s: {url: "ws://127.0.0.1:9000/"}}
                endpoints: {e: {unix: {path: /tmp/v.sock}}}
                routes: {r: {from: s, to: e}}
            """,
        }
    )
    config = load_config("config.yaml", env={})
    assert list(config.sources) == ["s"] and config.routes["r"].endpoints == ("e",)


def test_unused_components_are_warnings_not_errors(tree):
    tree(
        {
            "config.yaml": """
                sources: {lonely: {url: "ws://127.0.0.1:9/"}}
                endpoints: {nobody: {websocket: {port: 9001}}}
            """
        }
    )
    config = load_config("config.yaml", env={})
    messages = [(w.path, w.message) for w in config.warnings]
    assert (
        ("sources", "lonely"),
        "no route uses this source (it is connected, but its messages go nowhere)",
    ) in messages
    assert any(p == ("endpoints", "nobody") for p, _ in messages)


def test_same_port_different_paths_is_allowed(tree):
    tree(
        {
            "config.yaml": """
                sources: {s: {url: "ws://127.0.0.1:9/"}}
                endpoints:
                  a: {websocket: {port: 9001, path: /a}}
                  b: {websocket: {port: 9001, path: /b}}
                  c: {websocket: {port: 9001, path: "*"}}
                routes: {r: {from: s, to: [a, b, c]}}
            """
        }
    )
    assert len(load_config("config.yaml", env={}).endpoints) == 3


def test_digest_changes_with_content(tree):
    tree({"config.yaml": MAIN})
    one = load_config("config.yaml", env={"BINANCE_KEY": "k"}).digest
    assert one == load_config("config.yaml", env={"BINANCE_KEY": "k"}).digest
    tree({"routes.d/x.yaml": "# a comment changes the files\n"})
    assert load_config("config.yaml", env={"BINANCE_KEY": "k"}).digest != one


def test_config_error_lists_every_problem(tree):
    tree({"config.yaml": "sources: {a: {url: http://x}, b: {url: ftp://y}}\n"})
    with pytest.raises(ConfigError) as err:
        load_config("config.yaml", env={})
    assert [p.path for p in err.value.problems] == [("sources", "a", "url"), ("sources", "b", "url")]
    assert "2 problems" in str(err.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (1, 1),
        ("100", 100),
        ("64KiB", 65536),
        ("16MiB", 16 << 20),
        ("1GiB", 1 << 30),
        ("2M", 2 << 20),
        ("1MB", 1_000_000),
        ("1.5KiB", 1536),
        ("10 kb", 10_000),
        ("3k", 3072),
        ("7B", 7),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_format_size_round_trips():
    for n in (1, 1024, 4 << 20, 3 << 30, 1000):
        assert parse_size(format_size(n)) == n


def test_redact_url_hides_user_information_and_token_like_query_values():
    assert redact_url("wss://user:pw@host/ws?stream=x&token=abc&apiKey=1") == (
        "wss://***@host/ws?stream=x&token=***&apiKey=***"
    )
    assert redact_url("wss://TOKEN-AS-USER@host/ws") == "wss://***@host/ws"
    assert redact_url("ws://127.0.0.1:9/") == "ws://127.0.0.1:9/"
    assert redact_url("ws://[::1/ws") == "<invalid URL>"  # never raises


def test_schema_file_is_found():
    """The schema found (the repository's schema/veylor.schema.json in an editable install,
    the copy inside the package in a normal one, as CI installs it) is the repository's,
    byte for byte, and it is what the loader validates and takes its defaults from."""
    checkout = Path(__file__).resolve().parents[2] / "schema" / "veylor.schema.json"
    found = schema_path()
    assert found.is_file(), found
    assert found.read_bytes() == checkout.read_bytes(), f"{found} differs from {checkout}"
    assert schema() == json.loads(checkout.read_text(encoding="utf-8"))


VARS = """
sources:
  s:
    url: ws://127.0.0.1:${UP_PORT}/feed
    headers: {X-Id: ${NUMERIC_ID}}
    ping_interval: ${PING}
    reconnect: {initial_delay: "${DELAY}", max_attempts: ${ATTEMPTS}}
endpoints:
  e: {websocket: {port: ${WS_PORT}, path: /x}, compression: ${COMPRESS}}
  q: {websocket: {port: "${WS_PORT}", path: /y}}
routes:
  r: {from: s, to: [e, q]}
"""
VAR_ENV = {
    "UP_PORT": "9000",
    "NUMERIC_ID": "12345",
    "PING": "",
    "DELAY": "0.5",
    "ATTEMPTS": "3",
    "WS_PORT": "18020",
    "COMPRESS": "false",
}


def test_a_whole_reference_takes_the_type_the_schema_expects_quoted_or_not(tree):
    tree({"config.yaml": VARS})
    config = load_config("config.yaml", env=VAR_ENV)
    assert config.endpoints["e"].listen.port == 18020  # unquoted, in flow style
    assert config.endpoints["q"].listen.port == 18020  # quoted
    assert config.endpoints["e"].compression is False
    src = config.sources["s"]
    assert src.headers == (("X-Id", "12345"),)  # a header is a string: stays one
    assert src.ping_interval is None  # empty: null, which the schema allows
    assert src.reconnect.initial_delay == 0.5 and src.reconnect.max_attempts == 3


def test_a_wrong_value_from_a_variable_names_the_variable(tree):
    tree({"config.yaml": VARS})
    with pytest.raises(ConfigError) as exc:
        load_config("config.yaml", env={**VAR_ENV, "WS_PORT": "eighty"})
    problems = [str(p) for p in exc.value.problems]
    assert len(problems) == 2, problems
    assert all("expected an integer, got the string 'eighty' (from ${WS_PORT})" in p for p in problems)


def test_reference_problems_are_reported_with_type_errors_in_one_pass(tree):
    """An unknown endpoint used to be reported only after the type errors were fixed."""
    tree(
        {
            "config.yaml": """
sources:
  a: {url: "ws://127.0.0.1:1/", open_timeout: ten}
endpoints:
  e: {websocket: {port: 1}}
routes:
  r:
    from: a
    to: [e, nosuch]
    upstream: "yes"
  r2: {from: nosource, to: e, upstream: 2}
"""
        }
    )
    with pytest.raises(ConfigError) as exc:
        load_config("config.yaml", env={})
    text = "\n".join(map(str, exc.value.problems))
    assert "open_timeout: expected a number" in text
    assert "routes.r.upstream: expected true or false" in text
    assert "routes.r.to[1]: unknown endpoint 'nosuch'" in text
    assert "routes.r2.from: unknown source 'nosource'" in text
    assert len(exc.value.problems) == 5, text


def test_a_fifo_or_device_as_the_main_file_is_refused_not_waited_on(tree, tmp_path):
    import os

    os.mkfifo(tmp_path / "config.yaml")
    with pytest.raises(ConfigError) as exc:
        load_config("config.yaml", env={})
    assert "is not a regular file" in str(exc.value.problems[0])
    (tmp_path / "routes.d").mkdir()
    os.mkfifo(tmp_path / "routes.d" / "10-fifo.yaml")  # a drop-in FIFO: a problem, never opened
    os.symlink(tmp_path / "gone.yaml", tmp_path / "routes.d" / "20-dangling.yaml")
    (tmp_path / "routes.d" / "30-dir.yaml").mkdir()  # a directory that matches: skipped
    (tmp_path / "config.yaml").unlink()
    (tmp_path / "config.yaml").write_text("sources: {a: {url: 'ws://127.0.0.1:1/'}}\n")
    with pytest.raises(ConfigError) as exc:
        load_config("config.yaml", env={})
    problems = [str(p) for p in exc.value.problems]
    assert len(problems) == 2, problems
    assert problems[0].endswith("10-fifo.yaml: is not a regular file (a FIFO, device or socket?): remove it")
    assert problems[1].endswith("20-dangling.yaml: is a symbolic link to nothing: fix or remove it")


def test_a_file_over_the_size_limit_is_refused_unread(tree, tmp_path):
    from veylor.config.files import MAX_FILE_SIZE

    tree({"config.yaml": "sources: {}\n" + "#" * MAX_FILE_SIZE + "\n"})
    with pytest.raises(ConfigError) as exc:
        load_config("config.yaml", env={})
    assert "is larger than 4 MiB" in str(exc.value.problems[0])


def test_limits_are_read_from_the_main_file_only(tree):
    tree(
        {
            "config.yaml": "limits: {buffered: 1GiB}\nsources: {a: {url: 'ws://127.0.0.1:1/'}}\n",
            "routes.d/10.yaml": "limits: {buffered: 1KiB}\n",
        }
    )
    with pytest.raises(ConfigError) as exc:
        load_config("config.yaml", env={})
    (problem,) = exc.value.problems
    assert "'limits' is only read from the main file" in str(problem)
    Path("routes.d/10.yaml").unlink()
    assert load_config("config.yaml", env={}).limits.buffered == 2**30
