"""What ``veylor top`` checks of a state view read over HTTP (veylor/tui/shape.py): a
view the panes can draw passes; one with a field they could not read is refused,
naming that field, before anything is computed or drawn from it."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest

from veylor.tui.shape import Misshapen, check_outcome, check_view

from .fixed_view import view


def test_the_views_the_snapshots_draw_pass() -> None:
    for v in (view(0.0, 10), view(1.0, 11)):
        check_view(v)
    tapped = view(1.0, 11) | {"tap": {"route": "kraken", "seen": 3, "messages": ["a", "b"]}}
    check_view(tapped)
    check_view(view(1.0, 11) | {"tap": {"route": "nope", "error": "no such route"}})
    check_view(view(1.0, 11) | {"tap": None})
    check_outcome({"changes": [], "problems": [], "error": None})
    check_outcome({"changes": ["+ route r"], "steps": [{"op": "swap_routes", "name": ""}], "problems": []})


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(v: dict[str, Any]) -> None:
        for key in path[:-1]:
            v = v[key]
        v[path[-1]] = value

    return change


def _drop(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def change(v: dict[str, Any]) -> None:
        for key in path[:-1]:
            v = v[key]
        del v[path[-1]]

    return change


BROKEN = {
    "sources as a list": (_set(("sources",), []), "sources is not an object"),
    "a count as text": (
        _set(("sources", "binance", "messages_in"), "12"),
        "sources['binance'].messages_in is not a number",
    ),
    "NaN": (
        _set(("sources", "binance", "bytes_in"), math.nan),
        "sources['binance'].bytes_in is not a number",
    ),
    "infinity": (
        _set(("routes", "kraken", "filtered"), math.inf),
        "routes['kraken'].filtered is not a number",
    ),
    "a huge integer": (_set(("edges", 1, "messages"), 10**400), "edges[1].messages is not a number"),
    "a missing count": (_drop(("edges", 0, "messages")), "edges[0].messages is missing"),
    "a boolean as text": (_set(("edges", 0, "route"), True), "edges[0].route is not a string"),
    "an address as null": (
        _set(("endpoints", "ipc", "address"), None),
        "endpoints['ipc'].address is not a string",
    ),
    "a client's buffer as null": (
        _set(("endpoints", "public", "client_list", 1, "buffered"), None),
        "endpoints['public'].client_list[1].buffered is not a number",
    ),
    "an uptime as text": (
        _set(("sources", "kraken", "connected_since"), "yesterday"),
        "sources['kraken'].connected_since is not a number",
    ),
    "a clock at zero": (_set(("time",), 0), "time is not a time"),
    "a state as a list": (
        _set(("sources", "kraken", "state"), ["backoff"]),
        "sources['kraken'].state is not a string",
    ),
    "no digest": (_drop(("config", "digest")), "config.digest is missing"),
    "a change as a number": (
        _set(("reloads", "last", "changes"), [1]),
        "reloads.last.changes[0] is not a string",
    ),
    "a problem without a line": (
        _set(("reloads", "last", "problems"), [{"file": "f", "path": "p", "message": "m"}]),
        "reloads.last.problems[0].line is missing",
    ),
    "a tap's messages as text": (
        _set(("tap",), {"route": "r", "seen": 1, "messages": "abc"}),
        "tap.messages is not a list",
    ),
}


@pytest.mark.parametrize("change, said", BROKEN.values(), ids=BROKEN.keys())
def test_a_field_the_tui_cannot_read_is_named(change: Callable[[dict[str, Any]], None], said: str) -> None:
    v = copy.deepcopy(view(1.0, 11))
    change(v)
    with pytest.raises(Misshapen) as refused:
        check_view(v)
    assert str(refused.value) == said


def test_a_reload_outcome_the_tui_cannot_read_is_named() -> None:
    with pytest.raises(Misshapen, match=r"^problems\[0\] is not an object$"):
        check_outcome({"problems": ["bad"]})
    with pytest.raises(Misshapen, match=r"^steps\[0\]\.op is missing$"):
        check_outcome({"steps": [{"name": "x"}]})
    with pytest.raises(Misshapen, match=r"^the answer is not an object$"):
        check_outcome([])
