"""The control plane owns the admin endpoint (veylor.control.Controller): the runtime
executes the component and listener steps in two parts, and the admin endpoint's bind
sits between them, so that an apply stays all or nothing across both. Real sockets on
127.0.0.1, in this event loop."""

from __future__ import annotations

import asyncio
import socket
import textwrap
from pathlib import Path

import pytest
from helpers import free_port

from veylor.config import load_config
from veylor.control import Controller
from veylor.graph import CONTROL, Op, build_graph, diff
from veylor.runtime import Runtime, StartupError
from veylor.runtime.supervisor import _STEP


def graph_of(tmp_path: Path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return build_graph(load_config(path, env={}))


def config(admin: int, *ports: int) -> str:
    endpoints = ", ".join(f"e{p}: {{websocket: {{host: 127.0.0.1, port: {p}, path: /}}}}" for p in ports)
    routes = ", ".join(f"r{p}: {{from: up, to: e{p}}}" for p in ports)
    return f"""
admin: {{listen: "127.0.0.1:{admin}"}}
sources: {{up: {{url: "ws://127.0.0.1:9/"}}}}
endpoints: {{{endpoints}}}
routes: {{{routes}}}
"""


async def answers(port: int) -> bool:
    """Whether the admin endpoint at ``port`` answers /healthz."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except OSError:
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), 5)
        return line.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


def bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_the_runtime_has_no_method_for_the_control_planes_steps():
    """The admin endpoint's steps are the control plane's: the runtime runs every other
    kind of step, and none of those."""
    assert {Op.BIND_ADMIN, Op.UPDATE_ADMIN, Op.UNBIND_ADMIN} == CONTROL
    assert set(_STEP) == set(Op) - CONTROL


async def test_a_runtime_knows_nothing_of_the_admin_endpoint(tmp_path):
    runtime = Runtime()
    assert not hasattr(runtime, "admin") and not hasattr(runtime, "control")


async def test_an_admin_endpoint_that_cannot_bind_takes_back_the_listeners_bound_with_it(tmp_path):
    """A reload adds an endpoint and moves the admin endpoint to an address in use: the
    new listener the runtime bound is closed again, the old admin endpoint still
    answers, and the running graph is the old one."""
    admin, first, added = free_port(), free_port(), free_port()
    controller = Controller(Runtime())
    await controller.start(graph_of(tmp_path, config(admin, first)))
    runtime = controller.runtime
    try:
        running = runtime.graph
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            new = graph_of(tmp_path, config(taken, first, added), "next.yaml")
            assert [s.op for s in diff(running, new).steps if s.op in CONTROL] == [
                Op.BIND_ADMIN,
                Op.UNBIND_ADMIN,
            ]
            with pytest.raises(StartupError):
                await controller.apply(new)
        assert runtime.graph is running
        assert bindable(added), "the listener bound for the added endpoint was left open"
        assert "e" + str(added) not in runtime.endpoints
        assert await answers(admin)
    finally:
        await controller.stop()
    assert not await answers(admin)


async def test_a_listener_that_cannot_bind_leaves_the_admin_endpoint_where_it_was(tmp_path):
    """The other way round: the admin endpoint moves to a free address and an added
    endpoint's address is taken. The runtime's bind fails before the admin endpoint is
    touched: the new address is never bound, the old one still answers."""
    admin, moved, first = free_port(), free_port(), free_port()
    controller = Controller(Runtime())
    await controller.start(graph_of(tmp_path, config(admin, first)))
    try:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            with pytest.raises(StartupError):
                await controller.apply(graph_of(tmp_path, config(moved, first, taken), "next.yaml"))
        assert not await answers(moved)
        assert await answers(admin)
    finally:
        await controller.stop()


async def test_the_admin_endpoint_moves_in_one_apply(tmp_path):
    """The new address answers when the apply returns; the old one is closed."""
    admin, moved, first = free_port(), free_port(), free_port()
    controller = Controller(Runtime())
    await controller.start(graph_of(tmp_path, config(admin, first)))
    try:
        await controller.apply(graph_of(tmp_path, config(moved, first), "next.yaml"))
        assert await answers(moved)
        for _ in range(100):
            if not await answers(admin):
                break
            await asyncio.sleep(0.02)
        assert not await answers(admin)
    finally:
        await controller.stop()
    assert not await answers(moved)
