"""The state view's types (veylor.observe.view) hold for the view a real relay makes: every
key a snapshot holds is declared, every required key is there, and the counters declared
are exactly the counters the runtime keeps. The types are what mypy checks the admin
endpoint, /metrics, `veylor status`, `veylor top` and the TUI against: a type that
drifted from the data would let a reader's typo through."""

from __future__ import annotations

import dataclasses
import socket
import types
import typing
from pathlib import Path

import pytest
from helpers import Upstream, eventually, free_port, veylor_inprocess, ws_client

from veylor.observe import view as v
from veylor.observe.state import snapshot, snapshot_async
from veylor.runtime import stats


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conforms(value: object, hint: object, path: str = "view") -> list[str]:
    """Where ``value`` does not have the shape ``hint`` (a TypedDict, a container of
    them, or a plain type) says."""
    origin = typing.get_origin(hint)
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, not a mapping"]
        td = typing.cast(typing.Any, hint)
        declared = td.__required_keys__ | td.__optional_keys__
        wrong = [f"{path}.{k}: not declared in {td.__name__}" for k in sorted(set(value) - declared)]
        wrong += [
            f"{path}.{k}: missing (required by {td.__name__})"
            for k in sorted(td.__required_keys__ - set(value))
        ]
        hints = typing.get_type_hints(td)
        for key in sorted(set(value) & declared):
            wrong += conforms(value[key], hints[key], f"{path}.{key}")
        return wrong
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            return [f"{path}: not a mapping"]
        return [w for k, x in value.items() for w in conforms(x, item, f"{path}[{k!r}]")]
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [w for i, x in enumerate(value) for w in conforms(x, item, f"{path}[{i}]")]
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if any(not conforms(value, option, path) for option in options):
            return []
        return [f"{path}: {value!r} is none of {hint}"]
    if hint is typing.Any:
        return []
    if hint is float:
        return (
            [] if isinstance(value, int | float) and not isinstance(value, bool) else [f"{path}: {value!r}"]
        )
    if isinstance(hint, type):
        return [] if isinstance(value, hint) else [f"{path}: {value!r} is not {hint.__name__}"]
    return [f"{path}: cannot check {hint}"]


@pytest.mark.parametrize(
    ("declared", "kept"),
    [
        (v.SourceCounters, stats.SourceStats),
        (v.EndpointCounters, stats.EndpointStats),
        (v.RouteCounters, stats.RouteStats),
        (v.AdminCounters, stats.AdminStats),
    ],
)
def test_the_declared_counters_are_the_counters_the_runtime_keeps(declared, kept):
    fields = {f.name for f in dataclasses.fields(kept)}
    assert set(typing.get_type_hints(declared)) == fields


async def test_a_snapshot_of_every_kind_has_the_declared_shape(tmp_path: Path, upstream: Upstream) -> None:
    """WebSocket and Unix endpoints with a client each, listed; a WebSocket source that
    is connected and one that is not; NATS components whose server is not there (their
    own keys); a tap; a route with a filter; a reload outcome from a real reload."""
    port, nats = free_port(), _closed_port()
    sock = tmp_path / "feed.sock"
    config = f"""
sources:
  up: {{url: "{upstream.url}"}}
  down: {{url: "ws://127.0.0.1:{_closed_port()}/"}}
  bus: {{nats: {{servers: ["nats://127.0.0.1:{nats}"], subject: veylor.in}}}}
  js: {{nats: {{servers: ["nats://127.0.0.1:{nats}"], subject: veylor.js, stream: JS}}}}
endpoints:
  ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}
  local: {{unix: {{path: "{sock}"}}}}
  out: {{nats: {{servers: ["nats://127.0.0.1:{nats}"], subject: veylor.out}}}}
  outjs: {{nats: {{servers: ["nats://127.0.0.1:{nats}"], subject: veylor.outjs, stream: OUT}}}}
routes:
  r: {{from: up, to: [ws, local, out, outjs], filter: {{text: {{contains: tick}}}}}}
  d: {{from: down, to: ws}}
  b: {{from: bus, to: ws}}
  j: {{from: js, to: ws}}
"""
    async with veylor_inprocess(tmp_path, config) as rt:
        client = await ws_client(f"ws://127.0.0.1:{port}/")
        import asyncio

        _reader, writer = await asyncio.open_unix_connection(str(sock))
        await eventually(
            lambda: rt.sources["up"].state == "connected" and len(rt.endpoints["ws"].clients) == 1
        )
        await eventually(lambda: len(rt.endpoints["local"].clients) == 1)
        await upstream.send("tick 1")
        await upstream.send("other")
        await client.recv()
        await eventually(lambda: rt.sources["down"].status().get("last_error") is not None)
        view = await snapshot_async(rt, clients=True, tap="r")
        assert view["tap"]["route"] == "r"
        assert view["endpoints"]["ws"]["client_list"] and view["endpoints"]["local"]["client_list"]
        assert conforms(view, v.StateView) == []
        assert conforms(snapshot(rt), v.StateView) == []
        assert v.is_state_view(view)
        await client.close()
        writer.close()


async def test_a_reload_outcome_has_the_declared_shape(tmp_path: Path) -> None:
    """Applied, refused with problems, and unchanged: each as the view's reloads.last."""
    from veylor.reload import Reloader

    port = free_port()
    path = tmp_path / "config.yaml"
    text = f"""
sources: {{up: {{url: "ws://127.0.0.1:{_closed_port()}/"}}}}
endpoints: {{ws: {{websocket: {{host: 127.0.0.1, port: {port}, path: /}}}}}}
routes: {{r: {{from: up, to: ws}}}}
"""
    async with veylor_inprocess(tmp_path, text) as rt:
        reloader = Reloader(str(path), rt, watch="off", env={})
        outcomes = []
        for change in (text.replace("r:", "r2:"), text.replace("r:", "r2:") + "\nbogus: [", None):
            if change is not None:
                path.write_text(change)
            outcomes.append(await reloader.reload("test"))
            assert conforms(snapshot(rt, reloader), v.StateView) == []
            assert conforms(outcomes[-1].as_dict(), v.ReloadView) == []
        assert [(o.ok, o.applied) for o in outcomes] == [(True, True), (False, False), (False, False)]
        assert outcomes[1].problems


def test_json_that_is_not_a_state_view_is_told_apart():
    assert not v.is_state_view([])
    assert not v.is_state_view(
        {"schema": 2, "sources": {}, "routes": {}, "endpoints": {}, "config": {}, "edges": []}
    )
    assert not v.is_state_view(
        {"schema": 1, "sources": [], "routes": {}, "endpoints": {}, "config": {}, "edges": []}
    )
    assert v.is_state_view(
        {"schema": 1, "sources": {}, "routes": {}, "endpoints": {}, "config": {}, "edges": []}
    )
