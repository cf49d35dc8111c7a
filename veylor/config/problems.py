"""Problems found in configuration files, reported with file, line and key path."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PathT = tuple[str | int, ...]


def format_path(path: Sequence[str | int]) -> str:
    """Render a document path as people write it: ``sources.binance.url``, ``sources[0].url``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a configuration file (1-based line and column)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or, with ``warning=True``, worth knowing) about the configuration."""

    location: Location
    path: PathT
    message: str
    warning: bool = False
    code: str = ""  # a stable tag for some kinds, e.g. "unknown-key"

    def __str__(self) -> str:
        where = str(self.location)
        key = format_path(self.path)
        prefix = f"{where} {key}: " if key else f"{where}: "
        tag = "warning: " if self.warning else ""
        return f"{prefix}{tag}{self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "path": format_path(self.path),
            "message": self.message,
            "severity": "warning" if self.warning else "error",
        }


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every error found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(p for p in problems if not p.warning)
        self.warnings = tuple(p for p in problems if p.warning)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the configuration"
        super().__init__("\n".join([head, *map(str, self.problems)]))


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` when a candidate is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
