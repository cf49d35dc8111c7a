"""What the file watcher watches: the main file and what the include patterns can match.

Pure apart from asking which directories exist. Nothing else near the configuration
(a log file written next to it, ``.git/``, editor swap files and backups,
``*.yaml.example``) can trigger a reload. A pattern's directory that does not exist
yet is watched for from its nearest existing ancestor, so that a new ``routes.d/``
is noticed at once; the scope is re-derived after each reload.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

_K8S_SWAP = "..data"  # Kubernetes ConfigMap volumes swap this symlink to update files


def _component_regex(part: str) -> str:
    """One path component of a glob pattern as a regular expression (glob semantics:
    ``*`` and ``?`` never match ``/``, and a wildcard never matches a leading dot)."""
    out = []
    i = 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = part.find("]", i + 2 if part[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = part[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    text = "".join(out)
    return text if part.startswith(".") or not glob.has_magic(part[:1]) else "(?!\\.)" + text


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regular expression matching the paths ``glob.glob(pattern, recursive=True)``
    can return (hidden files excluded, as glob does)."""
    parts = pattern.split("/")
    out = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out += "(?:(?!\\.)[^/]*/)*" if not last else "(?:(?!\\.)[^/]*/)*(?!\\.)[^/]*"
        else:
            out += _component_regex(part) + ("" if last else "/")
    return re.compile(out)


@dataclass(frozen=True)
class WatchScope:
    """Directories to watch and the paths under them that matter.

    ``roots``: directories to watch; ``recursive``: whether any of them must be watched
    with its subdirectories (a pattern with a wildcard in a directory part);
    ``files``: exact paths that matter (the main file, literal includes);
    ``patterns``: include patterns as regular expressions; ``awaited``: directories on
    the way to a pattern's directory that do not exist yet (creating one re-derives
    the scope).
    """

    roots: tuple[str, ...]
    recursive: bool
    files: frozenset[str]
    patterns: tuple[re.Pattern[str], ...] = ()
    awaited: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls, main: str, include: tuple[str, ...] | list[str], referenced: tuple[str, ...] = ()
    ) -> WatchScope:
        """``referenced``: files the configuration names (a tokens file, a certificate):
        a change to one reloads too, wherever it is."""
        main = os.path.abspath(main)
        base = os.path.dirname(main)
        roots = [base]
        files = {main}
        awaited: set[str] = set()

        def nearest(directory: str) -> str:
            """``directory``, or its nearest existing ancestor: those missing on the way
            are awaited (creating one re-derives the scope)."""
            while not os.path.isdir(directory) and directory != os.path.dirname(directory):
                awaited.add(directory)
                directory = os.path.dirname(directory)
            return directory

        for named in referenced:
            # The path as named, and where it leads (a link into another directory: an
            # edit there changes what is read). Watched while missing too: a file that
            # comes back applies like any edit.
            for path in dict.fromkeys((os.path.abspath(named), os.path.realpath(named))):
                files.add(path)
                roots.append(nearest(os.path.dirname(path)))
        patterns = []
        recursive = False
        for pattern in include:
            full = os.path.normpath(os.path.join(base, os.path.expanduser(pattern)))
            parts = full.split("/")
            magic = [i for i, p in enumerate(parts) if glob.has_magic(p)]
            if not magic:
                files.add(full)
                literal_dir = os.path.dirname(full)
            else:
                patterns.append(glob_regex(full))
                literal_dir = "/".join(parts[: magic[0]]) or "/"
                recursive = recursive or magic[0] < len(parts) - 1
            roots.append(nearest(literal_dir))
        unique: list[str] = []
        for root in sorted(set(roots), key=len):
            if recursive and any(root == r or root.startswith(r.rstrip("/") + "/") for r in unique):
                continue  # already inside a recursively watched root
            unique.append(root)
        return cls(tuple(unique), recursive, frozenset(files), tuple(patterns), frozenset(awaited))

    def matters(self, path: str) -> bool:
        """Whether a change at ``path`` can change the configuration."""
        if path in self.files or path in self.awaited:
            return True
        if os.path.basename(path) == _K8S_SWAP:
            return True
        return any(p.fullmatch(path) for p in self.patterns)
