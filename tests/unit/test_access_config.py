"""The access settings as the loader reads them: each mistake located (file, line, key),
tokens never shown, referenced files (tokens, certificates) read at every load even when
the YAML that names them is cached."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from veylor.config import ConfigError, load_config
from veylor.config.files import FileCache
from veylor.config.problems import format_path

GOOD_TOKEN = "0123456789abcdef-good"


def _problems(tree, files: dict[str, str]) -> list[tuple[str, int, str, str]]:
    tree(files)
    with pytest.raises(ConfigError) as err:
        load_config("config.yaml", env={})
    return [(p.location.file, p.location.line, format_path(p.path), p.message) for p in err.value.problems]


def _config(endpoint: str, route: str = "", source: str = "") -> str:
    return f"""
sources:
  feed: {{url: "wss://example.com/feed"{source}}}
endpoints:
  ep:
{endpoint}
routes:
  r: {{from: feed, to: ep{route}}}
"""


def test_tokens_file_missing_is_located_at_its_key(tree) -> None:
    (problem,) = _problems(
        tree, {"config.yaml": _config("    websocket: {port: 8765, auth: {tokens_file: nowhere.txt}}")}
    )
    assert problem[:3] == ("config.yaml", 5, "endpoints.ep.websocket.auth.tokens_file")
    assert "nowhere.txt does not exist" in problem[3]


def test_a_short_token_is_reported_at_its_line_of_the_tokens_file_and_never_shown(tree, tmp_path) -> None:
    files = {
        "config.yaml": _config("    websocket: {port: 8765, auth: {tokens_file: tokens}}"),
        "tokens": f"# who\n{GOOD_TOKEN}\n\nshort-secret\n",
    }
    (problem,) = _problems(tree, files)
    assert problem[:2] == (str(tmp_path / "tokens"), 4)
    assert "at least 16" in problem[3] and "short-secret" not in problem[3]


def test_inline_tokens_are_checked_and_never_shown(tree) -> None:
    problems = _problems(
        tree,
        {
            "config.yaml": _config(
                f'    websocket: {{port: 8765, auth: {{tokens: ["{GOOD_TOKEN}", "tiny"]}}}}'
            )
        },
    )
    assert [p[2] for p in problems] == ["endpoints.ep.websocket.auth.tokens[1]"]
    assert "tiny" not in problems[0][3]


def test_a_tokens_file_without_tokens_is_an_error_and_a_world_readable_one_a_warning(tree) -> None:
    problems = _problems(
        tree,
        {
            "config.yaml": _config("    websocket: {port: 8765, auth: {tokens_file: tokens}}"),
            "tokens": "# none\n",
        },
    )
    assert "has no tokens" in problems[0][3]
    tree({"tokens": GOOD_TOKEN + "\n"})
    os.chmod("tokens", 0o644)
    config = load_config("config.yaml", env={})
    assert any("readable by every user" in w.message for w in config.warnings)
    assert GOOD_TOKEN in config.endpoints["ep"].secrets()


def test_a_changed_tokens_file_is_read_again_though_the_yaml_is_cached(tree) -> None:
    tree(
        {
            "config.yaml": _config("    websocket: {port: 8765, auth: {tokens_file: tokens}}"),
            "tokens": GOOD_TOKEN,
        }
    )
    cache = FileCache()
    first = load_config("config.yaml", env={}, cache=cache)
    tree({"tokens": GOOD_TOKEN + "\nanother-token-0123456789\n"})
    second = load_config("config.yaml", env={}, cache=cache, changed=frozenset())
    assert len(first.endpoints["ep"].access.auth) == 1
    assert len(second.endpoints["ep"].access.auth) == 2
    assert first.digest != second.digest
    assert first.endpoints["ep"] != second.endpoints["ep"]


def test_tls_problems(tree, tmp_path) -> None:
    files = {
        "config.yaml": _config("    websocket: {port: 8765, tls: {cert: cert.pem, key: key.pem}}"),
        "cert.pem": "not a certificate\n",
        "key.pem": "not a key\n",
    }
    (problem,) = _problems(tree, files)
    assert problem[2] == "endpoints.ep.websocket.tls" and "cannot use" in problem[3]
    cert, key = _problems(
        tree, {"config.yaml": _config("    websocket: {port: 8765, tls: {cert: c.pem, key: k.pem}}")}
    )  # both said (and both watched), not only the first
    assert cert[2] == "endpoints.ep.websocket.tls.cert" and "c.pem does not exist" in cert[3]
    assert key[2] == "endpoints.ep.websocket.tls.key" and "k.pem does not exist" in key[3]
    tree({"config.yaml": _config("    websocket: {port: 8765}", source=", tls: {ca_file: nope.pem}")})
    (problem,) = _problems(tree, {})
    assert problem[2] == "sources.feed.tls.ca_file"


def test_tls_on_a_ws_source_and_ws_and_wss_on_one_port_are_refused(tree) -> None:
    text = """
sources:
  feed: {url: "ws://example.com/feed", tls: {verify: false}}
endpoints:
  a: {websocket: {port: 8765, path: /a}}
  b: {websocket: {port: 8765, path: /b, tls: {cert: c.pem, key: k.pem}}}
routes:
  r: {from: feed, to: [a, b]}
"""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    tree({"config.yaml": text})
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "k.pem", "-out", "c.pem", "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    problems = _problems(tree, {})
    paths = [p[2] for p in problems]
    assert "sources.feed.tls" in paths
    assert "endpoints.b.websocket.tls" in paths
    assert any("share its TLS" in p[3] for p in problems)


def test_upstream_policy_mistakes_are_located(tree) -> None:
    (problem,) = _problems(
        tree, {"config.yaml": _config("    websocket: {port: 8765}", route=", upstream: maybe")}
    )
    assert problem[2] == "routes.r.upstream" and "expected true or false or a mapping" in problem[3]
    (problem,) = _problems(
        tree, {"config.yaml": _config("    websocket: {port: 8765}", route=", upstream: {rate: 0}")}
    )
    assert problem[2] == "routes.r.upstream.rate" and "greater than 0" in problem[3]
    (problem,) = _problems(
        tree,
        {
            "config.yaml": _config(
                "    websocket: {port: 8765}", route=", upstream: {allow: [{text: {regex: '('}}]}"
            )
        },
    )
    assert problem[2].startswith("routes.r.upstream.allow[0]")
    (problem,) = _problems(
        tree, {"config.yaml": _config("    websocket: {port: 8765}", route=", upstream: {rate: 5, jam: 1}")}
    )
    assert "unknown key 'jam'" in problem[3]


def test_unix_owner_that_does_not_exist(tree) -> None:
    (problem,) = _problems(
        tree, {"config.yaml": _config('    unix: {path: /tmp/x.sock, owner: "no-such-user-veylor"}')}
    )
    assert problem[2] == "endpoints.ep.unix.owner" and "does not exist" in problem[3]


def test_many_tokens_are_masked_by_lookup_not_by_one_huge_pattern() -> None:
    """20,000 tokens in one RE2 alternation outgrew its DFA: 28 ms per log line on the
    event loop. Tokens of one length are looked up in a set, window by window."""
    import secrets

    from veylor.observe.logs import MASK, Secrets

    tokens = [secrets.token_hex(32) for _ in range(20_000)]
    masker = Secrets()
    masker.update([*tokens, "Bearer a header value", "short-but-8+"])
    assert masker._pattern is not None  # the few others still go through RE2
    assert sum(map(len, masker._by_prefix.values())) == 20_000
    line = f"GET /?token={tokens[123]}&a=1 x{tokens[-1]}y Bearer a header value; short-but-8+"
    assert masker.mask(line) == f"GET /?token={MASK}&a=1 x{MASK}y {MASK}; {MASK}"
    assert masker.mask("nothing secret here, not even 0123456789abcdef0123") == (
        "nothing secret here, not even 0123456789abcdef0123"
    )


def test_the_admin_endpoint_cannot_share_an_endpoints_address(tree) -> None:
    """Checked on the specs the load built (an endpoint is not built twice: its access
    reads files)."""
    text = _config("    websocket: {port: 8765}") + 'admin: {listen: "127.0.0.1:8765"}\n'
    problems = _problems(tree, {"config.yaml": text})
    assert [(p[1], p[2]) for p in problems] == [(8, "admin.listen")]
    assert "also where endpoint 'ep'" in problems[0][3]


# ---------------------------------------------------------------- files that come back

_CREDS = "-----BEGIN NATS USER JWT-----\neyJhbGc\n------END NATS USER JWT------\n"


def _every_kind_of_referenced_file(tmp_path) -> tuple[str, dict[str, str]]:
    """A configuration naming one file of each kind (tokens file, certificate and key, a
    source's CA file, NATS credentials), each in a component of its own, and those
    files' good contents."""
    from helpers import make_ca, make_cert

    ca = make_ca(tmp_path / "pki")
    cert, key = make_cert(tmp_path / "pki", ca, "server")
    config = """
sources:
  feed: {url: "wss://example.com/feed", tls: {ca_file: ca.pem}}
endpoints:
  ep: {websocket: {port: 8765, auth: {tokens_file: tokens}}}
  secure: {websocket: {port: 8766, tls: {cert: cert.pem, key: key.pem}}}
  cluster:
    nats: {servers: [nats://127.0.0.1:4222], subject: veylor.ticker, credentials: core.creds}
routes:
  r: {from: feed, to: [ep, secure, cluster]}
"""
    files = {
        "tokens": GOOD_TOKEN + "\n",
        "cert.pem": cert.read_text(),
        "key.pem": key.read_text(),
        "ca.pem": ca.read_text(),
        "core.creds": _CREDS,
    }
    return config, files


_KEYS = {
    "tokens": "endpoints.ep.websocket.auth.tokens_file",
    "cert.pem": "endpoints.secure.websocket.tls.cert",
    "key.pem": "endpoints.secure.websocket.tls.key",
    "ca.pem": "sources.feed.tls.ca_file",
    "core.creds": "endpoints.cluster.nats.credentials",
}


@pytest.mark.parametrize("name", sorted(_KEYS))
@pytest.mark.parametrize("gone", ["missing", "not a file"])
@pytest.mark.parametrize("trigger", ["sighup", "watch"])
def test_a_referenced_file_that_was_missing_is_read_again_when_it_comes_back(
    tree, tmp_path, name: str, gone: str, trigger: str
) -> None:
    """Issue 22.1: a component built while its file could not be read was kept with its
    problem in the per-file cache (a file was recorded only when read), so the file's
    return was never seen: every load after that said 'does not exist' again. Each kind
    of referenced file, gone (deleted, or a directory where the file was: unreadable
    as a file) and back, with the cache a running Veylor keeps; 'watch' loads as the
    file watcher does, naming only the file that changed."""
    config, files = _every_kind_of_referenced_file(tmp_path)
    tree({"config.yaml": config, **files})
    os.chmod("tokens", 0o600)
    cache = FileCache()
    first = load_config("config.yaml", env={}, cache=cache)
    path = str(tmp_path / name)
    assert path in first.referenced

    os.unlink(name)
    if gone == "not a file":
        os.mkdir(name)
    for _ in range(2):  # ... and stays so: the same problem at each load, the path still watched
        with pytest.raises(ConfigError) as err:
            load_config("config.yaml", env={}, cache=cache, changed=frozenset({path}))
        assert [format_path(p.path) for p in err.value.problems if not p.warning] == [_KEYS[name]]

    if gone == "not a file":
        os.rmdir(name)
    tree({name: files[name]})  # back, as it was
    os.chmod("tokens", 0o600)
    changed = frozenset({path}) if trigger == "watch" else None
    back = load_config("config.yaml", env={}, cache=cache, changed=changed)
    assert back.digest == first.digest
    assert path in back.referenced


def test_a_tokens_file_that_comes_back_changed_applies_its_tokens(tree) -> None:
    """The restored file is read for what it says now: a token it no longer has is gone."""
    other = "another-token-0123456789"
    tree(
        {
            "config.yaml": _config("    websocket: {port: 8765, auth: {tokens_file: tokens}}"),
            "tokens": f"{GOOD_TOKEN}\n{other}\n",
        }
    )
    os.chmod("tokens", 0o600)
    cache = FileCache()
    first = load_config("config.yaml", env={}, cache=cache)
    os.unlink("tokens")
    with pytest.raises(ConfigError):
        load_config("config.yaml", env={}, cache=cache)
    tree({"tokens": GOOD_TOKEN + "\n"})
    os.chmod("tokens", 0o600)
    back = load_config("config.yaml", env={}, cache=cache)
    assert len(first.endpoints["ep"].access.auth) == 2
    assert len(back.endpoints["ep"].access.auth) == 1
