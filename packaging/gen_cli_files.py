"""Write the files generated from Veylor's command line (veylor/cliparser.py's parser): the man
page, the shell completions and docs/commands.md.

They are committed, so that building the wheel (which ships the man page and the
completions as data, see pyproject.toml) needs nothing but the files, and a change to
the command line shows in review as the change to its manual. tests/unit/test_clispec.py
fails while one of them is not what this script writes: after changing an option or a
help text, run

    python packaging/gen_cli_files.py           # write them
    python packaging/gen_cli_files.py --check   # exit 1, naming those out of date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this tree's veylor, installed or not

from veylor import completion, manpage  # noqa: E402
from veylor.cliparser import build_parser  # noqa: E402
from veylor.clispec import Command, read  # noqa: E402

FILES: dict[str, Callable[[Command], str]] = {
    "packaging/man/veylor.1": manpage.roff,
    "packaging/completions/veylor.bash": completion.bash,
    "packaging/completions/_veylor": completion.zsh,
    "packaging/completions/veylor.fish": completion.fish,
    "docs/commands.md": manpage.markdown,
}


def stale() -> list[str]:
    """The generated files that differ from what the parser gives now."""
    program = read(build_parser())
    out = []
    for name, render in FILES.items():
        path = REPO / name
        if not path.exists() or path.read_text() != render(program):
            out.append(name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date; write nothing")
    args = parser.parse_args()
    if args.check:
        names = stale()
        for name in names:
            print(f"{name}: out of date with veylor/cliparser.py; run: python packaging/gen_cli_files.py")
        return 1 if names else 0
    program = read(build_parser())
    for name, render in FILES.items():
        (REPO / name).write_text(render(program))
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
