"""``/metrics``: the state view in the Prometheus text exposition format (0.0.4).

Formatted by hand from one :func:`veylor.observe.state.snapshot`, not with
``prometheus_client``'s registry: its ``generate_latest`` took about 70 ms for 10,000
series here, time the event loop would take from every client, where this takes a
few milliseconds (``benchmarks/metrics.py``). The output is checked with
``prometheus_client``'s own parser in the tests.

Labels are bounded by the configuration: ``source``, ``route``, ``endpoint``,
``reason``, ``action``, ``result``, ``version``; never a client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .view import StateView

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[dict[str, str], float | int]
ADMIN_REFUSED = ("host", "origin", "form", "no_token", "token", "read_only")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(out: list[str], name: str, kind: str, text: str, samples: Iterable[Sample]) -> None:
    out.append(f"# HELP {name} {text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        if labels:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{inner}}} {value}")
        else:
            out.append(f"{name} {value}")


class _Table:
    """Families over one table of the view (sources, endpoints, routes), with each
    entry's label written once: most of the text is these series."""

    def __init__(self, out: list[str], label: str, table: Mapping[str, Mapping[str, Any]]) -> None:
        self.out = out
        self.table = table
        self.labels = {name: f'{label}="{_escape(name)}"' for name in table}

    def family(
        self, name: str, kind: str, text: str, value: Callable[[Mapping[str, Any]], Any] | str
    ) -> None:
        out, labels = self.out, self.labels
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        if isinstance(value, str):
            out.extend([f"{name}{{{labels[n]}}} {e[value]}" for n, e in self.table.items()])
        else:
            out.extend([f"{name}{{{labels[n]}}} {value(e)}" for n, e in self.table.items()])

    def split(
        self, name: str, text: str, label: str, parts: dict[str, Callable[[Mapping[str, Any]], Any] | str]
    ) -> None:
        """A counter split by ``label`` (a reason, an action): one series per entry per part."""
        out, labels = self.out, self.labels
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} counter")
        for part, value in parts.items():
            tail = f',{label}="{part}"}} '
            if isinstance(value, str):
                out.extend([f"{name}{{{labels[n]}{tail}{e[value]}" for n, e in self.table.items()])
            else:
                out.extend([f"{name}{{{labels[n]}{tail}{value(e)}" for n, e in self.table.items()])


def render(view: StateView, ready: bool | None = None) -> str:
    """The exposition text of one snapshot (``ready``: what ``/readyz`` says, as
    ``veylor_ready``; None: not exported)."""
    out: list[str] = []
    if ready is not None:
        _family(
            out,
            "veylor_ready",
            "gauge",
            "1 while /readyz answers 200: the listeners bound (and what admin.ready_requires names connected)",
            [({}, int(ready))],
        )
    sources = _Table(out, "source", view["sources"])
    sources.family(
        "veylor_source_up",
        "gauge",
        "1 while the source is connected",
        lambda s: int(s["state"] == "connected"),
    )
    sources.family(
        "veylor_source_messages_total", "counter", "Messages received from the upstream", "messages_in"
    )
    sources.family(
        "veylor_source_bytes_total", "counter", "Payload bytes received from the upstream", "bytes_in"
    )
    sources.family("veylor_source_connects_total", "counter", "Connections made to the upstream", "connects")
    sources.family(
        "veylor_source_disconnects_total", "counter", "Connections to the upstream that ended", "disconnects"
    )
    sources.family("veylor_source_attempts_total", "counter", "Connection attempts", "attempts")
    sources.family(
        "veylor_source_consecutive_failures",
        "gauge",
        "Connection attempts that failed in a row (0 once connected)",
        lambda s: s.get("failures", 0),
    )
    sources.family(
        "veylor_source_upstream_messages_total", "counter", "Client messages sent to the upstream", "sent_up"
    )
    sources.split(
        "veylor_source_dropped_total",
        "Messages not relayed, by reason: invalid_utf8 (text from the upstream that is not UTF-8), "
        "upstream_queue (client messages while the upstream was down or not reading), oversize "
        "(NATS: larger than max_message_size)",
        "reason",
        {"invalid_utf8": "invalid_utf8", "upstream_queue": "queued_dropped", "oversize": "oversize"},
    )
    sources.family(
        "veylor_source_missed_total",
        "counter",
        "Messages lost before they reached this source: gaps in the publisher's sequence numbers (NATS)",
        "gaps",
    )
    sources.family(
        "veylor_source_out_of_order_total",
        "counter",
        "Messages whose sequence number was not above the last one seen (NATS)",
        "out_of_order",
    )
    sources.family(
        "veylor_source_publisher_changes_total",
        "counter",
        "A new publisher took over a subject (a core restarted), or its sequence started again: not "
        "counted as missed (NATS)",
        "publisher_changes",
    )
    sources.family(
        "veylor_source_sequence_outliers_total",
        "counter",
        "Messages whose sequence number fitted neither the publisher's sequence nor a loss its rate "
        "explains, and that the messages after them did not follow (forged, or another publisher's): "
        "delivered, not counted as missed (NATS)",
        "outliers",
    )
    sources.split(
        "veylor_source_stalls_total",
        "Connections Veylor closed and made again because they stopped reading, by reason: no_pong "
        "(no message and no PONG to Veylor's ping for nats.stall_timeout), read_loop_ended (the client "
        "library's read loop had ended under it) (NATS)",
        "reason",
        {"no_pong": "stalled_no_pong", "read_loop_ended": "stalled_read_loop"},
    )
    sources.family(
        "veylor_source_last_message_timestamp_seconds",
        "gauge",
        "When the last message came from the upstream (to the second; 0: none yet)",
        lambda s: s["last_message_at"] or 0,
    )
    _family(
        out,
        "veylor_source_ping_rtt_seconds",
        "gauge",
        "Round trip of the last keepalive ping to the upstream",
        [({"source": n}, rtt) for n, s in view["sources"].items() if (rtt := s.get("ping_rtt")) is not None],
    )

    out.append(
        "# HELP veylor_edge_messages_total Messages that passed a route's filter to one of its endpoints"
    )
    out.append("# TYPE veylor_edge_messages_total counter")
    out.extend(
        [
            f'veylor_edge_messages_total{{source="{_escape(e["source"])}",route="{_escape(e["route"])}",'
            f'endpoint="{_escape(e["endpoint"])}"}} {e["messages"]}'
            for e in view["edges"]
        ]
    )
    routes = _Table(out, "route", view["routes"])
    routes.family(
        "veylor_route_filtered_total", "counter", "Messages a route's filter did not pass", "filtered"
    )
    conflating = _Table(out, "route", {n: r for n, r in view["routes"].items() if "conflated" in r})
    conflating.family(
        "veylor_route_conflated_total",
        "counter",
        "Messages replaced by a later one of their key before the route sent them (conflate)",
        "conflated",
    )
    conflating.family(
        "veylor_route_unconflated_total",
        "counter",
        "Messages a conflating route sent at once: not JSON, or without its conflate.by key",
        "unkeyed",
    )
    resuming = _Table(out, "route", {n: r for n, r in view["routes"].items() if "history" in r})
    resuming.split(
        "veylor_route_resumes_total",
        "Clients that came back with ?since=, by result: ok (they got all they missed), lost (the "
        "history no longer reached their value: some may be lost)",
        "result",
        {"ok": "resumes_ok", "lost": "resumes_lost"},
    )
    resuming.family(
        "veylor_route_history_messages",
        "gauge",
        "Messages a route keeps for clients that come back",
        lambda r: r["history"]["messages"],
    )
    resuming.family(
        "veylor_route_history_bytes",
        "gauge",
        "Bytes of the messages a route keeps for clients that come back",
        lambda r: r["history"]["bytes"],
    )
    kept = _Table(out, "route", {n: r["kept"] for n, r in view["routes"].items() if "kept" in r})
    kept.family(
        "veylor_route_kept_messages",
        "gauge",
        "Messages a route keeps for clients that join (keys, with by)",
        "messages",
    )
    kept.family("veylor_route_kept_bytes", "gauge", "Bytes of the messages a route keeps", "bytes")
    kept.family(
        "veylor_route_kept_evicted_total",
        "counter",
        "Keys a route forgot for its snapshot.max_keys",
        "evicted",
    )
    kept.family(
        "veylor_route_unkept_total",
        "counter",
        "Messages a route delivered but did not keep (not JSON, or without its snapshot.by key)",
        "unkept",
    )

    endpoints = _Table(out, "endpoint", view["endpoints"])
    endpoints.family("veylor_endpoint_clients", "gauge", "Clients connected now", "clients")
    endpoints.family(
        "veylor_endpoint_slow_clients",
        "gauge",
        "Clients behind now: Veylor holds bytes for them that their socket does not take",
        "slow_clients",
    )
    endpoints.family(
        "veylor_endpoint_behind_kept_bytes",
        "gauge",
        "Bytes of the latest message of each key kept, once, for the clients behind now (slow_client: conflate)",
        lambda e: e.get("behind_bytes", 0),
    )
    endpoints.family("veylor_endpoint_accepted_total", "counter", "Clients accepted", "accepted")
    endpoints.split(
        "veylor_endpoint_refused_total",
        "Clients refused, by reason: max_clients (503), origin (403), no_token and token (401), "
        "peer (a Unix uid not allowed), pending (max_pending handshakes in progress, max_pending_per_ip of "
        "them from its source: closed at once), since (400: a ?since= that is not a number), path (404: "
        "counted on the port's first endpoint by name), "
        "tls (a failed TLS handshake)",
        "reason",
        {
            "max_clients": "refused",
            "origin": "refused_origin",
            "no_token": "refused_no_token",
            "token": "refused_token",
            "peer": "refused_peer",
            "pending": "refused_pending",
            "since": "refused_since",
            "path": "refused_path",
            "tls": "tls_failed",
        },
    )
    endpoints.family(
        "veylor_endpoint_deliveries_total",
        "counter",
        "Messages written to clients (one per message per client)",
        "messages_out",
    )
    endpoints.family("veylor_endpoint_bytes_total", "counter", "Bytes written to clients", "bytes_out")
    endpoints.family(
        "veylor_endpoint_snapshots_total",
        "counter",
        "Clients that joined and got a snapshot first",
        "snapshots",
    )
    endpoints.family(
        "veylor_endpoint_snapshot_messages_total",
        "counter",
        "Messages written in snapshots (also in veylor_endpoint_deliveries_total)",
        "snapshot_messages",
    )
    endpoints.split(
        "veylor_endpoint_undelivered_total",
        "Deliveries not made (a message times a client), by reason",
        "reason",
        {
            "slow_client_drop": "dropped",
            "slow_client_disconnect": "lost_slow",
            "framing": "unframeable",
            "slow_client_conflate": "superseded",
        },
    )
    endpoints.split(
        "veylor_endpoint_slow_clients_total",
        "Clients found over client_buffer, by the action taken: drop (messages skipped for them "
        "until they drain), disconnect, conflate (the latest of each key held for them until they drain)",
        "action",
        {"drop": "slow_dropping", "disconnect": "slow_disconnects", "conflate": "slow_conflating"},
    )
    endpoints.split(
        "veylor_endpoint_compression_clients_total",
        "Clients of a compression: shared endpoint, by how they are served: shared (the compressed frame, "
        "made once for all), none (they offered no permessage-deflate: the plain frame), params (they "
        "asked for a smaller window than Veylor's: the plain frame)",
        "kind",
        {
            "shared": lambda e: e.get("compression_shared", 0),
            "none": lambda e: e.get("compression_none", 0),
            "params": lambda e: e.get("compression_params", 0),
        },
    )
    endpoints.family(
        "veylor_endpoint_caught_up_total",
        "counter",
        "Clients behind that were given the latest message of each key when they read again "
        "(slow_client: conflate)",
        "caught_up",
    )
    endpoints.split(
        "veylor_endpoint_closed_clients_total",
        "Clients Veylor closed, by reason (slow clients: veylor_endpoint_slow_clients_total)",
        "reason",
        {
            "keepalive": "keepalive_closed",
            "control_frames": "control_closed",
            "malformed": "bad_frames",
            "invalid_utf8": "invalid_utf8",
            "memory_limit": "memory_closed",
            "handshake_timeout": "handshake_timeouts",
            "pending_evicted": "pending_evicted",
            "stalled": "stalled_closed",
            "upstream_rate": "rate_closed",
            "revoked": "revoked",
            "write_failed": "write_failed",
            "conflate_keys": "lag_closed",
        },
    )
    endpoints.split(
        "veylor_endpoint_memory_limited_total",
        "Clients given their slow_client policy for the process-wide limits.buffered, by action: "
        "drop (no data until they drain), disconnect",
        "action",
        {"drop": lambda e: e["memory_limited"] - e["memory_closed"], "disconnect": "memory_closed"},
    )
    endpoints.split(
        "veylor_endpoint_client_messages_total",
        "Messages from clients: forwarded to a source, discarded (no route with upstream: true), or "
        "blocked (every route's upstream policy stopped it)",
        "result",
        {
            "forwarded": lambda e: e["received"] - e["discarded"] - e["upstream_blocked"],
            "discarded": "discarded",
            "blocked": "upstream_blocked",
        },
    )
    endpoints.split(
        "veylor_endpoint_upstream_refused_total",
        "Client messages a route's upstream policy did not send to its source, by reason: "
        "not_allowed (no allow filter passed it), rate (over the client's rate)",
        "reason",
        {"not_allowed": "upstream_denied", "rate": "upstream_limited"},
    )

    linked = [(n, e) for n, e in view["endpoints"].items() if "state" in e]  # (NATS: a connection of its own)
    _family(
        out,
        "veylor_endpoint_up",
        "gauge",
        "1 while an endpoint with a connection of its own (NATS) is connected",
        [({"endpoint": n}, int(e["state"] == "connected")) for n, e in linked],
    )
    _family(
        out,
        "veylor_endpoint_stalls_total",
        "counter",
        "Connections of an endpoint with one of its own (NATS) that Veylor closed and made again because "
        "they stopped reading, by reason (as veylor_source_stalls_total)",
        [
            sample
            for n, e in linked
            for sample in (
                ({"endpoint": n, "reason": "no_pong"}, e["stalled_no_pong"]),
                ({"endpoint": n, "reason": "read_loop_ended"}, e["stalled_read_loop"]),
            )
        ],
    )
    _family(
        out,
        "veylor_endpoint_waiting_messages",
        "gauge",
        "Messages waiting to be published (NATS: bounded by client_buffer)",
        [({"endpoint": n}, e["waiting"]) for n, e in linked if "waiting" in e],
    )

    reloads, config, memory = view["reloads"], view["config"], view["memory"]
    _family(
        out,
        "veylor_config_reloads_total",
        "counter",
        "Reloads that applied a configuration (ok) or were rejected or aborted (failed)",
        [({"result": "ok"}, reloads["ok"]), ({"result": "failed"}, reloads["failed"])],
    )
    admin: Mapping[str, Any] = view.get("admin") or {}
    _family(
        out,
        "veylor_admin_refused_total",
        "counter",
        "Requests the admin endpoint refused, by reason: host (a Host it does not answer to: 421), "
        "origin (from a web page: an Origin header or Sec-Fetch-Site), form (POST /reload a form could "
        "send), no_token and token (401), read_only (a reload or a tap)",
        [({"reason": r}, admin.get(f"refused_{r}", 0)) for r in ADMIN_REFUSED],
    )
    _family(
        out,
        "veylor_config_generation",
        "gauge",
        "Configurations applied since start",
        [({}, config["generation"])],
    )
    last = reloads["last"]
    _family(
        out,
        "veylor_config_last_reload_successful",
        "gauge",
        "1 if the last reload was applied or found nothing to change (or none was tried), 0 if it was "
        "refused or aborted (the configuration before it serves on)",
        [({}, int(last is None or last["ok"]))],
    )
    _family(
        out,
        "veylor_config_last_reload_timestamp_seconds",
        "gauge",
        "When the last reload was tried (the process's start if none was)",
        [({}, last["at"] if last is not None else view["started"])],
    )
    _family(out, "veylor_build_info", "gauge", "Veylor's version", [({"version": view["version"]}, 1)])
    _family(out, "veylor_start_time_seconds", "gauge", "When the process started", [({}, view["started"])])
    _family(
        out,
        "veylor_laggard_buffered_bytes",
        "gauge",
        "Bytes held for clients that fall behind, in Veylor and in their kernel send buffers (counted "
        "against limits.buffered)",
        [({}, memory["laggard_bytes"])],
    )
    _family(out, "veylor_buffered_limit_bytes", "gauge", "limits.buffered", [({}, memory["limit"])])
    process = view["process"]
    _family(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes",
        [({}, process["rss_bytes"])],
    )
    _family(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds",
        [({}, round(process["cpu_seconds"], 3))],
    )
    _family(out, "process_open_fds", "gauge", "Number of open file descriptors", [({}, process["open_fds"])])
    _family(
        out, "process_max_fds", "gauge", "Maximum number of open file descriptors", [({}, process["max_fds"])]
    )
    _family(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the epoch",
        [({}, view["started"])],
    )
    out.append("")
    return "\n".join(out)
