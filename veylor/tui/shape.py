"""What the TUI reads of a state view (and of a reload's outcome) that came over HTTP,
checked before anything is computed or drawn from it.

``veylor top`` shows what answers at an admin address: a Veylor of another version, a
proxy, a service that is not Veylor at all. Each field the panes and the rates read is
checked for what they do with it (a name is a string, a counter a finite number, a list
a list), so that a view they could not draw is refused whole, saying which field is
wrong (the screen says STALE, and why), instead of failing halfway through a drawing.
The view of the relay the TUI runs in (``veylor --tui``) is not checked: Veylor made it,
and a mistake there is a bug to see, not to hide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Misshapen", "check_outcome", "check_view"]

Check = Callable[[Any, str], None]  # raises Misshapen, saying where
LARGEST = 2**53  # a number's largest size: what JSON's numbers hold exactly


class Misshapen(Exception):
    """A field the TUI reads is missing or is not what it reads there."""


def number(value: Any, where: str) -> None:
    """A finite number, not too large (NaN and the infinities compare false)."""
    if not (isinstance(value, int | float) and -LARGEST <= value <= LARGEST):
        raise Misshapen(f"{where} is not a number")


def clock(value: Any, where: str) -> None:
    """Seconds since 1970. (From a clock near zero, two views could be a denormal apart,
    and a rate computed from them infinite.)"""
    number(value, where)
    if value < 1:
        raise Misshapen(f"{where} is not a time")


def text(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise Misshapen(f"{where} is not a string")


def anything(value: Any, where: str) -> None:
    """Any value at all (the TUI only formats it)."""


def maybe(check: Check) -> Check:
    """``check``, or null."""

    def checked(value: Any, where: str) -> None:
        if value is not None:
            check(value, where)

    return checked


def items(check: Check) -> Check:
    """A list of what ``check`` accepts."""

    def checked(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise Misshapen(f"{where} is not a list")
        for i, item in enumerate(value):
            check(item, f"{where}[{i}]")

    return checked


def entries(check: Check) -> Check:
    """An object of what ``check`` accepts, by name."""

    def checked(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise Misshapen(f"{where} is not an object")
        for name, entry in value.items():
            check(entry, f"{where}[{name!r}]")

    return checked


def record(required: dict[str, Check], optional: dict[str, Check] | None = None) -> Check:
    """An object with the fields of ``required``, and maybe those of ``optional``."""

    def checked(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise Misshapen(f"{where or 'the answer'} is not an object")
        for key, check in required.items():
            if key not in value:
                raise Misshapen(f"{_at(where, key)} is missing")
            check(value[key], _at(where, key))
        for key, check in (optional or {}).items():
            if key in value:
                check(value[key], _at(where, key))

    return checked


PROBLEMS = items(record(dict.fromkeys(("file", "line", "path", "message"), anything)))
CHANGES = items(text)
STEPS = maybe(items(record({"op": anything, "name": anything}, {"detail": maybe(items(anything))})))
# A reload as the status line and the last reload's screen (l) read it: its moment, why
# it ran, how long it took, the configuration it made (those a Veylor of another version
# may not say are shown as "-").
RELOAD = {"reason": text, "duration_ms": number, "digest": text, "steps": STEPS}
LAST = record({"problems": PROBLEMS, "error": anything, "changes": CHANGES, "at": clock}, RELOAD)
OUTCOME = record({}, {"problems": PROBLEMS, "error": anything, "changes": CHANGES, "steps": STEPS})
RELOADS = record({"last": maybe(LAST)}, {"last_change": maybe(LAST), "ok": number, "failed": number})
SOURCE = record(
    {"state": text, "messages_in": number, "bytes_in": number, "connects": number},
    {"url": text, "kind": text, "ping_rtt": maybe(number), "failures": number, "last_error": maybe(text)}
    | dict.fromkeys(("attempts", "disconnects"), number)
    | dict.fromkeys(("last_message_at", "connected_since", "next_attempt_at"), maybe(number)),
)
HISTORY = record(
    {},
    {"setting": text, "first": maybe(number), "last": maybe(number)}
    | dict.fromkeys(("messages", "bytes", "evicted", "unkept", "unordered"), number),
)
KEPT = record({}, {"setting": text} | dict.fromkeys(("messages", "bytes", "evicted", "unkept"), number))
ROUTE = record(
    {},
    {"from": text, "to": items(text), "filter": text, "messages": number, "filtered": number}
    | {"upstream": anything, "kept": KEPT, "conflate": text, "conflated": number, "unkeyed": number}
    | {"history": HISTORY, "resumes_ok": number, "resumes_lost": number},
)
EDGE = record({"source": text, "route": text, "endpoint": text, "messages": number})
CLIENT = record(
    {"client": text, "connected_since": number, "messages": number, "buffered": number}, {"dropped": number}
)
# The counters an endpoint's detail (enter) adds and sums, by reason (veylor.tui.detail).
COUNTED = (
    "accepted", "messages", "bytes_out", "lost_slow", "unframeable", "refused", "refused_no_token",
    "refused_token", "refused_origin", "refused_path", "refused_peer", "refused_pending", "refused_since",
    "slow_disconnects", "memory_closed", "stalled_closed", "keepalive_closed", "control_closed",
    "rate_closed", "bad_frames", "invalid_utf8", "revoked", "write_failed", "handshake_timeouts",
    "tls_failed", "pending_evicted", "discarded", "upstream_denied", "upstream_limited",
    "upstream_blocked", "superseded", "lag_closed", "caught_up", "slow_conflating",
    "compression_none", "compression_params", "compression_shared",
)  # fmt: skip
ENDPOINT = record(
    {"messages_out": number, "clients": number, "received": number, "address": text},
    dict.fromkeys(
        (
            "dropped",
            "slow_clients",
            "client_buffer",
            "behind_keys",
            "behind_bytes",
            "snapshots",
            "snapshot_messages",
            *COUNTED,
        ),
        number,
    )
    | {"kind": text, "client_list": items(CLIENT), "clients_not_listed": number},
)
CAUGHT = record({"route": anything}, {"error": maybe(text)})  # a tap that failed says so
TAPPED = record({"seen": number, "messages": items(text)})  # what a tap caught


def tap(value: Any, where: str) -> None:
    if value is not None:
        CAUGHT(value, where)
        if not value.get("error"):
            TAPPED(value, where)


VIEW = record(
    {
        "pid": anything,
        "time": clock,
        "config": record({"generation": anything, "digest": text}),
        "reloads": RELOADS,
        "sources": entries(SOURCE),
        "routes": entries(ROUTE),
        "edges": items(EDGE),
        "endpoints": entries(ENDPOINT),
    },
    {"tap": tap},
)


def check_view(view: Any) -> None:
    """Raise :class:`Misshapen` if the TUI cannot read ``view`` as a state view."""
    VIEW(view, "")


def check_outcome(outcome: Any) -> None:
    """Raise :class:`Misshapen` if the TUI cannot read ``outcome`` as a reload's outcome."""
    OUTCOME(outcome, "")


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
