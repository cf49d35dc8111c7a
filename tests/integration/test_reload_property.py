"""Property: applying diff(a, b) to a running graph of a yields exactly the components of b,
and keeps the objects (connections, listeners, clients) of what did not change.

Real runtime, real listeners on 127.0.0.1 and real Unix sockets; sources point at closed
ports (they sit in backoff), which is enough to compare what runs with what is configured.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest
import yaml
from helpers import eventually, free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veylor.config import load_config
from veylor.graph import Graph, Step, build_graph, diff
from veylor.runtime import Runtime

pytestmark = pytest.mark.timeout(300)

PORTS = (free_port(), free_port())
DEAD = free_port()  # nothing listens here
SOCKDIR = Path("/nonexistent")  # set by the sockdir fixture: short Unix paths, removed afterwards


@pytest.fixture(scope="module", autouse=True)
def sockdir():
    global SOCKDIR
    SOCKDIR = Path(tempfile.mkdtemp(prefix="veylor-prop-"))
    yield SOCKDIR
    shutil.rmtree(SOCKDIR, ignore_errors=True)


SOURCES = ("s0", "s1", "s2")
ENDPOINTS = ("e0", "e1", "e2", "e3")
ROUTES = ("r0", "r1", "r2", "r3")
FILTERS = (None, {"type": "text"}, {"json": {"path": "s", "equals": "BTC"}})


@st.composite
def configs(draw) -> dict:
    sources = {
        name: {"url": f"ws://127.0.0.1:{DEAD}/{draw(st.sampled_from(['x', 'y']))}"}
        for name in SOURCES
        if draw(st.booleans())
    }
    endpoints = {}
    for name in ENDPOINTS:
        if not draw(st.booleans()):
            continue
        if draw(st.booleans()):
            listen = {
                "websocket": {
                    "port": draw(st.sampled_from(PORTS)),
                    "path": draw(st.sampled_from([f"/{name}", f"/{name}-moved"])),
                }
            }
        else:
            listen = {
                "unix": {
                    "path": str(SOCKDIR / draw(st.sampled_from([f"{name}.sock", f"{name}-2.sock"]))),
                    "framing": draw(st.sampled_from(["length-prefixed", "lines"])),
                }
            }
        endpoints[name] = {**listen, "client_buffer": draw(st.sampled_from(["64KiB", "4MiB"]))}
    routes = {}
    if sources and endpoints:
        for name in ROUTES:
            if not draw(st.booleans()):
                continue
            to = draw(st.lists(st.sampled_from(sorted(endpoints)), min_size=1, max_size=3, unique=True))
            route = {
                "from": draw(st.sampled_from(sorted(sources))),
                "to": to,
                "upstream": draw(st.booleans()),
            }
            f = draw(st.sampled_from(FILTERS))
            if f is not None:
                route["filter"] = f
            routes[name] = route
    return {"sources": sources, "endpoints": endpoints, "routes": routes}


def graph_of(data: dict, name: str) -> Graph:
    path = SOCKDIR / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return build_graph(load_config(path, env={}))


def assert_runs(rt: Runtime, g: Graph) -> None:
    assert {n: s.spec for n, s in rt.sources.items()} == dict(g.sources)
    assert all(s.task is not None and not s.task.done() for s in rt.sources.values())
    assert {n: e.spec for n, e in rt.endpoints.items()} == dict(g.endpoints)
    assert set(rt.listeners) == set(g.listeners)
    for key, listener in rt.listeners.items():
        assert listener.server is not None
        if key[0] == "websocket":
            expected = {rt.endpoints[n].path: n for n in g.listeners[key]}
            assert {p: ep.name for p, ep in listener.paths.items()} == expected
            assert all(rt.endpoints[ep.name] is ep for ep in listener.paths.values())
        else:
            (name,) = g.listeners[key]
            assert listener._acceptor.endpoint is rt.endpoints[name]
            assert Path(listener.path).is_socket(), name
            assert stat.S_IMODE(os.stat(listener.path).st_mode) == g.endpoints[name].listen.mode
    for name, ep in rt.endpoints.items():
        assert tuple(s.name for s, _ in ep.upstream) == tuple(n for n, _ in g.upstream_targets[name])
    table = rt.router.table
    for source, routes in g.routes_by_source.items():
        fan = table.get(source)
        plain = {e for r in routes if r.filter is None for e in r.endpoints}
        filtered = sorted(
            (r.filter.spec and str(r.filter), sorted(r.endpoints)) for r in routes if r.filter is not None
        )
        if not routes:
            assert fan is None
            continue
        always = [e for _, eps in fan.always for e in eps]
        assert {e.name for e in always} == plain
        assert all(rt.endpoints[e.name] is e for e in always)
        assert all(e.wire is wire for wire, eps in fan.always for e in eps)
        assert sorted((str(f), sorted(e.name for e in eps)) for f, eps, _ in fan.filtered) == filtered


def specs(g: Graph) -> dict:
    return {n: r.spec for n, r in g.routes.items()}


def assert_steps(plan, a: Graph, b: Graph) -> None:
    """The plan's steps do exactly what the difference between a and b needs."""

    def named(op: str) -> set[str]:
        return {s.name for s in plan.steps if s.op == op}

    def keys(op: str) -> set:
        return {s.key for s in plan.steps if s.op == op}

    moved = {
        n for n in a.endpoints.keys() & b.endpoints.keys() if a.endpoints[n].listen != b.endpoints[n].listen
    }
    settled = {n for n in a.endpoints.keys() & b.endpoints.keys() if a.endpoints[n] != b.endpoints[n]} - moved
    assert named("stop_source") == a.sources.keys() - b.sources.keys()
    assert named("start_source") == b.sources.keys() - a.sources.keys()
    assert named("restart_source") == {
        n for n in a.sources.keys() & b.sources.keys() if a.sources[n] != b.sources[n]
    }
    assert (
        named("create_endpoint")
        == named("start_endpoint")
        == (b.endpoints.keys() - a.endpoints.keys()) | moved
    )
    assert named("retire_endpoint") == (a.endpoints.keys() - b.endpoints.keys()) | moved
    assert named("update_endpoint") == settled
    assert keys("bind") == b.listeners.keys() - a.listeners.keys()
    assert keys("unbind") == a.listeners.keys() - b.listeners.keys()
    for step in plan.steps:
        if step.op in ("bind", "attach"):
            assert step.detail == b.listeners[step.key]
    assert (Step("swap_routes") in plan.steps) == (
        specs(a) != specs(b)
        or bool(named("create_endpoint") or named("retire_endpoint"))
        or a.sources.keys() != b.sources.keys()
    )
    assert plan.empty == (
        a.digest == b.digest
        or (
            a.sources == b.sources
            and a.endpoints == b.endpoints
            and specs(a) == specs(b)
            and a.limits == b.limits
        )
    )


async def scenario(a: dict, b: dict) -> None:
    ga, gb = graph_of(a, "a.yaml"), graph_of(b, "b.yaml")
    rt = Runtime()
    await rt.start(ga)
    try:
        assert_runs(rt, ga)
        before_sources = dict(rt.sources)
        before_endpoints = dict(rt.endpoints)
        plan = diff(ga, gb)
        assert_steps(plan, ga, gb)
        await rt.apply(gb)
        assert_runs(rt, gb)
        for name in plan.sources.unchanged + plan.sources.changed:
            assert rt.sources[name] is before_sources[name]  # same object: restarted in place
        for name in plan.endpoints.unchanged + plan.endpoints_updated:
            assert rt.endpoints[name] is before_endpoints[name]  # same listener, same clients
        # Socket files of Unix endpoints that b no longer has are removed.
        wanted = {e.listen.path for e in gb.endpoints.values() if e.kind == "unix"}
        await eventually(
            lambda: {str(p) for p in SOCKDIR.glob("*.sock")} <= wanted, what="stale sockets removed"
        )
        # And b's WebSocket listeners answer.
        for kind, *address in rt.listeners:
            if kind == "websocket":
                with socket.create_connection(tuple(address), timeout=2):
                    pass
    finally:
        await rt.stop()
    assert not list(SOCKDIR.glob("*.sock"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=configs(), b=configs())
def test_applying_diff_a_b_runs_exactly_b(a, b):
    asyncio.run(scenario(a, b))
