"""Every filter operator, compiled once, against real message payloads."""

from __future__ import annotations

import json

import pytest

from veylor.filters import FilterError, compile_filter, describe, json_equal, parse_json_path
from veylor.message import NOT_JSON, Message

TRADE = json.dumps(
    {"s": "BTCUSDT", "p": 42000.5, "q": 1, "ok": True, "data": {"bids": [["1.5", 3], ["1.4", 1]]}}
)


def m(payload: str | bytes) -> Message:
    return Message.of(payload)


def match(spec: dict, payload: str | bytes) -> bool:
    return compile_filter(spec)(m(payload))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"json": {"path": "s", "equals": "BTCUSDT"}}, True),
        ({"json": {"path": "s", "equals": "ETHUSDT"}}, False),
        ({"json": {"path": "p", "equals": 42000.5}}, True),
        ({"json": {"path": "q", "equals": 1.0}}, True),  # 1 == 1.0 in JSON
        ({"json": {"path": "ok", "equals": 1}}, False),  # but true is not 1
        ({"json": {"path": "q", "equals": True}}, False),
        ({"json": {"path": "s", "in": ["ETHUSDT", "BTCUSDT"]}}, True),
        ({"json": {"path": "s", "in": ["ETHUSDT"]}}, False),
        ({"json": {"path": "q", "in": [2, 1]}}, True),
        ({"json": {"path": "ok", "in": [1]}}, False),
        ({"json": {"path": "s", "prefix": "BTC"}}, True),
        ({"json": {"path": "p", "prefix": "42"}}, False),  # not a string
        ({"json": {"path": "s", "regex": "USDT$"}}, True),
        ({"json": {"path": "s", "regex": "^ETH"}}, False),
        ({"json": {"path": "data.bids[0][0]", "equals": "1.5"}}, True),
        ({"json": {"path": "data.bids[1][1]", "equals": 1}}, True),
        ({"json": {"path": "data.bids[5][0]", "exists": True}}, False),
        ({"json": {"path": "data.bids", "exists": True}}, True),
        ({"json": {"path": "data.asks", "exists": False}}, True),
        ({"json": {"path": "s.deeper", "exists": True}}, False),
        ({"json": {"path": "data[0]", "exists": True}}, False),  # index into a mapping
        ({"json": {"path": "data", "equals": {"bids": [["1.5", 3], ["1.4", 1]]}}}, True),
        ({"text": {"contains": "BTCUSDT"}}, True),
        ({"text": {"contains": "XRP"}}, False),
        ({"text": {"regex": r'"q":\s*1\b'}}, True),
        ({"type": "text"}, True),
        ({"type": "binary"}, False),
        ({"all": [{"type": "text"}, {"json": {"path": "s", "prefix": "BTC"}}]}, True),
        ({"all": [{"type": "text"}, {"json": {"path": "s", "prefix": "ETH"}}]}, False),
        ({"any": [{"type": "binary"}, {"json": {"path": "s", "prefix": "BTC"}}]}, True),
        ({"any": [{"type": "binary"}, {"text": {"contains": "nope"}}]}, False),
        ({"not": {"json": {"path": "s", "equals": "BTCUSDT"}}}, False),
        ({"not": {"type": "binary"}}, True),
        # Several operators in one mapping must all match.
        ({"type": "text", "json": {"path": "s", "equals": "BTCUSDT"}}, True),
        ({"type": "binary", "json": {"path": "s", "equals": "BTCUSDT"}}, False),
    ],
)
def test_operator_on_a_json_text_message(spec, expected):
    assert match(spec, TRADE) is expected


@pytest.mark.parametrize(
    "spec",
    [
        {"json": {"path": "s", "equals": "x"}},
        {"json": {"path": "s", "in": ["x"]}},
        {"json": {"path": "s", "prefix": "x"}},
        {"json": {"path": "s", "regex": "x"}},
        {"json": {"path": "s", "exists": True}},
        {"json": {"path": "s", "exists": False}},
    ],
)
@pytest.mark.parametrize("payload", ["not json at all", "{truncated", "", b"\xff\xfe binary", "[1, 2"])
def test_non_json_never_matches_a_json_filter_and_never_raises(spec, payload):
    assert match(spec, payload) is False


def test_binary_message_never_matches_text_filters():
    assert match({"text": {"contains": "abc"}}, b"abc") is False
    assert match({"text": {"regex": "a"}}, b"abc") is False
    assert match({"type": "binary"}, b"abc") is True


def test_binary_frame_holding_json_is_parsed():
    assert match({"json": {"path": "s", "equals": "BTCUSDT"}}, TRADE.encode()) is True


def test_text_contains_with_non_ascii():
    assert match({"text": {"contains": "é"}}, '{"name": "café"}') is True
    assert match({"text": {"contains": "é"}}, '{"name": "cafe"}') is False


def test_json_is_decoded_at_most_once_per_message(monkeypatch):
    calls = []
    real = json.loads
    monkeypatch.setattr("veylor.message.json.loads", lambda data: calls.append(1) or real(data))
    filters = [compile_filter({"json": {"path": "s", "equals": v}}) for v in ("A", "B", "BTCUSDT")]
    msg = m(TRADE)
    assert [f(msg) for f in filters] == [False, False, True]
    assert len(calls) == 1


def test_message_json_of_invalid_is_sentinel():
    assert m("nope").json is NOT_JSON
    assert m("null").json is None
    assert m("null").json is not NOT_JSON


def test_invalid_regex_is_a_filter_error_with_its_path():
    with pytest.raises(FilterError) as err:
        compile_filter({"all": [{"type": "text"}, {"text": {"regex": "(unclosed"}}]})
    assert err.value.path == ("all", 1, "text", "regex")


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("s", ("s",)),
        ("data.bids[0].price", ("data", "bids", 0, "price")),
        ("a[1][2]", ("a", 1, 2)),
        ("with space.x", ("with space", "x")),
    ],
)
def test_parse_json_path(path, parts):
    assert parse_json_path(path) == parts


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", "a[x]", "[0]"])
def test_parse_json_path_rejects(bad):
    with pytest.raises(ValueError):
        parse_json_path(bad)


def test_json_equal_distinguishes_bool_and_number():
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal([True], [1])
    assert not json_equal("1", 1)
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})


def test_describe_is_readable():
    spec = {"all": [{"json": {"path": "s", "in": ["BTCUSDT"]}}, {"not": {"type": "binary"}}]}
    assert describe(spec) == '(json s in ["BTCUSDT"] and not (type binary))'
    assert describe(None) == "everything"
    assert describe({"json": {"path": "x", "exists": False}}) == "json x is absent"


@pytest.mark.timeout(20)
def test_a_catastrophic_regular_expression_takes_linear_time():
    """(a+)+$ on a crafted value froze every client for seconds with a backtracking
    engine; it would take years on this one. RE2 answers at once."""
    match = compile_filter({"json": {"path": "s", "regex": "(a+)+$"}})
    crafted = json.dumps({"s": "a" * 60 + "!"}).encode()
    assert not match(Message(crafted, True))
    assert match(Message(json.dumps({"s": "aaaa"}).encode(), True))
    text = compile_filter({"text": {"regex": "(x+x+)+y"}})
    assert not text(Message(b"x" * 5000, True))


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)b", r"(?!a)b", r"(?<=a)b"])
def test_backreferences_and_lookaround_are_refused_with_the_reason(pattern):
    with pytest.raises(FilterError) as exc:
        compile_filter({"text": {"regex": pattern}})
    assert "backreferences and lookaround are not supported" in exc.value.message
    assert exc.value.path == ("text", "regex")


def test_in_with_mixed_values_keeps_json_equality():
    match = compile_filter({"json": {"path": "v", "in": [1, "a", True, None, [1, 2], {"k": 1}]}})

    def test(value) -> bool:
        return match(Message(json.dumps({"v": value}).encode(), True))

    assert test(1) and test(1.0) and test("a") and test(True) and test(None)
    assert test([1, 2]) and test({"k": 1}) and test([1.0, 2])
    assert not test(2) and not test("b") and not test(False) and not test([2, 1]) and not test({"k": 2})
    only_numbers = compile_filter({"json": {"path": "v", "in": [1, 2.5]}})
    assert not only_numbers(Message(b'{"v": true}', True))  # true is not 1 in JSON
    assert only_numbers(Message(b'{"v": 2.5}', True))
