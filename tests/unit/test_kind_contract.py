"""The kind contract is explicit: shared code (the loader, ``veylor check``, the model's
own lines) calls each hook of a kind's spec and never looks for one with ``getattr``. So
every kind must implement every member of the contract: ``Listen`` for an endpoint's
kind, ``SourceKindSpec`` for a source's. A kind added to the registry fails here until
it does (and until this configuration has one of it)."""

from __future__ import annotations

from typing import Any

from veylor.config import load_config
from veylor.config.contract import EndpointAccess, Listen, SourceKindSpec
from veylor.config.kinds import ENDPOINT_KINDS, SOURCE_KINDS

EVERY_KIND = """
sources:
  feed: {url: "wss://example.com/feed"}
  edge:
    nats: {servers: nats://127.0.0.1:4222, subject: "veylor.>", stream: T, position_file: /tmp/veylor-t.pos}
endpoints:
  ws: {websocket: {port: 8765}}
  ipc: {unix: {path: /tmp/veylor-contract.sock}}
  cluster:
    nats: {servers: [nats://127.0.0.1:4222], subject: veylor.ticker}
routes:
  a: {from: feed, to: [ws, ipc, cluster]}
  b: {from: edge, to: ws}
"""


def members(protocol: Any) -> set[str]:
    return {n for n in (*vars(protocol), *protocol.__annotations__) if not n.startswith("_")}


def test_every_kind_implements_the_whole_contract(tree):
    tree({"config.yaml": EVERY_KIND})
    config = load_config("config.yaml", env={})
    assert {e.kind for e in config.endpoints.values()} == set(ENDPOINT_KINDS)
    assert {s.kind for s in config.sources.values()} == set(SOURCE_KINDS)
    for name, ep in config.endpoints.items():
        missing = sorted(m for m in members(Listen) if not hasattr(ep.listen, m))
        assert missing == [], f"endpoint kind {ep.kind} ({name}) lacks {missing}"
    for name, src in config.sources.items():
        missing = sorted(m for m in members(SourceKindSpec) if not hasattr(src, m))
        assert missing == [], f"source kind {src.kind} ({name}) lacks {missing}"


def test_the_hooks_say_what_each_kind_is(tree):
    tree({"config.yaml": EVERY_KIND})
    config = load_config("config.yaml", env={})
    eps, srcs = config.endpoints, config.sources
    assert [eps[n].listen.exposure() for n in ("ws", "ipc", "cluster")] == ["loopback", "local", "nats"]
    assert eps["ws"].listen.access_summary() is None and "NATS" in eps["cluster"].access_summary()
    assert eps["ws"].listen.describe_endpoint(eps["ws"]) is None
    assert "waiting for NATS" in eps["cluster"].describe()
    assert srcs["feed"].upstream_problem() is None and srcs["feed"].state_file() is None
    assert "wildcard subject" in (srcs["edge"].upstream_problem() or "")
    assert srcs["edge"].state_file() == (("nats", "position_file"), "/tmp/veylor-t.pos")


def test_every_access_implements_the_access_contract(tree):
    tree({"config.yaml": EVERY_KIND})
    config = load_config("config.yaml", env={})
    eps = config.endpoints
    for name, ep in eps.items():
        if ep.access is None:
            continue
        missing = sorted(m for m in members(EndpointAccess) if not hasattr(ep.access, m))
        assert missing == [], f"the access of endpoint kind {ep.kind} ({name}) lacks {missing}"
    assert eps["cluster"].access is None  # (a NATS endpoint takes no clients)
    assert [eps[n].access.authenticated for n in ("ws", "ipc")] == [False, False]
    assert not any(ep.open_to_network() for ep in eps.values())  # (loopback, local, NATS)
