"""The admin endpoint's access settings as pure data: which ``Host`` headers it answers
(the DNS-rebinding guard), what the loader makes of ``allowed_hosts``, ``auth`` and
``read_only`` (its tokens file a referenced file, part of the digest, its tokens never
shown), and what a reload's plan says when they change."""

from __future__ import annotations

import os

import pytest

from veylor.config import ConfigError, load_config
from veylor.config.adminspec import AdminSpec
from veylor.config.files import FileCache
from veylor.config.loader import admin_address
from veylor.config.problems import format_path
from veylor.graph import build_graph, diff
from veylor.observe.logs import secrets_of

TOKEN = "0123456789abcdef-admin"
OTHER = "fedcba9876543210-admin"

REST = """
sources: {feed: {url: "wss://example.com/feed"}}
endpoints: {ep: {websocket: {port: 8765}}}
routes: {r: {from: feed, to: ep}}
"""


def spec(listen: str, **extra: object) -> AdminSpec:
    return AdminSpec.from_raw({"listen": listen, "mode": "0660", **extra})


@pytest.mark.parametrize(
    ("listen", "host", "ok"),
    [
        # Its own address, with or without a port (any port: a forwarded one too).
        ("127.0.0.1:9900", "127.0.0.1:9900", True),
        ("127.0.0.1:9900", "127.0.0.1", True),
        ("127.0.0.1:9900", "127.0.0.1:19900", True),
        ("127.0.0.1:9900", "localhost:9900", True),
        ("127.0.0.1:9900", "LocalHost.", True),
        ("127.0.0.1:9900", "localhost", True),
        # A page whose name was pointed here (DNS rebinding), in every spelling.
        ("127.0.0.1:9900", "evil.example", False),
        ("127.0.0.1:9900", "evil.example:9900", False),
        ("127.0.0.1:9900", "127.0.0.1.evil.example:9900", False),
        ("127.0.0.1:9900", "localhost.evil.example", False),
        ("127.0.0.1:9900", "127.0.0.2", False),  # not its address
        ("127.0.0.1:9900", "", False),
        ("127.0.0.1:9900", "127.0.0.1:x", False),
        ("127.0.0.1:9900", "127.0.0.1:9900:1", False),
        ("127.0.0.1:9900", "127.0.0.1 evil", False),
        ("127.0.0.1:9900", "[127.0.0.1]", False),  # brackets are for IPv6
        # IPv6: the bracketed literal, any spelling of the same address.
        ("[::1]:9900", "[::1]:9900", True),
        ("[::1]:9900", "[0:0:0:0:0:0:0:1]", True),
        ("[::1]:9900", "::1", False),  # not a Host: an IPv6 address needs brackets
        ("[::1]:9900", "[::1", False),
        ("[::1]:9900", "[::2]:9900", False),
        ("[::1]:9900", "127.0.0.1", False),
        # Every interface: any IP address (a page's name is never one), names still not.
        ("0.0.0.0:9900", "192.0.2.7:9900", True),
        ("0.0.0.0:9900", "[2001:db8::1]:9900", True),
        ("0.0.0.0:9900", "evil.example", False),
        ("[::]:9900", "127.0.0.1", True),
        ("[::]:9900", "evil.example:9900", False),
        # A name as the listen address is its own.
        ("localhost:9900", "localhost:9900", True),
        ("veylor.lan:9900", "VEYLOR.lan:9900", True),
        ("veylor.lan:9900", "evil.example", False),
    ],
)
def test_host_header_is_answered_only_for_its_own_names(listen: str, host: str, ok: bool) -> None:
    assert spec(listen).host_ok(host) is ok


def test_allowed_hosts_add_names_and_addresses() -> None:
    admin = spec("127.0.0.1:9900", allowed_hosts=["veylor.internal", "Prom.Example.", "[::1]"])
    for host in ("veylor.internal", "veylor.internal:9900", "prom.example", "[::1]:9900", "localhost"):
        assert admin.host_ok(host), host
    for host in ("evil.example", "internal", "x.veylor.internal", "[::2]"):
        assert not admin.host_ok(host), host


def test_a_unix_socket_or_a_request_without_host_is_not_a_web_page() -> None:
    unix = AdminSpec.from_raw({"unix": "/run/veylor/admin.sock", "mode": "0660"})
    assert unix.host_ok("veylor") and unix.host_ok("anything.example")
    assert spec("127.0.0.1:9900").host_ok(None)  # (no browser omits Host)


def _problems(tree, files: dict[str, str]) -> list[tuple[str, int, str, str]]:
    tree(files)
    with pytest.raises(ConfigError) as err:
        load_config("config.yaml", env={})
    return [(p.location.file, p.location.line, format_path(p.path), p.message) for p in err.value.problems]


def test_admin_settings_mistakes_are_located_and_tokens_never_shown(tree) -> None:
    (scheme,) = _problems(
        tree,
        {
            "config.yaml": 'admin: {listen: "127.0.0.1:9900", allowed_hosts: ["http://veylor.internal"]}\n'
            + REST
        },
    )
    assert scheme[1:3] == (1, "admin.allowed_hosts[0]") and "no scheme, port or path" in scheme[3]
    problems = _problems(
        tree,
        {
            "config.yaml": 'admin:\n  listen: "127.0.0.1:9900"\n'
            '  allowed_hosts: [veylor.internal, "bad..name"]\n'
            '  auth: {tokens: ["short-secret"]}\n' + REST
        },
    )
    where = {(line, path) for _, line, path, _ in problems}
    assert where == {(3, "admin.allowed_hosts[1]"), (4, "admin.auth.tokens[0]")}, problems
    assert not any("short-secret" in message for *_, message in problems)
    (missing,) = _problems(
        tree, {"config.yaml": 'admin: {listen: "127.0.0.1:9900", auth: {tokens_file: t}}\n' + REST}
    )
    assert missing[1:3] == (1, "admin.auth.tokens_file") and "does not exist" in missing[3]
    (typo,) = _problems(tree, {"config.yaml": 'admin: {listen: "127.0.0.1:9900", readonly: true}\n' + REST})
    assert typo[2] == "admin.readonly"


def test_admin_tokens_file_is_referenced_and_part_of_the_digest(tree) -> None:
    """Was: the admin endpoint had no tokens. Its tokens file is read at every load, like
    an endpoint's (relative to the main file), watched (``referenced``) and hashed: a
    changed file is a changed configuration, even when the YAML is cached."""
    root = tree(
        {
            "config.yaml": 'admin: {listen: "127.0.0.1:9900", auth: {tokens_file: secrets/admin.tokens}}\n'
            + REST
        }
    )
    (root / "secrets").mkdir()
    tokens = root / "secrets" / "admin.tokens"
    tokens.write_text(f"# the admin's\n{TOKEN}\n")
    os.chmod(tokens, 0o600)
    cache = FileCache()
    first = load_config("config.yaml", env={}, cache=cache)
    assert first.admin is not None and first.admin.auth is not None
    assert str(tokens) in first.referenced
    assert first.admin.secrets() == {TOKEN} and TOKEN in secrets_of(first)
    assert TOKEN not in repr(first.admin) and TOKEN not in str(first.admin.as_json())
    tokens.write_text(f"{OTHER}\n")
    second = load_config("config.yaml", env={}, cache=cache, changed=frozenset())
    assert second.digest != first.digest
    assert second.admin.secrets() == {OTHER}
    assert diff(build_graph(first), build_graph(second)).describe() == [
        "~ admin http://127.0.0.1:9900: auth 1 token from " + str(tokens)
    ]


def test_a_reload_changes_the_admin_rules_in_place() -> None:
    old = spec("127.0.0.1:9900")
    new = spec("127.0.0.1:9900", allowed_hosts=["veylor.internal"], read_only=True)
    assert new.changes(old) == "allowed_hosts veylor.internal, read_only"
    assert old.changes(new) == "allowed_hosts none, read_only off"


def test_veylor_reload_finds_the_admin_token_in_the_configuration_it_can_read(tree) -> None:
    """``veylor reload -c CONFIG`` (the unit's ExecReload=) with auth on: the token of the
    configuration's own tokens file, when it can read it; none when it cannot."""
    root = tree({"config.yaml": f'admin: {{listen: "127.0.0.1:9900", auth: {{tokens_file: t}}}}\n{REST}'})
    (root / "t").write_text(TOKEN + "\n")
    found = admin_address("config.yaml", env={})
    assert found is not None and found.auth is not None and found.auth.values == {TOKEN}
    (root / "t").unlink()
    found = admin_address("config.yaml", env={})
    assert found is not None and found.auth is None
