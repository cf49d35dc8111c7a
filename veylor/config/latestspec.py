"""A route's latest-value settings (``snapshot:``, ``conflate:``), as the loader builds
them from schema-valid data, with the problems the schema cannot see (a JSON path that
cannot be read, ``max_keys`` beside ``last``, an interval out of bounds). What a route
keeps at run time: :mod:`veylor.latest`; what it holds back: :mod:`veylor.runtime.conflate`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..filters import parse_json_path
from .common import format_size, human_duration, parse_duration, parse_size

SHORTEST, LONGEST = 0.01, 3600.0  # a conflation interval's bounds, seconds
PATH_HINT = "write keys separated by dots, with [N] for a list's item, as s, data.symbol or data[0].s"


@dataclass(frozen=True, slots=True)
class SnapshotSpec:
    """A route's ``snapshot:`` setting: ``by`` (a JSON path, as written) or ``last``;
    ``max_keys`` bounds ``by``, ``max_bytes`` both (a hostile upstream's 16 MiB messages
    under distinct keys); ``end`` is sent after the snapshot (None: nothing)."""

    by: str | None = None
    last: int | None = None
    max_keys: int = 10_000
    end: str | None = None
    max_bytes: int = 64 * 2**20

    def as_json(self) -> dict[str, Any]:
        """As written (with the default bound), for ``veylor check --json``."""
        if self.by is not None:
            return {
                "by": self.by,
                "max_keys": self.max_keys,
                "max_bytes": format_size(self.max_bytes),
                "end": self.end,
            }
        return {"last": self.last, "max_bytes": format_size(self.max_bytes), "end": self.end}

    def describe(self) -> str:
        """``the last message per s (at most 10,000 keys)``, ``the last 100 messages``."""
        if self.by is not None:
            what = f"the last message per {self.by} (at most {self.max_keys:,} keys, {format_size(self.max_bytes)})"
        else:
            what = f"the last {self.last:,} message{'s' * (self.last != 1)} (at most {format_size(self.max_bytes)})"
        return what + (", then an end marker" if self.end is not None else "")


def snapshot_from(
    raw: Mapping[str, Any] | None,
) -> tuple[SnapshotSpec | None, list[tuple[tuple[str, ...], str]]]:
    """The spec of a route's ``snapshot:`` (None: absent), and its problems as (key path
    under ``snapshot``, message)."""
    if raw is None:
        return None, []
    problems: list[tuple[tuple[str, ...], str]] = []
    by = raw.get("by")
    if by is not None:
        try:
            parse_json_path(by)
        except ValueError as exc:
            problems.append(
                (
                    ("by",),
                    f"{exc}: write keys separated by dots, with [N] for a list's item, as s, data.symbol or data[0].s",
                )
            )
    elif "max_keys" in raw:
        problems.append((("max_keys",), "max_keys bounds snapshot.by; with last, last is the bound"))
    spec = SnapshotSpec(
        by=by,
        last=raw.get("last"),
        max_keys=raw.get("max_keys", 10_000),
        end=raw.get("end"),
        max_bytes=parse_size(raw.get("max_bytes", "64MiB")),
    )
    return spec, problems


@dataclass(frozen=True, slots=True)
class ConflateSpec:
    """A route's ``conflate:`` setting: the key (a JSON path, as written) and how often
    the latest of each changed key is sent (seconds); ``max_keys`` and ``max_bytes``
    bound what is held (10,000 keys of a hostile upstream's 16 MiB messages: 160 GB)."""

    by: str
    interval: float
    max_keys: int = 10_000  # keys held at most; beyond, the oldest held is sent at once
    max_bytes: int = 64 * 2**20  # bytes of the held payloads at most; likewise

    def as_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "interval": human_duration(self.interval),
            "max_keys": self.max_keys,
            "max_bytes": format_size(self.max_bytes),
        }

    def describe(self) -> str:
        """``the latest per s every 250ms``."""
        return f"the latest per {self.by} every {human_duration(self.interval)}"


def conflate_from(
    raw: Mapping[str, Any] | None,
) -> tuple[ConflateSpec | None, list[tuple[tuple[str, ...], str]]]:
    """The spec of a route's ``conflate:`` (None: absent), and its problems as (key path
    under ``conflate``, message)."""
    if raw is None:
        return None, []
    problems = path_problems(raw["by"])
    interval = parse_duration(raw["interval"])
    if not SHORTEST <= interval <= LONGEST:
        problems.append(
            (("interval",), f"{human_duration(interval)} is out of bounds: write 10ms at least, 1h at most")
        )
    spec = ConflateSpec(
        by=raw["by"],
        interval=interval,
        max_keys=raw.get("max_keys", 10_000),
        max_bytes=parse_size(raw.get("max_bytes", "64MiB")),
    )
    return spec, problems


@dataclass(frozen=True, slots=True)
class ResumeSpec:
    """A route's ``resume:`` setting: the JSON path of a number that increases with each
    message, the messages kept (``size``, and ``max_bytes`` of them at most), and the
    text sent first when the kept history no longer reaches what a client asks for."""

    by: str
    size: int = 100_000
    max_bytes: int = 64 * 2**20
    lost: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"by": self.by, "size": self.size, "max_bytes": format_size(self.max_bytes), "lost": self.lost}

    def describe(self) -> str:
        """``the last 100,000 messages by seq (64MiB at most) for ?since=``."""
        return (
            f"the last {self.size:,} messages by {self.by} ({format_size(self.max_bytes)} at most) for ?since="
            + (", a marker when some may be lost" if self.lost is not None else "")
        )


def resume_from(raw: Mapping[str, Any] | None) -> tuple[ResumeSpec | None, list[tuple[tuple[str, ...], str]]]:
    """The spec of a route's ``resume:`` (None: absent), and its problems as (key path
    under ``resume``, message)."""
    if raw is None:
        return None, []
    problems = path_problems(raw["by"])
    spec = ResumeSpec(
        by=raw["by"],
        size=raw.get("size", 100_000),
        max_bytes=parse_size(raw.get("max_bytes", "64MiB")),
        lost=raw.get("lost"),
    )
    return spec, problems


def path_problems(by: str) -> list[tuple[tuple[str, ...], str]]:
    """The problem of a ``by`` that is not a JSON path (none: an empty list)."""
    try:
        parse_json_path(by)
    except ValueError as exc:
        return [(("by",), f"{exc}: {PATH_HINT}")]
    return []
