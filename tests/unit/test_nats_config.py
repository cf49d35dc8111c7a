"""The NATS kinds' settings as the loader reads them: each mistake located (file, line,
key) with what to do, secrets in server URLs never shown, referenced files (credentials)
part of the configuration's identity, and a change that reconnects only the NATS
component that changed."""

from __future__ import annotations

import json

import pytest

from veylor.config import ConfigError, load_config
from veylor.config.natsspec import UPSTREAM_PREFIX, subject_problem
from veylor.config.problems import format_path
from veylor.graph import build_graph, diff
from veylor.report import config_json, config_text

CORE = """
sources:
  feed: {url: "wss://example.com/feed"}
endpoints:
  cluster:
    nats: {servers: [nats://127.0.0.1:4222], subject: veylor.ticker}
routes:
  out: {from: feed, to: cluster, upstream: true}
"""

EDGE = """
sources:
  ticker:
    nats: {servers: nats://127.0.0.1:4222, subject: veylor.ticker}
endpoints:
  local: {websocket: {port: 8765}}
routes:
  serve: {from: ticker, to: local, upstream: true}
"""


def _problems(tree, text: str, extra: dict[str, str] | None = None) -> list[tuple[int, str, str]]:
    tree({"config.yaml": text, **(extra or {})})
    with pytest.raises(ConfigError) as err:
        load_config("config.yaml", env={})
    return [(p.location.line, format_path(p.path), p.message) for p in err.value.problems if not p.warning]


@pytest.mark.parametrize(
    ("subject", "wildcards", "wrong"),
    [
        ("veylor.ticker", False, None),
        ("veylor.*.trades", True, None),
        ("veylor.>", True, None),
        ("veylor.>", False, "has a wildcard"),
        ("veylor..ticker", True, "empty token"),
        (".veylor", True, "empty token"),
        ("veylor.>.x", True, "only be the last token"),
        ("veylor.tick*", True, "whole tokens"),
        ("veylor ticker", True, "white space"),
    ],
)
def test_subjects(subject: str, wildcards: bool, wrong: str | None) -> None:
    problem = subject_problem(subject, wildcards)
    assert (problem is None) if wrong is None else (wrong in (problem or "")), problem


def test_a_core_and_an_edge_load_with_their_defaults(tree) -> None:
    tree({"config.yaml": CORE})
    core = load_config("config.yaml", env={})
    listen = core.endpoints["cluster"].listen
    assert listen.subject == "veylor.ticker"
    assert listen.upstream_subject == UPSTREAM_PREFIX + "veylor.ticker"
    tree({"config.yaml": EDGE})
    edge = load_config("config.yaml", env={})
    src = edge.sources["ticker"]
    assert src.kind == "nats" and src.upstream_subject == UPSTREAM_PREFIX + "veylor.ticker"
    assert src.link.servers == ("nats://127.0.0.1:4222",)


def test_settings_that_do_not_apply_to_the_kind_are_refused_at_their_key(tree) -> None:
    text = EDGE.replace(
        "    nats: {servers: nats://127.0.0.1:4222, subject: veylor.ticker}",
        "    nats: {servers: nats://127.0.0.1:4222, subject: veylor.ticker}\n    headers: {X-Key: k}",
    )
    ((line, path, message),) = _problems(tree, text)
    assert (line, path) == (4, "sources.ticker.headers")
    assert "does not apply to a nats source" in message and "remove it" in message
    text = CORE.replace("    nats: {", "    max_clients: 5\n    nats: {")
    ((line, path, message),) = _problems(tree, text)
    assert (line, path) == (5, "endpoints.cluster.max_clients")
    assert "does not apply to a nats endpoint" in message


def test_url_and_nats_together_is_one_problem(tree) -> None:
    text = EDGE.replace("    nats: {", '    url: "wss://x.example/"\n    nats: {')
    ((_, path, message),) = _problems(tree, text)
    assert path == "sources.ticker" and "keep exactly one of url, nats" in message


@pytest.mark.parametrize(
    ("change", "path", "wrong"),
    [
        (
            ("nats://127.0.0.1:4222]", "http://127.0.0.1:4222]"),
            "endpoints.cluster.nats.servers",
            "not a NATS server URL",
        ),
        (("subject: veylor.ticker", "subject: veylor.>"), "endpoints.cluster.nats.subject", "has a wildcard"),
        (
            ("subject: veylor.ticker", "subject: veylor.ticker, upstream_subject: veylor.ticker"),
            "endpoints.cluster.nats.upstream_subject",
            "client messages would go to every edge",
        ),
    ],
)
def test_endpoint_mistakes_are_located(tree, change: tuple[str, str], path: str, wrong: str) -> None:
    ((line, where, message),) = _problems(tree, CORE.replace(*change))
    assert where == path and line == 5 and wrong in message, message


def test_a_wildcard_source_cannot_take_client_messages_without_an_upstream_subject(tree) -> None:
    text = EDGE.replace("subject: veylor.ticker", "subject: veylor.>")
    ((line, path, message),) = _problems(tree, text)
    assert (line, path) == (7, "routes.serve.upstream")
    assert "set its nats.upstream_subject" in message
    tree({"config.yaml": text.replace("subject: veylor.>", "subject: veylor.>, upstream_subject: up.ticker")})
    assert load_config("config.yaml", env={}).sources["ticker"].upstream_subject == "up.ticker"
    tree({"config.yaml": text.replace("upstream: true", "upstream: false")})
    assert load_config("config.yaml", env={}).sources["ticker"].upstream_subject is None


def test_two_endpoints_cannot_publish_to_one_subject(tree) -> None:
    text = CORE.replace(
        "routes:",
        "  again:\n    nats: {servers: [nats://127.0.0.1:4223], subject: veylor.ticker}\nroutes:",
    ).replace("to: cluster", "to: [cluster, again]")
    problems = _problems(tree, text)
    assert any("already published by" in m and "its own subject" in m for _, _, m in problems), problems


def test_credentials_file_is_read_checked_and_part_of_the_identity(tree, tmp_path) -> None:
    text = CORE.replace("subject: veylor.ticker}", "subject: veylor.ticker, credentials: core.creds}")
    ((line, path, message),) = _problems(tree, text)
    assert line == 5 and path == "endpoints.cluster.nats.credentials" and "does not exist" in message
    ((_, _, message),) = _problems(tree, text, {"core.creds": "not a creds file\n"})
    assert "not a NATS credentials file" in message and "nsc generate creds" in message
    creds = "-----BEGIN NATS USER JWT-----\neyJhbGc\n------END NATS USER JWT------\n"
    tree({"config.yaml": text, "core.creds": creds})
    first = load_config("config.yaml", env={})
    assert str(tmp_path / "core.creds") in first.referenced
    tree({"core.creds": creds.replace("eyJhbGc", "eyJother")})
    second = load_config("config.yaml", env={})
    assert second.digest != first.digest
    # A changed credentials file reconnects that endpoint (a new listener), nothing else.
    steps = [(s.op, s.name) for s in diff(build_graph(first), build_graph(second)).steps]
    assert ("bind", "nats:veylor.ticker") in steps and not any(op.endswith("source") for op, _ in steps), (
        steps
    )


def test_passwords_in_server_urls_are_never_shown(tree) -> None:
    text = CORE.replace("nats://127.0.0.1:4222]", "nats://veylor:s3cretpassw0rd@127.0.0.1:4222]")
    tree({"config.yaml": text})
    config = load_config("config.yaml", env={})
    shown = config_text(config) + json.dumps(config_json(config))
    assert "s3cretpassw0rd" not in shown
    # veylor check's access section says who reaches a NATS endpoint: NATS decides.
    assert "[nats]" in shown and "NATS's own permissions decide" in shown
    assert "max_clients" not in config_text(config).split("endpoints (1)")[1].split("routes")[0]
    assert "s3cretpassw0rd" in config.endpoints["cluster"].secrets()


def test_only_the_changed_nats_component_reconnects(tree) -> None:
    tree({"config.yaml": EDGE})
    before = build_graph(load_config("config.yaml", env={}))
    tree({"config.yaml": EDGE.replace("port: 8765", "port: 8766")})
    after = build_graph(load_config("config.yaml", env={}))
    ops = [(s.op, s.name) for s in diff(before, after).steps]
    assert not any("source" in op for op, _ in ops), ops
    tree({"config.yaml": EDGE.replace("subject: veylor.ticker", "subject: veylor.other")})
    changed = build_graph(load_config("config.yaml", env={}))
    ops = [(s.op, s.name) for s in diff(before, changed).steps]
    assert ("restart_source", "ticker") in ops, ops


def test_jetstream_settings(tree, tmp_path) -> None:
    text = EDGE.replace("subject: veylor.ticker}", "subject: veylor.ticker, stream: TICKER, replay: 50}")
    tree({"config.yaml": text})
    src = load_config("config.yaml", env={}).sources["ticker"]
    assert (src.stream, src.replay, src.position_file) == ("TICKER", 50, None)
    tree({"config.yaml": text.replace("replay: 50", "replay: {from_sequence: 7}, position_file: t.pos")})
    src = load_config("config.yaml", env={}).sources["ticker"]
    assert src.replay == ("from_sequence", 7) and src.position_file == str(tmp_path / "t.pos")
    assert "from sequence 7" in src.describe()
    ((_, path, message),) = _problems(tree, text.replace("stream: TICKER", "stream: TICK.ER"))
    assert path == "sources.ticker.nats.stream" and "not a JetStream stream name" in message
    ((_, path, message),) = _problems(tree, text.replace("replay: 50", "replay: first"))
    assert path == "sources.ticker.nats.replay", message
    ((_, path, message),) = _problems(tree, text.replace("replay: 50", "queue: edges"))
    assert path == "sources.ticker.nats.queue" and "does not go with stream" in message
    plain = EDGE.replace("subject: veylor.ticker}", "subject: veylor.ticker, position_file: t.pos}")
    ((_, path, message),) = _problems(tree, plain)
    assert path == "sources.ticker.nats.position_file" and "applies with stream only" in message
    core = CORE.replace("subject: veylor.ticker}", "subject: veylor.ticker, stream: TICKER, replicas: 3}")
    tree({"config.yaml": core})
    listen = load_config("config.yaml", env={}).endpoints["cluster"].listen
    assert (listen.stream, listen.replicas, listen.max_msgs_per_subject) == ("TICKER", 3, 100_000)
    assert "JetStream stream TICKER (R3" in listen.describe()


BAD_SERVER_URLS = [
    ("nats://127.0.0.1:99999", "Port out of range"),
    ("nats://h:abc", "Port could not be cast to integer"),
    ("nats://[::1:4222", "Invalid IPv6 URL"),
    ("nats://:4222", "names no host"),
    ("tls://h:0", "port 0"),
]


@pytest.mark.parametrize(("url", "wrong"), BAD_SERVER_URLS)
def test_a_server_url_with_a_bad_host_or_port_is_located(tree, url: str, wrong: str) -> None:
    """Issue 22: these passed check (exit 0) and were retried for ever at run time."""
    ((line, path, message),) = _problems(tree, EDGE.replace("nats://127.0.0.1:4222", f'"{url}"'))
    assert (line, path) == (3, "sources.ticker.nats.servers") and wrong in message, message
    assert "write nats://HOST:PORT" in message
    text = CORE.replace("[nats://127.0.0.1:4222]", f'[nats://127.0.0.1:4222, "{url}"]')
    ((line, path, message),) = _problems(tree, text)
    assert (line, path) == (5, "endpoints.cluster.nats.servers[1]") and wrong in message, message


def test_a_bad_port_is_said_without_the_password(tree) -> None:
    ((_, _, message),) = _problems(tree, EDGE.replace("nats://127.0.0.1:4222", "nats://u:s3cret@h:4x22"))
    assert "s3cret" not in message and "nats://***@h:4x22" in message, message


@pytest.mark.parametrize("url", ["nats://h", "nats://h:4222", "tls://[::1]:4222", "nats://u:p@h:4222"])
def test_good_server_urls_pass(tree, url: str) -> None:
    tree({"config.yaml": EDGE.replace("nats://127.0.0.1:4222", f'"{url}"')})
    assert load_config("config.yaml", env={}).sources["ticker"].link.servers == (url,)


def test_stall_timeout_defaults_to_10_s_and_is_checked(tree) -> None:
    tree({"config.yaml": EDGE})
    assert load_config("config.yaml", env={}).sources["ticker"].link.stall_timeout == 10.0
    tree({"config.yaml": CORE})
    assert load_config("config.yaml", env={}).endpoints["cluster"].listen.link.stall_timeout == 10.0
    text = EDGE.replace("subject: veylor.ticker}", "subject: veylor.ticker, stall_timeout: 2.5}")
    tree({"config.yaml": text})
    assert load_config("config.yaml", env={}).sources["ticker"].link.stall_timeout == 2.5
    ((line, path, _),) = _problems(tree, text.replace("2.5", "0.1"))
    assert (line, path) == (3, "sources.ticker.nats.stall_timeout")
