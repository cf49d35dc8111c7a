"""diff(old, new) decides every step the runtime takes: one test per kind of step, the
whole list compared, in order."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import yaml

from veylor.config import load_config
from veylor.graph import STEPS, Graph, Step, build_graph, diff

WS = ("websocket", "127.0.0.1", 8765)
UNIX = ("unix", "/tmp/veylor-steps.sock")
BASE = {
    "sources": {
        "a": {"url": "ws://127.0.0.1:9/a"},
        "b": {"url": "ws://127.0.0.1:9/b"},
    },
    "endpoints": {
        "pub": {"websocket": {"port": 8765, "path": "/pub"}},
        "dash": {"websocket": {"port": 8765, "path": "/dash"}},
        "ipc": {"unix": {"path": "/tmp/veylor-steps.sock"}},
    },
    "routes": {
        "r1": {"from": "a", "to": ["pub", "ipc"]},
        "r2": {"from": "b", "to": "dash"},
    },
}


def graph(tmp_path: Path, data: dict, name: str) -> Graph:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return build_graph(load_config(path, env={}))


def steps_for(tmp_path: Path, change) -> tuple[Step, ...]:
    data = copy.deepcopy(BASE)
    change(data)
    return diff(graph(tmp_path, BASE, "a.yaml"), graph(tmp_path, data, "b.yaml")).steps


def test_start_from_nothing_creates_binds_attaches_starts_and_swaps(tmp_path):
    plan = diff(Graph.empty(), graph(tmp_path, BASE, "a.yaml"))
    assert plan.steps == (
        Step("create_endpoint", "pub", ("added",)),
        Step("create_endpoint", "dash", ("added",)),
        Step("create_endpoint", "ipc", ("added",)),
        Step("bind", "127.0.0.1:8765", ("pub", "dash"), WS),
        Step("bind", "unix:/tmp/veylor-steps.sock", ("ipc",), UNIX),
        Step("attach", "127.0.0.1:8765", ("pub", "dash"), WS),
        Step("attach", "unix:/tmp/veylor-steps.sock", ("ipc",), UNIX),
        Step("start_endpoint", "pub"),
        Step("start_endpoint", "dash"),
        Step("start_endpoint", "ipc"),
        Step("start_source", "a"),
        Step("start_source", "b"),
        Step("swap_routes"),
    )


def test_no_change_no_steps(tmp_path):
    assert steps_for(tmp_path, lambda d: None) == ()


def test_route_change_is_only_a_routing_table_swap(tmp_path):
    def change(d):
        d["routes"]["r1"]["filter"] = {"type": "text"}

    assert steps_for(tmp_path, change) == (Step("swap_routes"),)


def test_source_settings_restart_that_source_only(tmp_path):
    def change(d):
        d["sources"]["b"]["headers"] = {"X-Key": "rotated"}

    assert steps_for(tmp_path, change) == (Step("restart_source", "b", ("headers",)),)


def test_added_and_removed_sources_start_and_stop_and_swap_routes(tmp_path):
    def change(d):
        del d["sources"]["b"]
        d["sources"]["c"] = {"url": "ws://127.0.0.1:9/c"}
        d["routes"]["r2"]["from"] = "c"

    assert steps_for(tmp_path, change) == (
        Step("stop_source", "b"),
        Step("start_source", "c"),
        Step("swap_routes"),
    )


def test_policy_change_updates_the_endpoint_in_place(tmp_path):
    def change(d):
        d["endpoints"]["pub"]["slow_client"] = "drop"
        d["endpoints"]["pub"]["compression"] = True

    assert steps_for(tmp_path, change) == (Step("update_endpoint", "pub", ("slow_client", "compression")),)


def test_path_move_on_a_kept_port_rebinds_the_endpoint_not_the_listener(tmp_path):
    def change(d):
        d["endpoints"]["pub"]["websocket"]["path"] = "/public"

    assert steps_for(tmp_path, change) == (
        Step("create_endpoint", "pub", ("listen",)),
        Step("attach", "127.0.0.1:8765", ("pub", "dash"), WS),
        Step("start_endpoint", "pub"),
        Step("swap_routes"),
        Step("retire_endpoint", "pub", ("moved",), close=(1001, "endpoint moved")),
    )


def test_move_to_a_new_port_binds_it_and_unbinds_nothing_still_used(tmp_path):
    def change(d):
        d["endpoints"]["dash"]["websocket"]["port"] = 8766

    new = ("websocket", "127.0.0.1", 8766)
    assert steps_for(tmp_path, change) == (
        Step("create_endpoint", "dash", ("listen",)),
        Step("bind", "127.0.0.1:8766", ("dash",), new),
        Step("attach", "127.0.0.1:8765", ("pub",), WS),
        Step("attach", "127.0.0.1:8766", ("dash",), new),
        Step("start_endpoint", "dash"),
        Step("swap_routes"),
        Step("retire_endpoint", "dash", ("moved",), close=(1001, "endpoint moved")),
    )


def test_unix_framing_change_keeps_the_socket_and_attaches_the_new_endpoint(tmp_path):
    def change(d):
        d["endpoints"]["ipc"]["unix"]["framing"] = "lines"
        d["endpoints"]["ipc"]["unix"]["mode"] = "0600"

    assert steps_for(tmp_path, change) == (
        Step("create_endpoint", "ipc", ("listen",)),
        Step("attach", "unix:/tmp/veylor-steps.sock", ("ipc",), UNIX),
        Step("start_endpoint", "ipc"),
        Step("swap_routes"),
        Step("retire_endpoint", "ipc", ("moved",), close=(1001, "endpoint moved")),
    )


def test_removed_endpoint_is_retired_and_its_listener_unbound(tmp_path):
    def change(d):
        del d["endpoints"]["ipc"]
        d["routes"]["r1"]["to"] = ["pub"]

    assert steps_for(tmp_path, change) == (
        Step("swap_routes"),
        Step("retire_endpoint", "ipc", ("removed",), close=(1001, "endpoint removed")),
        Step("unbind", "unix:/tmp/veylor-steps.sock", (), UNIX),
    )


def test_endpoint_removed_from_a_shared_port_reattaches_the_rest(tmp_path):
    def change(d):
        del d["endpoints"]["dash"]
        d["routes"]["r2"]["to"] = "pub"

    assert steps_for(tmp_path, change) == (
        Step("attach", "127.0.0.1:8765", ("pub",), WS),
        Step("swap_routes"),
        Step("retire_endpoint", "dash", ("removed",), close=(1001, "endpoint removed")),
    )


def test_limits_change_is_a_step_of_its_own(tmp_path):
    def change(d):
        d["limits"] = {"buffered": "512MiB"}

    assert steps_for(tmp_path, change) == (Step("set_limits", "", ("buffered 256MiB -> 512MiB",)),)


def test_steps_come_in_the_documented_order_and_as_json(tmp_path):
    def change(d):
        d["endpoints"]["dash"]["websocket"]["port"] = 8766
        del d["sources"]["b"]
        d["sources"]["c"] = {"url": "ws://127.0.0.1:9/c"}
        d["routes"]["r2"]["from"] = "c"
        d["endpoints"]["pub"]["max_clients"] = 5
        d["limits"] = {"buffered": "1GiB"}
        d["admin"] = {"listen": "127.0.0.1:9901"}

    data = copy.deepcopy(BASE)
    change(data)
    plan = diff(graph(tmp_path, BASE, "a.yaml"), graph(tmp_path, data, "b.yaml"))
    order = [STEPS.index(s.op) for s in plan.steps]
    assert order == sorted(order)
    assert {s.op for s in plan.steps} == set(STEPS) - {
        "unbind",
        "restart_source",
        "update_admin",
        "unbind_admin",
    }
    as_json = json.loads(json.dumps(plan.as_dict()))
    assert as_json["steps"][0] == {"op": "create_endpoint", "name": "dash", "detail": ["listen"]}
    assert "~ endpoint pub: update (max_clients)" in as_json["plan"]


def test_same_unix_socket_written_another_way_keeps_its_listener(tmp_path):
    """``/tmp/./x.sock`` is ``/tmp/x.sock``: one socket, so no second bind (which would
    find Veylor's own live socket there and fail)."""

    def change(d):
        d["endpoints"]["ipc"]["unix"]["path"] = "/tmp/./veylor-steps.sock"

    steps = steps_for(tmp_path, change)
    assert [s.op for s in steps] == [
        "create_endpoint",
        "attach",
        "start_endpoint",
        "swap_routes",
        "retire_endpoint",
    ]
    assert steps[1].key == UNIX


def test_admin_endpoint_binds_moves_and_changes_mode_by_steps(tmp_path):
    def add(d):
        d["admin"] = {"listen": "127.0.0.1:9900"}

    assert steps_for(tmp_path, add) == (Step("bind_admin", "http://127.0.0.1:9900"),)
    with_admin = copy.deepcopy(BASE)
    add(with_admin)
    unix = copy.deepcopy(BASE)
    unix["admin"] = {"unix": "/tmp/veylor-admin.sock"}
    a = graph(tmp_path, with_admin, "a.yaml")
    b = graph(tmp_path, unix, "b.yaml")
    assert diff(a, b).steps == (
        Step("bind_admin", "unix:/tmp/veylor-admin.sock"),
        Step("unbind_admin", "http://127.0.0.1:9900"),
    )
    unix["admin"]["mode"] = "0600"
    c = graph(tmp_path, unix, "c.yaml")
    assert diff(b, c).steps == (Step("update_admin", "unix:/tmp/veylor-admin.sock", ("mode 0600",)),)
    assert diff(c, graph(tmp_path, BASE, "d.yaml")).steps == (
        Step("unbind_admin", "unix:/tmp/veylor-admin.sock"),
    )
    assert "- admin unix:/tmp/veylor-admin.sock" in diff(c, graph(tmp_path, BASE, "d.yaml")).describe()


def test_what_readyz_requires_changes_in_place(tmp_path):
    """admin.ready_requires changes the next /readyz, on the same endpoint: no rebind."""
    a, b = copy.deepcopy(BASE), copy.deepcopy(BASE)
    a["admin"] = {"listen": "127.0.0.1:9900"}
    b["admin"] = {"listen": "127.0.0.1:9900", "ready_requires": "all"}
    old, new = graph(tmp_path, a, "a.yaml"), graph(tmp_path, b, "b.yaml")
    assert diff(old, new).steps == (Step("update_admin", "http://127.0.0.1:9900", ("ready_requires all",)),)
    assert new.admin is not None and new.admin.ready_requires == "all"
    source = next(iter(BASE["sources"]))
    b["admin"]["ready_requires"] = [source]
    named = graph(tmp_path, b, "c.yaml")
    assert diff(new, named).steps[0].detail == (f"ready_requires {source}",)


def test_a_plan_out_of_order_is_refused_even_under_python_O(tmp_path):
    """The order of steps is an invariant diff checks with an exception, not an assert
    (``python -O`` drops asserts): a diff that put a step before one it must follow
    raises PlanError."""
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import veylor.graph as g
from test_plan_steps import BASE, graph
from pathlib import Path
assert False, "asserts run"  # (skipped under -O: the check below must not rely on them)
"""
    script += """
g._ORDER = {op: -i for op, i in g._ORDER.items()}  # every order backwards: a broken diff
try:
    g.diff(g.Graph.empty(), graph(Path(sys.argv[1]), BASE, "a.yaml"))
except g.PlanError as exc:
    print("refused:", str(exc)[:40])
else:
    print("applied")
"""
    result = subprocess.run(
        [sys.executable, "-O", "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.startswith("refused: plan steps out of order: create_endpoint"), result
