"""The routing graph and diff(old, new): what changes, and only what changes."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from veylor.config import load_config
from veylor.graph import Graph, build_graph, diff
from veylor.message import Message

BASE = {
    "sources": {
        "binance": {"url": "wss://binance.example/ws", "headers": {"K": "v"}, "on_connect": ["sub"]},
        "kraken": {"url": "wss://kraken.example/ws"},
    },
    "endpoints": {
        "public": {"websocket": {"port": 8765, "path": "/binance"}},
        "dash": {"websocket": {"port": 8765, "path": "/dash"}},
        "ipc": {"unix": {"path": "/tmp/veylor-graph.sock"}},
    },
    "routes": {
        "btc": {
            "from": "binance",
            "to": ["public", "ipc"],
            "filter": {"json": {"path": "s", "equals": "BTC"}},
        },
        "kr": {"from": "kraken", "to": "dash", "upstream": True},
    },
}


def graph_of(tmp_path: Path, data: dict, name: str = "config.yaml") -> Graph:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return build_graph(load_config(path, env={}))


def edited(change) -> dict:
    data = copy.deepcopy(BASE)
    change(data)
    return data


def test_graph_tables(tmp_path):
    g = graph_of(tmp_path, BASE)
    assert [r.name for r in g.routes_by_source["binance"]] == ["btc"]
    assert g.upstream_targets == {"public": (), "dash": (("kraken", None),), "ipc": ()}
    assert g.listeners[("websocket", "127.0.0.1", 8765)] == ("public", "dash")
    assert g.listeners[("unix", "/tmp/veylor-graph.sock")] == ("ipc",)
    btc = g.routes["btc"]
    assert btc.filter is not None and btc.filter.needs_json
    assert btc.filter(Message.of('{"s": "BTC"}')) and not btc.filter(Message.of('{"s": "ETH"}'))
    assert g.routes["kr"].filter is None


def test_identical_configs_give_an_empty_plan(tmp_path):
    plan = diff(graph_of(tmp_path, BASE, "a.yaml"), graph_of(tmp_path, BASE, "b.yaml"))
    assert plan.empty
    assert plan.sources.unchanged == ("binance", "kraken")
    assert plan.describe() == ["no changes"]


def test_route_change_does_not_change_its_source_or_endpoints(tmp_path):
    def change(d):
        d["routes"]["btc"]["filter"] = {"json": {"path": "s", "equals": "ETH"}}
        d["routes"]["btc"]["to"] = ["public"]

    plan = diff(graph_of(tmp_path, BASE, "a.yaml"), graph_of(tmp_path, edited(change), "b.yaml"))
    assert plan.routes.changed == ("btc",)
    assert plan.routes.why["btc"] == ("endpoints", "filter")
    assert plan.sources.changed == () and plan.endpoints.changed == ()
    assert plan.listeners_added == () and plan.listeners_removed == ()
    assert "~ route btc: rewire (endpoints, filter)" in plan.describe()


def test_source_setting_change_restarts_only_that_source(tmp_path):
    def change(d):
        d["sources"]["binance"]["headers"] = {"K": "rotated"}

    plan = diff(graph_of(tmp_path, BASE, "a.yaml"), graph_of(tmp_path, edited(change), "b.yaml"))
    assert plan.sources.changed == ("binance",) and plan.sources.why["binance"] == ("headers",)
    assert plan.sources.unchanged == ("kraken",)
    assert plan.routes.empty and plan.endpoints.empty
    assert any(line.startswith("~ source binance: restart (headers)") for line in plan.describe())
    assert not any("rotated" in line for line in plan.describe())  # no secrets in the plan


def test_each_source_setting_counts_as_a_change(tmp_path):
    settings = {
        "url": "wss://other.example/ws",
        "subprotocols": ["x"],
        "on_connect": ["other"],
        "reconnect": {"max_attempts": 3},
        "ping_interval": 5,
        "ping_timeout": None,
        "open_timeout": 1,
        "max_message_size": "1MiB",
        "upstream_queue": 5,
        "on_disconnect": "close_clients",
    }
    old = graph_of(tmp_path, BASE, "a.yaml")
    for key, value in settings.items():
        new = graph_of(
            tmp_path, edited(lambda d, k=key, v=value: d["sources"]["kraken"].__setitem__(k, v)), "b.yaml"
        )
        plan = diff(old, new)
        assert plan.sources.changed == ("kraken",), key
        assert plan.sources.why["kraken"][0] == {"url": "url"}.get(key, key), key


def test_added_and_removed_components(tmp_path):
    def change(d):
        del d["sources"]["kraken"]
        del d["routes"]["kr"]
        del d["endpoints"]["dash"]
        d["sources"]["okx"] = {"url": "wss://okx.example/ws"}
        d["endpoints"]["okx-ws"] = {"websocket": {"port": 8770}}
        d["routes"]["okx"] = {"from": "okx", "to": "okx-ws"}

    plan = diff(graph_of(tmp_path, BASE, "a.yaml"), graph_of(tmp_path, edited(change), "b.yaml"))
    assert (plan.sources.added, plan.sources.removed) == (("okx",), ("kraken",))
    assert (plan.endpoints.added, plan.endpoints.removed) == (("okx-ws",), ("dash",))
    assert (plan.routes.added, plan.routes.removed) == (("okx",), ("kr",))
    # The 8765 listener still serves "public": only the new port is bound.
    assert plan.listeners_added == (("websocket", "127.0.0.1", 8770),)
    assert plan.listeners_removed == ()
    lines = plan.describe()
    assert "+ source okx" in lines and "- source kraken" in lines and "+ listener 127.0.0.1:8770" in lines


def test_endpoint_settings_change_keeps_listener_and_clients(tmp_path):
    def change(d):
        d["endpoints"]["public"]["client_buffer"] = "64KiB"
        d["endpoints"]["public"]["slow_client"] = "drop"

    plan = diff(graph_of(tmp_path, BASE, "a.yaml"), graph_of(tmp_path, edited(change), "b.yaml"))
    assert plan.endpoints.changed == ("public",)
    assert plan.endpoints_updated == ("public",) and plan.endpoints_rebound == ()
    assert plan.endpoints.why["public"] == ("client_buffer", "slow_client")
    assert plan.listeners_added == () and plan.listeners_removed == ()


def test_endpoint_moved_to_another_path_keeps_the_port_listener(tmp_path):
    def change(d):
        d["endpoints"]["public"]["websocket"]["path"] = "/v2/binance"

    plan = diff(graph_of(tmp_path, BASE, "a.yaml"), graph_of(tmp_path, edited(change), "b.yaml"))
    assert plan.endpoints_rebound == ("public",)
    assert plan.listeners_added == () and plan.listeners_removed == ()


def test_endpoint_port_change_moves_only_its_listener(tmp_path):
    def change(d):
        d["endpoints"]["dash"]["websocket"]["port"] = 8799

    plan = diff(graph_of(tmp_path, BASE, "a.yaml"), graph_of(tmp_path, edited(change), "b.yaml"))
    assert plan.endpoints_rebound == ("dash",)
    assert plan.listeners_added == (("websocket", "127.0.0.1", 8799),)
    assert plan.listeners_removed == ()  # 8765 still serves "public"


def test_unix_framing_change_rebinds(tmp_path):
    def change(d):
        d["endpoints"]["ipc"]["unix"]["framing"] = "lines"

    plan = diff(graph_of(tmp_path, BASE, "a.yaml"), graph_of(tmp_path, edited(change), "b.yaml"))
    assert plan.endpoints_rebound == ("ipc",)


def test_moving_a_definition_to_another_file_is_not_a_change(tmp_path):
    (tmp_path / "b" / "routes.d").mkdir(parents=True)
    data = copy.deepcopy(BASE)
    moved = {"routes": {"kr": data["routes"].pop("kr")}}
    (tmp_path / "b" / "routes.d" / "kr.yaml").write_text(yaml.safe_dump(moved))
    (tmp_path / "b" / "config.yaml").write_text(yaml.safe_dump(data))
    new = build_graph(load_config(tmp_path / "b" / "config.yaml", env={}))
    plan = diff(graph_of(tmp_path, BASE, "a.yaml"), new)
    assert plan.empty


def test_diff_from_empty_graph_adds_everything(tmp_path):
    plan = diff(Graph.empty(), graph_of(tmp_path, BASE))
    assert plan.sources.added == ("binance", "kraken")
    assert len(plan.listeners_added) == 2
    back = diff(graph_of(tmp_path, BASE), Graph.empty())
    assert back.routes.removed == ("btc", "kr") and len(back.listeners_removed) == 2


def test_a_rebuilt_graph_keeps_the_objects_of_what_did_not_change(tmp_path):
    """With the loader's cache, an unchanged route keeps its spec object; build_graph then
    keeps its Route and its source's tuple, so that the runtime (and the garbage
    collector) see few new objects after a reload."""
    from veylor.config.files import FileCache

    path = tmp_path / "config.yaml"
    cache = FileCache()
    path.write_text(yaml.safe_dump(BASE, sort_keys=False))
    (tmp_path / "routes.d").mkdir()
    (tmp_path / "routes.d" / "10.yaml").write_text("routes: {extra: {from: kraken, to: dash}}\n")
    old = build_graph(load_config(path, env={}, cache=cache))
    (tmp_path / "routes.d" / "10.yaml").write_text("routes: {extra: {from: kraken, to: public}}\n")
    new = build_graph(load_config(path, env={}, cache=cache), previous=old)
    assert new.routes["btc"] is old.routes["btc"]  # in an unchanged file: same object
    assert new.routes_by_source["binance"] is old.routes_by_source["binance"]
    assert new.routes["extra"] is not old.routes["extra"]
    assert new.routes_by_source["kraken"] is not old.routes_by_source["kraken"]
    assert [r.name for r in new.routes_by_source["kraken"]] == ["kr", "extra"]
    assert new.routes["extra"].endpoints == ("public",)


def test_a_limits_change_is_in_the_plan(tmp_path):
    old = graph_of(tmp_path, BASE)
    data = edited(lambda d: d.update(limits={"buffered": "512MiB"}))
    new = graph_of(tmp_path, data, "new.yaml")
    assert new.limits.buffered == 512 * 2**20
    plan = diff(old, new)
    assert not plan.empty
    assert plan.describe() == ["~ limits: buffered 256MiB -> 512MiB"]
