"""Latest-value delivery, the pure part: what a route keeps of the messages that passed it,
for the clients that join later (a snapshot). No sockets, no clock, no event loop: the
fan-out feeds a :class:`Kept` and an endpoint reads it when a client joins.

Two ways to keep (a route's ``snapshot:``):

- ``by: PATH``: the last message per value of a JSON key (``s`` in ``{"s": "BTCUSDT",
  ...}``), at most ``max_keys`` keys; beyond, the least recently updated key goes
  (counted). A message that is not JSON, lacks the key or whose key is not a scalar
  is delivered but not kept (counted).
- ``last: N``: the last N messages, whatever they are.

Every message the fan-out dispatches has a sequence number, increasing (one counter
for the whole process). A message is kept with it, so that the messages of several
routes into one endpoint make one snapshot in the order they came (:func:`snapshot`),
a message kept by two of them once. (Where the snapshot meets the live stream:
:mod:`veylor.runtime.keeper`.)
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import Any

from .config.latestspec import ResumeSpec, SnapshotSpec
from .filters import JsonPath, lookup, parse_json_path
from .message import NOT_JSON, Message

MISSING: Any = object()  # no key: not JSON, no value at the path, or not a scalar


class Entry:
    """One kept message: its place in the stream, its payload, and its frame in each
    wire it was asked for (made once, for every client that joins)."""

    __slots__ = ("data", "frames", "is_text", "seq")

    def __init__(self, seq: int, data: bytes, is_text: bool) -> None:
        self.seq = seq
        self.data = data
        self.is_text = is_text
        self.frames: dict[Any, bytes | None] | None = None

    def frame(self, wire: Any) -> bytes | None:
        """This message in ``wire``'s framing (None: the wire cannot carry it), made once."""
        frames = self.frames
        if frames is None:
            frames = self.frames = {}
        try:
            return frames[wire]
        except KeyError:
            made: bytes | None = wire.frame(self.data, self.is_text)
            frames[wire] = made
            return made


LONG_KEY = 256  # characters: a longer string key is held by its digest


def key_of(value: Any) -> Any:
    """A dict key for a JSON scalar: its type with it (``1``, ``1.0`` and ``true`` are
    three keys, as they are three JSON texts); ``MISSING`` for an object or a list.

    A string longer than :data:`LONG_KEY` is held by its SHA-256 (tagged ``bytes``, which
    no JSON value is): the key is a copy beside the payload, not counted in ``max_bytes``,
    and a 1 MB key with one character outside the BMP is a 4 MB ``str``, so 10,000
    hostile keys held 5 times the bytes counted."""
    if isinstance(value, str) and len(value) > LONG_KEY:
        return (bytes, hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest())
    if value is None or isinstance(value, str | int | float | bool):
        return (type(value), value)
    return MISSING


def key_at(msg: Message, path: JsonPath) -> Any:
    """A message's key: :func:`key_of` its value at ``path``; :data:`MISSING` when it is
    not JSON, has nothing there, or a list or an object there."""
    doc = msg.json
    return MISSING if doc is NOT_JSON else key_of(lookup(doc, path))


class Kept:
    """What a route keeps (see the module docstring); counters for the state view."""

    __slots__ = ("bytes", "evicted", "spec", "unkept")

    def __init__(self, spec: SnapshotSpec) -> None:
        self.spec = spec
        self.bytes = 0  # of the kept payloads
        self.evicted = 0  # keys forgotten for max_keys
        self.unkept = 0  # messages delivered but not kept (by: not JSON, no such key)

    def keep(self, seq: int, msg: Message) -> None:
        raise NotImplementedError

    def entries(self) -> Iterable[Entry]:
        """The kept messages, oldest first (by ``seq``)."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def adopt(self, old: Kept) -> None:
        """Take what ``old`` (the route's before a reload changed its settings) kept,
        where it still means the same: the same ``by``, or both ``last``."""


class ByKey(Kept):
    """The last message per value of a JSON key, the least recently updated first."""

    __slots__ = ("by", "items")

    def __init__(self, spec: SnapshotSpec) -> None:
        super().__init__(spec)
        self.by = parse_json_path(spec.by or "")
        self.items: OrderedDict[Any, Entry] = OrderedDict()

    def keep(self, seq: int, msg: Message) -> None:
        key = key_at(msg, self.by)
        if key is MISSING:
            self.unkept += 1
            return
        items = self.items
        old = items.pop(key, None)  # (re-inserted last: the order is that of the latest update)
        if old is not None:
            self.bytes -= len(old.data)
        elif len(items) >= self.spec.max_keys:
            self.bytes -= len(items.popitem(last=False)[1].data)
            self.evicted += 1
        data = msg.data
        items[key] = Entry(seq, data, msg.is_text)
        self.bytes += len(data)
        limit = self.spec.max_bytes
        while self.bytes > limit and len(items) > 1:  # (the newest always stays)
            self.bytes -= len(items.popitem(last=False)[1].data)
            self.evicted += 1

    def entries(self) -> Iterable[Entry]:
        return self.items.values()

    def __len__(self) -> int:
        return len(self.items)

    def adopt(self, old: Kept) -> None:
        if isinstance(old, ByKey) and old.spec.by == self.spec.by:
            items = old.items
            while len(items) > self.spec.max_keys:  # (a smaller bound: the oldest go)
                items.popitem(last=False)
                self.evicted += 1
            self.items = items
            self.bytes = sum(len(e.data) for e in items.values())


class LastN(Kept):
    """The last N messages."""

    __slots__ = ("items",)

    def __init__(self, spec: SnapshotSpec) -> None:
        super().__init__(spec)
        self.items: deque[Entry] = deque(maxlen=spec.last)

    def keep(self, seq: int, msg: Message) -> None:
        items = self.items
        if len(items) == items.maxlen:
            self.bytes -= len(items[0].data)
        data = msg.data
        items.append(Entry(seq, data, msg.is_text))
        self.bytes += len(data)
        limit = self.spec.max_bytes
        while self.bytes > limit and len(items) > 1:  # (the newest always stays)
            self.bytes -= len(items.popleft().data)

    def entries(self) -> Iterable[Entry]:
        return self.items

    def __len__(self) -> int:
        return len(self.items)

    def adopt(self, old: Kept) -> None:
        if isinstance(old, LastN):
            self.items.extend(old.items)  # (a smaller N keeps the newest)
            self.bytes = sum(len(e.data) for e in self.items)


def kept_for(spec: SnapshotSpec) -> Kept:
    """An empty store for a route's ``snapshot:``."""
    return ByKey(spec) if spec.by is not None else LastN(spec)


class History:
    """What a route keeps for clients that come back (``resume:``): the last messages,
    each with the number at ``by`` (increasing), at most ``size`` of them and
    ``max_bytes`` of payload; the oldest go first."""

    __slots__ = ("by", "bytes", "entries", "evicted", "spec", "unkept", "unordered", "values")

    def __init__(self, spec: ResumeSpec) -> None:
        self.spec = spec
        self.by = parse_json_path(spec.by)
        self.values: deque[float] = deque()
        self.entries: deque[Entry] = deque()
        self.bytes = 0
        self.evicted = 0  # messages forgotten for size or max_bytes
        self.unkept = 0  # messages without a number at by
        self.unordered = 0  # messages whose number was not greater than the last kept

    def keep(self, seq: int, msg: Message) -> None:
        doc = msg.json
        value = MISSING if doc is NOT_JSON else lookup(doc, self.by)
        if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
            # Not a number, NaN, or an infinity (Python's json reads Infinity and 1e999):
            # after an infinity no number is greater, and nothing more would be kept.
            self.unkept += 1
            return
        values = self.values
        if values and value <= values[-1]:
            self.unordered += 1
            return
        data = msg.data
        values.append(value)
        self.entries.append(Entry(seq, data, msg.is_text))
        self.bytes += len(data)
        self._trim()

    def _trim(self) -> None:
        """The oldest go while over ``size`` or ``max_bytes`` (the newest always stays)."""
        spec, values, entries = self.spec, self.values, self.entries
        while len(values) > spec.size or (self.bytes > spec.max_bytes and len(values) > 1):
            values.popleft()
            self.bytes -= len(entries.popleft().data)
            self.evicted += 1

    def since(self, after: float) -> tuple[list[Entry], bool]:
        """The kept messages whose number is greater than ``after``, oldest first, and
        whether some in between may be lost (the oldest kept is past ``after + 1``)."""
        entries, lost, _ = self.newest_since(after, None)
        return entries, lost

    def newest_since(self, after: float, room: int | None) -> tuple[list[Entry], bool, int | None]:
        """The newest kept messages whose number is greater than ``after`` whose payloads
        fit in ``room`` bytes (None: all), oldest first; whether some before them may be
        lost; and the ``seq`` of the newest that did not fit (None: all fit).

        Walked from the newest end, so a client coming back costs what it gets, not what
        is kept: a deque is read by index in O(n), and reading 100,000 kept messages by
        index from ``after`` held the event loop 150-700 ms per client (``?since=0``)."""
        values, entries = self.values, self.entries
        if not values or after >= values[-1]:
            return [], False, None
        out: list[Entry] = []
        size = 0
        cut: int | None = None
        for value, entry in zip(reversed(values), reversed(entries), strict=True):
            if value <= after:
                break
            size += len(entry.data)
            if room is not None and size > room:
                cut = entry.seq
                break
            out.append(entry)
        out.reverse()
        return out, values[0] > after + 1, cut

    def __len__(self) -> int:
        return len(self.values)

    def adopt(self, old: History) -> None:
        """Take what the route's history kept before a reload changed its bounds (the
        same ``by``): the newest within the new bounds."""
        if old.spec.by != self.spec.by:
            return
        for value, entry in zip(old.values, old.entries, strict=True):
            self.values.append(value)
            self.entries.append(entry)
            self.bytes += len(entry.data)
        self._trim()


def snapshot(kept: Iterable[Kept]) -> Iterator[Entry]:
    """The messages several routes kept, in the order they came, each once (a message
    two of the routes kept has one ``seq``)."""
    stores = [k.entries() for k in kept]
    merged: Iterable[Entry] = stores[0] if len(stores) == 1 else heapq.merge(*stores, key=_seq)
    last = -1
    for entry in merged:
        seq = entry.seq
        if seq != last:
            last = seq
            yield entry


def _seq(entry: Entry) -> int:
    return entry.seq


_finite = math.isfinite
