"""Settings of the Unix endpoint kind (``unix:``): a Unix domain socket, its file's mode
and owner, and its wire framing.

Who may connect is in its access (:class:`veylor.config.access.UnixAccess`: peers by
uid and gid).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from .access import Subpath
from .common import UNIX_PATH_MAX


@dataclass(frozen=True, slots=True)
class UnixListen:
    """A Unix domain socket endpoint address and its wire framing."""

    kind: ClassVar[str] = "unix"
    path: str
    mode: int
    framing: Literal["length-prefixed", "lines"]
    owner: str | int | None = None  # of the socket file (chown at bind), as written
    group: str | int | None = None
    # ... as numbers, looked up when the configuration is loaded (in the loader's thread:
    # a lookup may ask a directory service); -1: left as is; None: no such user or group
    uid: int | None = -1
    gid: int | None = -1

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], base: str = "", out: Any = None) -> UnixListen:
        owner, group = raw.get("owner"), raw.get("group")
        return cls(
            path=raw["path"],
            mode=int(raw["mode"], 8),
            framing=raw["framing"],
            owner=owner,
            group=group,
            uid=_uid(owner) if owner is not None else -1,
            gid=_gid(group) if group is not None else -1,
        )

    @property
    def listener(self) -> tuple[str, str]:
        return ("unix", os.path.normpath(self.path))  # ./a.sock and a.sock: one socket

    @property
    def listener_text(self) -> str:
        return f"unix:{self.path}"

    @property
    def binds(self) -> tuple[Any, ...]:
        return ("unix", os.path.normpath(self.path))

    @property
    def claim(self) -> tuple[Any, ...]:
        return ("unix", os.path.normpath(self.path))

    def taken(self, other: str) -> tuple[Subpath, str]:
        return (
            "path",
        ), f"Unix socket {self.path} is already used by {other}: each endpoint needs its own path"

    group = None

    def clash(self, other: UnixListen, who: str) -> tuple[Subpath, str] | None:
        return None

    def check(self) -> list[tuple[Subpath, str]]:
        n = len(os.fsencode(self.path))
        out: list[tuple[Subpath, str]] = []
        if n > UNIX_PATH_MAX:
            out.append(
                (
                    ("path",),
                    f"is {n} bytes long; Unix socket paths may have at most {UNIX_PATH_MAX}: "
                    "choose a shorter path",
                )
            )
        for key, value, number in (("owner", self.owner, self.uid), ("group", self.group, self.gid)):
            if number is None:
                what = "user" if key == "owner" else "group"
                out.append(
                    ((key,), f"{what} {value!r} does not exist here (a name, or a number up to {_ID_MAX})")
                )
        return out

    @property
    def ids(self) -> tuple[int, int]:
        """The socket file's owner and group as numbers (-1: leave as is)."""
        return (-1 if self.uid is None else self.uid, -1 if self.gid is None else self.gid)

    def secrets(self) -> frozenset[str]:
        return frozenset()

    def exposure(self) -> str:
        return "local"

    def access_summary(self) -> str | None:
        return None  # (its access settings say it)

    def describe_endpoint(self, spec: Any) -> str | None:
        return None

    def describe(self) -> str:
        owner = f", owner {self.owner}" if self.owner is not None else ""
        group = f", group {self.group}" if self.group is not None else ""
        return f"{self} ({self.framing}, mode {self.mode:04o}{owner}{group})"

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "mode": f"{self.mode:04o}",
            "framing": self.framing,
            "owner": self.owner,
            "group": self.group,
        }

    def __str__(self) -> str:
        return f"unix:{self.path}"


_ID_MAX = 2**32 - 2  # (uid_t; -1 means "unchanged" to chown)


def _number(value: str | int) -> int | None:
    number = value if isinstance(value, int) else int(value) if value.isascii() and value.isdigit() else None
    return number if number is not None and 0 <= number <= _ID_MAX else None


def _uid(value: str | int) -> int | None:
    """A user's uid from its name or number (None: no such user, or not a uid)."""
    import pwd

    if isinstance(value, str):
        try:
            return pwd.getpwnam(value).pw_uid
        except KeyError:
            pass
    return _number(value)


def _gid(value: str | int) -> int | None:
    """A group's gid from its name or number (None: no such group, or not a gid)."""
    import grp

    if isinstance(value, str):
        try:
            return grp.getgrnam(value).gr_gid
        except KeyError:
            pass
    return _number(value)
