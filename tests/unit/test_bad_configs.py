"""A table of bad configurations: each reports exactly the right file, line and key path."""

from __future__ import annotations

import re

import pytest
from conftest import write_tree

from veylor.config import ConfigError, format_path, load_config

OK_HEAD = """sources:
  s: {url: "ws://127.0.0.1:9/"}
endpoints:
  e: {websocket: {port: 9001}}
"""
OK_ROUTE = "routes:\n  r: {from: s, to: e}\n"

# (id, files, [(file, line, key path, text in the message)])
CASES = [
    (
        "admin-listen-and-unix",
        {"config.yaml": OK_HEAD + OK_ROUTE + 'admin: {listen: "127.0.0.1:9900", unix: /tmp/a.sock}\n'},
        [("config.yaml", 7, "admin", "has 'listen' and 'unix': keep exactly one of listen, unix")],
    ),
    (
        "admin-port-out-of-range",
        {"config.yaml": OK_HEAD + OK_ROUTE + 'admin: {listen: "127.0.0.1:99999"}\n'},
        [("config.yaml", 7, "admin.listen", "port 99999 is not between 1 and 65535")],
    ),
    (
        "admin-not-host-port",
        {"config.yaml": OK_HEAD + OK_ROUTE + 'admin: {listen: "9900"}\n'},
        [("config.yaml", 7, "admin.listen", "is not host:port")],
    ),
    (
        "admin-in-a-dropin",
        {"config.yaml": OK_HEAD + OK_ROUTE, "routes.d/a.yaml": 'admin: {listen: "127.0.0.1:9900"}\n'},
        [("routes.d/a.yaml", 1, "admin", "'admin' is only read from the main file")],
    ),
    (
        "unknown-key-did-you-mean",
        {"config.yaml": "sources:\n  s:\n    urll: ws://x\n"},
        [
            ("config.yaml", 3, "sources.s.urll", "did you mean 'url'?"),
            ("config.yaml", 3, "sources.s", "needs exactly one of: url, nats"),
        ],
    ),
    (
        "http-url",
        {"config.yaml": "sources:\n  s:\n    url: http://x\n"},
        [("config.yaml", 3, "sources.s.url", "'http://x' is not a ws:// or wss:// URL")],
    ),
    (
        "bad-url-port",
        {"config.yaml": OK_HEAD.replace("ws://127.0.0.1:9/", "ws://127.0.0.1:99999/") + OK_ROUTE},
        [("config.yaml", 2, "sources.s.url", "is not a valid URL: Port out of range")],
    ),
    (
        "url-fragment",
        {"config.yaml": OK_HEAD.replace("ws://127.0.0.1:9/", "ws://127.0.0.1:9/ws#top") + OK_ROUTE},
        [("config.yaml", 2, "sources.s.url", "has a #fragment")],
    ),
    (
        "url-bad-userinfo",
        {"config.yaml": OK_HEAD.replace("ws://127.0.0.1:9/", "ws://u:%ff%fe@127.0.0.1:9/") + OK_ROUTE},
        [("config.yaml", 2, "sources.s.url", "not percent-encoded UTF-8")],
    ),
    (
        "ipv6-url",
        {"config.yaml": OK_HEAD.replace("ws://127.0.0.1:9/", "ws://[::1/ws") + OK_ROUTE},
        [("config.yaml", 2, "sources.s.url", "is not a valid URL: Invalid IPv6 URL")],
    ),
    (
        "yaml-syntax",
        {"config.yaml": "sources:\n  s: {url: ws://x\nendpoints: {}\n"},
        [("config.yaml", 3, "", "YAML syntax error")],
    ),
    (
        "duplicate-yaml-key",
        {"config.yaml": OK_HEAD + "routes:\n  r: {from: s, to: e}\n  r: {from: s, to: e}\n"},
        [("config.yaml", 7, "routes.r", "duplicate key 'r' (first defined at line 6)")],
    ),
    (
        "missing-env",
        {"config.yaml": OK_HEAD.replace("{url:", "{headers: {K: '${NOT_SET_X}'}, url:") + OK_ROUTE},
        [("config.yaml", 2, "sources.s.headers.K", "NOT_SET_X is not set")],
    ),
    (
        "route-unknown-source",
        {"config.yaml": OK_HEAD + "routes:\n  r: {from: t, to: e}\n  q:\n    from: ss\n    to: e\n"},
        [
            ("config.yaml", 6, "routes.r.from", "unknown source 't'"),
            ("config.yaml", 8, "routes.q.from", "unknown source 'ss'; did you mean 's'?"),
        ],
    ),
    (
        "route-unknown-endpoint-in-list",
        {"config.yaml": OK_HEAD + "routes:\n  r:\n    from: s\n    to:\n      - e\n      - ee\n"},
        [("config.yaml", 10, "routes.r.to[1]", "unknown endpoint 'ee'; did you mean 'e'?")],
    ),
    (
        "endpoint-both-kinds",
        {"config.yaml": OK_HEAD + "  u:\n    websocket: {port: 1}\n    unix: {path: /tmp/u}\n" + OK_ROUTE},
        [("config.yaml", 6, "endpoints.u", "has 'websocket' and 'unix'")],
    ),
    (
        "endpoint-neither-kind",
        {"config.yaml": OK_HEAD + "  u:\n    max_clients: 5\n" + OK_ROUTE},
        [("config.yaml", 6, "endpoints.u", "needs exactly one of: websocket, unix, nats")],
    ),
    (
        "port-out-of-range",
        {"config.yaml": OK_HEAD.replace("9001", "70000") + OK_ROUTE},
        [("config.yaml", 4, "endpoints.e.websocket.port", "must be at most 65535")],
    ),
    (
        "port-is-a-string",
        {"config.yaml": OK_HEAD.replace("9001", "'abc'") + OK_ROUTE},
        [("config.yaml", 4, "endpoints.e.websocket.port", "expected an integer, got the string 'abc'")],
    ),
    (
        "unquoted-mode",
        {"config.yaml": OK_HEAD + "  u:\n    unix:\n      path: /tmp/u.sock\n      mode: 0660\n" + OK_ROUTE},
        [("config.yaml", 8, "endpoints.u.unix.mode", "quoted octal string")],
    ),
    (
        "bad-enum-did-you-mean",
        {
            "config.yaml": OK_HEAD.replace(
                "{websocket: {port: 9001}}", "{websocket: {port: 9001}, slow_client: dorp}"
            )
            + OK_ROUTE
        },
        [("config.yaml", 4, "endpoints.e.slow_client", "did you mean 'drop'?")],
    ),
    (
        "bad-size",
        {
            "config.yaml": OK_HEAD.replace(
                "{websocket: {port: 9001}}", "{websocket: {port: 9001}, client_buffer: 4 lots}"
            )
            + OK_ROUTE
        },
        [("config.yaml", 4, "endpoints.e.client_buffer", "is not a size")],
    ),
    (
        "reconnect-max-below-initial",
        {
            "config.yaml": OK_HEAD.replace(
                '{url: "ws://127.0.0.1:9/"}',
                '\n    url: "ws://127.0.0.1:9/"\n    reconnect:\n      initial_delay: 10\n      max_delay: 1',
            )
            + OK_ROUTE
        },
        [("config.yaml", 6, "sources.s.reconnect.max_delay", "less than initial_delay")],
    ),
    (
        "json-filter-two-operators",
        {
            "config.yaml": OK_HEAD + "routes:\n  r:\n    from: s\n    to: e\n    filter:\n"
            "      json: {path: a, equals: 1, prefix: b}\n"
        },
        [("config.yaml", 10, "routes.r.filter.json", "has 'equals' and 'prefix'")],
    ),
    (
        "json-filter-no-operator",
        {"config.yaml": OK_HEAD + "routes:\n  r:\n    from: s\n    to: e\n    filter: {json: {path: a}}\n"},
        [
            (
                "config.yaml",
                9,
                "routes.r.filter.json",
                "needs exactly one of: equals, in, prefix, regex, exists",
            )
        ],
    ),
    (
        "bad-regex-nested",
        {
            "config.yaml": OK_HEAD + "routes:\n  r:\n    from: s\n    to: e\n    filter:\n      any:\n"
            "        - type: text\n        - text: {regex: '(['}\n"
        },
        [("config.yaml", 12, "routes.r.filter.any[1].text.regex", "not a valid regular expression")],
    ),
    (
        "regex-backreference",
        {
            "routes.d/10.yaml": "routes:\n  r:\n    from: s\n    to: e\n"
            "    filter: {json: {path: s, regex: '(a)\\1'}}\n",
            "config.yaml": OK_HEAD,
        },
        [
            (
                "routes.d/10.yaml",
                5,
                "routes.r.filter.json.regex",
                "backreferences and lookaround are not supported",
            )
        ],
    ),
    (
        "unknown-filter-operator",
        {"config.yaml": OK_HEAD + "routes:\n  r:\n    from: s\n    to: e\n    filter: {jsn: {path: a}}\n"},
        [("config.yaml", 9, "routes.r.filter.jsn", "did you mean 'json'?")],
    ),
    (
        "bad-json-path",
        {
            "config.yaml": OK_HEAD + "routes:\n  r:\n    from: s\n    to: e\n    filter:\n"
            "      json: {path: 'a..b', exists: true}\n"
        },
        [("config.yaml", 10, "routes.r.filter.json.path", "is not a JSON path")],
    ),
    (
        "same-name-in-two-files",
        {"config.yaml": OK_HEAD + OK_ROUTE, "routes.d/10-x.yaml": "\nroutes:\n  r: {from: s, to: e}\n"},
        [("routes.d/10-x.yaml", 2, "routes.r", "already defined at config.yaml:6")],
    ),
    (
        "same-unix-path-in-two-files",
        {
            "config.yaml": OK_HEAD + "  u1: {unix: {path: /tmp/same.sock}}\n"
            "routes:\n  r: {from: s, to: [e, u1]}\n",
            "routes.d/a.yaml": "endpoints:\n  u2: {unix: {path: /tmp/same.sock}}\n"
            "routes:\n  r2: {from: s, to: u2}\n",
        },
        [("routes.d/a.yaml", 2, "endpoints.u2.unix.path", "already used by endpoint 'u1' (config.yaml:5)")],
    ),
    (
        "same-host-port-path",
        {
            "config.yaml": OK_HEAD + "  f: {websocket: {port: 9001, host: 127.0.0.1}}\n"
            "routes:\n  r: {from: s, to: [e, f]}\n"
        },
        [("config.yaml", 5, "endpoints.f.websocket", "already served by endpoint 'e'")],
    ),
    (
        "wildcard-and-specific-host-same-port",
        {
            "config.yaml": OK_HEAD + "  f: {websocket: {port: 9001, host: 0.0.0.0, path: /f}}\n"
            "routes:\n  r: {from: s, to: [e, f]}\n"
        },
        [("config.yaml", 5, "endpoints.f.websocket.host", "a wildcard address and another address")],
    ),
    (
        "dropin-with-include",
        {"config.yaml": OK_HEAD + OK_ROUTE, "routes.d/x.yaml": "include: [more/*.yaml]\n"},
        [("routes.d/x.yaml", 1, "include", "'include' is only read from the main file")],
    ),
    (
        "dropin-legacy-list",
        {"config.yaml": OK_HEAD + OK_ROUTE, "routes.d/x.yaml": "sources:\n  - url: ws://x\n"},
        [("routes.d/x.yaml", 2, "sources", "expected a mapping or empty, got a list")],
    ),
    (
        "top-level-not-a-mapping",
        {"config.yaml": "- just\n- a list\n"},
        [("config.yaml", 1, "", "the top level must be a mapping")],
    ),
    (
        "legacy-keys-in-v1",
        {"config.yaml": OK_HEAD + OK_ROUTE + "rebroadcast: {websocket: {port: 1}}\n"},
        [("config.yaml", 7, "rebroadcast", "belongs to Veylor 1.0 files")],
    ),
    (
        "bad-name",
        {"config.yaml": OK_HEAD + OK_ROUTE.replace("  r:", "  'bad name!':")},
        [("config.yaml", 6, "routes.bad name!", "is not a valid name")],
    ),
    (
        "unix-path-too-long",
        {"config.yaml": OK_HEAD + "  u: {unix: {path: /tmp/" + "x" * 120 + "}}\n" + OK_ROUTE},
        [("config.yaml", 5, "endpoints.u.unix.path", "at most 107")],
    ),
    (
        "include-file-missing",
        {"config.yaml": OK_HEAD + OK_ROUTE + "include: [routes.d/*.yaml, extra.yaml]\n"},
        [("config.yaml", 7, "include[1]", "extra.yaml does not exist")],
    ),
    (
        "version-2",
        {"config.yaml": "version: 2\n" + OK_HEAD + OK_ROUTE},
        [("config.yaml", 1, "version", "must be 1")],
    ),
    (
        "errors-in-several-files-all-reported",
        {
            "config.yaml": OK_HEAD + OK_ROUTE + "  t: {from: s, to: e, upstream: maybe}\n",
            "routes.d/1.yaml": "routes:\n  u: {from: s, to: e, filter: {type: json}}\n",
            "routes.d/2.yaml": "routes:\n  v: {from: s}\n",
        },
        [
            ("config.yaml", 7, "routes.t.upstream", "expected true or false"),
            ("routes.d/1.yaml", 2, "routes.u.filter.type", "is not one of: text, binary"),
            ("routes.d/2.yaml", 2, "routes.v", "missing required key 'to'"),
        ],
    ),
]


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_reports_file_line_and_path(tree, files, expected):
    tree(files)
    with pytest.raises(ConfigError) as err:
        load_config("config.yaml", env={})
    got = [(p.location.file, p.location.line, format_path(p.path), p.message) for p in err.value.problems]
    assert [g[:3] for g in got] == [e[:3] for e in expected], "\n".join(map(str, err.value.problems))
    for (_, _, _, message), (*_, text) in zip(got, expected, strict=True):
        assert text in message


def _kind(message: str) -> str:
    """A problem's message without what varies between configs: quoted values, numbers."""
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'…'", message))


def test_there_are_at_least_twenty_cases(tmp_path, monkeypatch):
    """Twenty cases of twenty different mistakes, as the loader reports them: a case that
    fails for the same reason as another (same key paths, same kinds of message) adds
    nothing to the table."""
    reported: dict[frozenset[tuple[str, str]], str] = {}
    for case_id, files, _ in CASES:
        monkeypatch.chdir(write_tree(tmp_path / case_id, files))
        with pytest.raises(ConfigError) as err:
            load_config("config.yaml", env={})
        kinds = frozenset((format_path(p.path), _kind(p.message)) for p in err.value.problems)
        assert kinds not in reported, f"{case_id} reports what {reported.get(kinds)} does: {sorted(kinds)}"
        reported[kinds] = case_id
    assert len(reported) >= 20


def _documents():
    """Every YAML document of the table and of the shipped examples, with its kind."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    docs = [(name, text) for _, files, _ in CASES for name, text in files.items()]
    docs += [("config.yaml", (repo / "config.yaml.example").read_text())]
    docs += [(p.name, p.read_text()) for p in sorted((repo / "routes.d").glob("*.example"))]
    return docs


@pytest.mark.parametrize(("name", "text"), _documents())
def test_fast_validator_never_accepts_what_jsonschema_rejects(name, text):
    """jsonschema-rs is only a fast path: where it says valid, jsonschema must agree (it
    has the final word and gives the messages); the other way round costs only time."""
    from veylor.config.schema import _fast_validator, _validator
    from veylor.config.yamlfile import read_yaml

    doc = read_yaml(name, text, {})
    if doc.fatal or not isinstance(doc.data, dict):
        return
    kind = None if name == "config.yaml" else "dropin"
    fast = _fast_validator(kind)
    assert fast is not None, "jsonschema-rs is a dependency"
    assert fast.is_valid(doc.data) == _validator(kind).is_valid(doc.data)
