"""The detail of one row (``enter``): everything the state view knows about a source, an
endpoint, a client or an edge, where a table's row has room for a few columns only.

A table answers "which one?"; the detail answers "why?": a source's last error and how
many tries failed in a row, each reason an endpoint did not deliver or refused or closed,
a client's drops and what it has yet to read, the filter of an edge's route. The lines
are made by a pure function of the view (:func:`describe`), so the screen is drawn
again from each new view the app reads, like the tables, and an item a reload removed
says so instead of vanishing.

Text from outside (names, URLs, errors, filters, client addresses) goes through
:func:`~veylor.printable.printable` into Rich :class:`~rich.text.Text`, never markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from rich.text import Text
from textual.widget import Widget

from ..observe.view import EdgeView, EndpointView, SourceView, StateView
from .clients import ClientsTable
from .endpoints import refused
from .live import LISTED, Live, count, field, more, outside, section
from .rates import drops
from .table import Table
from .text import clock, duration, state, when

Kind = Literal["source", "endpoint", "client", "edge"]
KINDS: dict[str, Kind] = {"sources": "source", "endpoints": "endpoint", "clients": "client", "graph": "edge"}

# An endpoint's counters, grouped by what they say (the reasons as /metrics names them).
UNDELIVERED = (
    ("dropped", "the client was over client_buffer"),
    ("lost_slow", "the client was being disconnected for being slow"),
    ("unframeable", "the framing cannot carry the message"),
    ("superseded", "a later message of its key replaced it while the client was behind (conflate)"),
)
REFUSED = (
    ("refused", "max_clients reached"),
    ("refused_no_token", "no token"),
    ("refused_token", "a wrong token"),
    ("refused_origin", "an Origin not allowed"),
    ("refused_path", "no endpoint at that path"),
    ("refused_peer", "a Unix peer not allowed"),
    ("refused_pending", "too many handshakes in progress"),
    ("refused_since", "a ?since= that is not a number"),
)
CLOSED = (
    ("slow_disconnects", "slow"),
    ("lag_closed", "behind on more keys than max_keys (conflate)"),
    ("memory_closed", "over limits.buffered"),
    ("stalled_closed", "took nothing of what waited"),
    ("keepalive_closed", "answered no ping"),
    ("control_closed", "flooded pings"),
    ("rate_closed", "over their upstream rate"),
    ("bad_frames", "broke their framing"),
    ("invalid_utf8", "sent text that is not UTF-8"),
    ("revoked", "their token is no longer allowed"),
    ("write_failed", "a write to them failed"),
)
HANDSHAKES = (
    ("handshake_timeouts", "not completed in time"),
    ("tls_failed", "TLS failed"),
    ("pending_evicted", "evicted for a new one (max_pending)"),
)
FROM_CLIENTS = (  # messages from clients not forwarded
    ("discarded", "no upstream route"),
    ("upstream_denied", "no allow filter passed them"),
    ("upstream_limited", "over the client's upstream rate"),
    ("upstream_blocked", "every route's policy stopped them"),
)
SHOWN_ENDPOINT = {
    "kind", "address", "clients", "slow_clients", "client_list", "clients_not_listed",
    "accepted", "messages", "messages_out", "bytes_out", "received",
    *(key for group in (UNDELIVERED, REFUSED, CLOSED, HANDSHAKES, FROM_CLIENTS) for key, _ in group),
}  # fmt: skip
SHOWN_SOURCE = {
    "kind", "state", "url", "connected_since", "next_attempt_at", "ping_rtt", "failures",
    "last_error", "last_message_at", "attempts", "connects", "disconnects",
}  # fmt: skip


def describe(view: StateView, kind: Kind, key: str) -> list[Text]:
    """The lines of the detail of one item of ``view``: a source or an endpoint by name,
    an edge by ``source|route|endpoint``, a client by ``endpoint|client`` (names have no
    ``|``). An item not in the view says it is gone."""
    if kind == "source":
        return source_lines(view, key)
    if kind == "endpoint":
        return endpoint_lines(view, key)
    if kind == "client":
        return client_lines(view, *key.split("|", 1))
    return edge_lines(view, *key.split("|", 2))


def gone(what: str) -> list[Text]:
    """An item no longer in the view: what happened to it, probably."""
    return [Text(f"gone: {what}", "bold yellow")]


def counters(item: Mapping[str, Any], shown: set[str]) -> list[Text]:
    """The fields of ``item`` not shown elsewhere: numbers with thousands separators,
    the rest as printable text."""
    lines = []
    keys = sorted(key for key in item if key not in shown)
    for key in keys[:LISTED]:
        value = item[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            text = "-" if value is None else outside(value)
        else:
            text = count(value) if isinstance(value, int) else f"{value:,.3f}"
        lines.append(field(outside(key.replace("_", " ")), text))
    return lines + more(len(keys), "counter")


def reasons(item: Mapping[str, Any], group: tuple[tuple[str, str], ...]) -> list[Text]:
    """The counters of ``group`` that are not zero, each with what it means."""
    return [field(f"  {key}", f"{count(item[key])}  ({meaning})") for key, meaning in group if item.get(key)]


# ---------------------------------------------------------------------- sources


def source_lines(view: StateView, name: str) -> list[Text]:
    s = view["sources"].get(name)
    if s is None:
        return gone("removed at the last reload?")
    now = view["time"]
    mark, word, colour = state(s)
    shown = Text.assemble((f"{mark} {word}", colour))
    if s["state"] not in (word, "backoff"):
        shown.append(outside(f" ({s['state']})"))
    next_at = s.get("next_attempt_at")
    if next_at:
        shown.append(f", next try in {duration(next_at - now)}")
    error = s.get("last_error")
    since = s.get("connected_since")
    last = s.get("last_message_at")
    rtt = s.get("ping_rtt")
    lines = [
        field("kind", outside(s.get("kind", "-"))),
        field("state", shown),
        field("last error", Text(outside(error), "red") if error else Text("none")),
        field("failures", f"{count(s.get('failures', 0))} in a row"),
        field("attempts", count(s.get("attempts", 0))),
        field("connects", f"{count(s['connects'])} (disconnects: {count(s.get('disconnects', 0))})"),
        field("connected for", f"{duration(now - since)} (since {clock(since, now)})")
        if since and s["state"] == "connected"
        else field("connected", "no"),
        field("next try", when(next_at, now) if next_at else "-"),
        field("last message", when(last, now) if last else "never"),
        field("ping", "-" if rtt is None else f"{rtt * 1000:.1f} ms"),
        field("url", outside(s.get("url", "")) or "-"),
        section("counters"),
        *counters(s, SHOWN_SOURCE),
        section("routes from it"),
    ]
    routes = [(r, route) for r, route in view["routes"].items() if route.get("from") == name]
    edges: dict[str, list[EdgeView]] = {}  # by route, in one pass (a source may feed 1,000 routes)
    for e in view["edges"]:
        if e["source"] == name:
            edges.setdefault(e["route"], []).append(e)
    for r, route in routes[:LISTED]:
        lines.append(route_line(r, route))
        into = edges.get(r, [])
        lines += [
            field(f"  → {outside(e['endpoint'])}", f"{count(e['messages'])} messages") for e in into[:LISTED]
        ]
        lines += more(len(into), "edge")
    lines += more(len(routes), "route")
    if not routes:
        lines.append(Text("none"))
    return lines


def route_line(name: str, route: Mapping[str, Any]) -> Text:
    """A route on one line: its filter, what it passed and filtered out."""
    return Text(
        outside(f"{name}: filter {route.get('filter') or 'everything'}")
        + f"; passed {count(route.get('messages', 0))}, filtered out {count(route.get('filtered', 0))}"
    )


# ---------------------------------------------------------------------- endpoints


def endpoint_lines(view: StateView, name: str) -> list[Text]:
    endpoint: EndpointView | None = view["endpoints"].get(name)
    if endpoint is None:
        return gone("removed at the last reload?")
    e: Mapping[str, Any] = endpoint  # (counters by a name made at run time)
    slow = e.get("slow_clients", 0)
    listed = len(e.get("client_list", []))
    lines = [
        field("kind", outside(e.get("kind", "-"))),
        field("address", outside(e["address"])),
        field(
            "clients",
            f"{count(e['clients'])} connected ({count(listed)} listed), {count(e.get('accepted', 0))} accepted",
        ),
        field("slow clients now", Text(count(slow), "yellow" if slow else "")),
        field(
            "delivered",
            f"{count(e.get('messages_out', 0))} deliveries ({count(e.get('messages', 0))} messages, "
            f"{count(e.get('bytes_out', 0))} bytes)",
        ),
    ]
    for label, total, group in (
        ("undelivered", drops(e), UNDELIVERED),
        ("refused", refused(endpoint), REFUSED),
        ("closed", sum(int(e.get(k, 0)) for k, _ in CLOSED), CLOSED),
        ("handshakes failed", sum(int(e.get(k, 0)) for k, _ in HANDSHAKES), HANDSHAKES),
    ):
        lines.append(field(label, Text(count(total), "red" if total and label == "undelivered" else "")))
        lines += reasons(e, group)
    lines.append(field("from clients", count(e.get("received", 0))))
    lines += reasons(e, FROM_CLIENTS)
    lines += [section("more"), *(counters(e, SHOWN_ENDPOINT) or [Text("none")])]
    lines.append(section("routes into it"))
    routes = [(r, route) for r, route in view["routes"].items() if name in route.get("to", ())]
    for r, route in routes[:LISTED]:
        lines.append(Text(outside(f"from {route.get('from', '-')} by ")).append_text(route_line(r, route)))
    lines += more(len(routes), "route")
    if not routes:
        lines.append(Text("none"))
    return lines


# ---------------------------------------------------------------------- clients and edges


def client_lines(view: StateView, endpoint: str, client: str = "") -> list[Text]:
    e = view["endpoints"].get(endpoint)
    listed = e.get("client_list", []) if e is not None else []
    c = next((c for c in listed if c["client"] == client), None)
    if c is None:
        return gone("disconnected (or its endpoint removed at the last reload?)")
    now = view["time"]
    return [
        field("client", outside(c["client"])),
        field("endpoint", outside(endpoint)),
        field(
            "connected for",
            f"{duration(now - c['connected_since'])} (since {clock(c['connected_since'], now)})",
        ),
        field("messages", count(c["messages"])),
        field("dropped", Text(count(c.get("dropped", 0)), "red" if c.get("dropped") else "")),
        field("buffered", f"{count(c['buffered'])} bytes"),
    ]


def edge_lines(view: StateView, source: str, route: str = "", endpoint: str = "") -> list[Text]:
    edge = next(
        (e for e in view["edges"] if (e["source"], e["route"], e["endpoint"]) == (source, route, endpoint)),
        None,
    )
    r = view["routes"].get(route)
    if edge is None or r is None:
        return gone("removed at the last reload?")
    s: SourceView | None = view["sources"].get(source)
    e = view["endpoints"].get(endpoint)
    mark, word, colour = state(s) if s is not None else ("?", "not in the view", "")
    lines = [
        field("edge", outside(f"{source} → {route} → {endpoint}")),
        field("messages", count(edge["messages"])),
        field("source state", Text.assemble((f"{mark} {word}", colour))),
    ]
    if s is not None and s.get("last_error"):
        lines.append(field("source last error", Text(outside(s["last_error"]), "red")))
    return [
        *lines,
        section("route"),
        field("filter", outside(r.get("filter") or "everything")),
        field("upstream", upstream(r.get("upstream"))),
        field("passed", count(r.get("messages", 0))),
        field("filtered out", count(r.get("filtered", 0))),
        field("to", outside(", ".join(r.get("to", [])))),
        *conflate_lines(r),
        *kept_lines(r.get("kept")),
        *history_lines(r),
        section("endpoint"),
        field("clients", "-" if e is None else count(e["clients"])),
        field("undelivered", "-" if e is None else count(drops(e))),
        *(
            [
                field(
                    "snapshots sent",
                    f"{count(e.get('snapshots', 0))} ({count(e.get('snapshot_messages', 0))} messages)",
                )
            ]
            if e is not None and e.get("snapshots")
            else []
        ),
    ]


def conflate_lines(route: Mapping[str, Any]) -> list[Text]:
    """What a conflating route holds back (``conflate:``), if it conflates."""
    if "conflate" not in route:
        return []
    return [
        section("conflated (at most one message per key per interval)"),
        field("setting", outside(route["conflate"])),
        field("replaced before sent", count(route.get("conflated", 0))),
        field("sent at once (no key)", count(route.get("unkeyed", 0))),
    ]


def history_lines(route: Mapping[str, Any]) -> list[Text]:
    """What a route keeps for clients that come back (``resume:``), if it keeps any."""
    history = route.get("history")
    if not history:
        return []
    span = "-" if history.get("first") is None else f"{history['first']:g} .. {history.get('last', 0):g}"
    return [
        section("kept for clients that come back (resume, ?since=)"),
        field("setting", outside(history.get("setting", ""))),
        field(
            "kept",
            f"{count(history.get('messages', 0))} messages ({span}), {count(history.get('bytes', 0))} bytes",
        ),
        field(
            "resumed",
            f"{count(route.get('resumes_ok', 0))} whole, {count(route.get('resumes_lost', 0))} past it",
        ),
        field(
            "not kept",
            f"{count(history.get('unkept', 0))} without a number, {count(history.get('unordered', 0))} out of order",
        ),
    ]


def kept_lines(kept: Mapping[str, Any] | None) -> list[Text]:
    """What a route keeps for clients that join (``snapshot:``), if it keeps anything."""
    if not kept:
        return []
    return [
        section("kept for clients that join (snapshot)"),
        field("setting", outside(kept.get("setting", ""))),
        field("kept", f"{count(kept.get('messages', 0))} messages, {count(kept.get('bytes', 0))} bytes"),
        field("forgotten (max_keys)", count(kept.get("evicted", 0))),
        field("not kept (no key)", count(kept.get("unkept", 0))),
    ]


def upstream(policy: object) -> str:
    """A route's ``upstream``: ``no``, ``yes``, or its policy as configured."""
    if not policy:
        return "no"
    return "yes (clients may send)" if policy is True else outside(policy)


# ---------------------------------------------------------------------- screens


def selected(focused: Widget | None, graph: Table, endpoint: str | None) -> tuple[Kind, str] | None:
    """What ``enter`` opens: the row under the cursor of the focused table (the graph's,
    if no table is focused), as (kind, key); None when that table is empty."""
    table = focused if isinstance(focused, Table) and focused.id in KINDS else graph
    key = table.key_at(table.cursor_row)
    kind = KINDS[table.id or "graph"]
    if isinstance(table, ClientsTable) and table.every:
        return (kind, key) if key is not None else None  # (every endpoint's: endpoint|client already)
    if key is None or (kind == "client" and endpoint is None):
        return None
    return kind, f"{endpoint}|{key}" if kind == "client" else key


class Detail(Live):
    """The detail of a source, an endpoint, a client or an edge (see :func:`describe`)."""

    def __init__(self, kind: Kind, key: str, view: StateView | None) -> None:
        super().__init__(view)
        self.kind, self.key = kind, key

    def describe(self, view: StateView) -> tuple[str, list[Text]]:
        if self.kind == "client":
            endpoint, client = self.key.split("|", 1)
            name = f"client {outside(client)} of {outside(endpoint)}"
        elif self.kind == "edge":
            name = "edge " + outside(self.key.replace("|", " → "))
        else:
            name = f"{self.kind} {outside(self.key)}"
        return f"{name} (escape closes)", describe(view, self.kind, self.key)
