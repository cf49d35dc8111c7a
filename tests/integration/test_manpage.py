"""The man page (packaging/man/veylor.1) and docs/commands.md: the page renders without
a warning from groff or man, and both name every command and every option the parser
has, each under its command, with the command's exit codes. The parser is walked with
argparse itself here, not with veylor.clispec (which wrote them): a new option, or one
the generator dropped, fails."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from veylor.cliparser import build_parser

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "packaging" / "man" / "veylor.1"
DOC = REPO / "docs" / "commands.md"
NEEDS_GROFF = pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff (apt install groff-base)")


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.nargs == argparse.PARSER)
    return {"veylor": parser, **{f"veylor {name}": p for name, p in sub.choices.items()}}


def documented(parser: argparse.ArgumentParser, help_too: bool) -> list[str]:
    """The option strings of ``parser`` a manual must name (help: once, at the top)."""
    return [
        flag
        for action in parser._actions
        if action.option_strings and action.help != argparse.SUPPRESS
        if help_too or not isinstance(action, argparse._HelpAction)
        for flag in action.option_strings
    ]


def render(*options: str) -> subprocess.CompletedProcess[str]:
    """The page as plain text (no hyphenation, long lines: whole words to look for)."""
    return subprocess.run(
        ["groff", "-man", "-Tascii", "-ww", "-rHY=0", "-rLL=200n", *options, "-P-cbou", str(PAGE)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def sections(text: str, heading: str) -> dict[str, str]:
    """Split ``text`` at its lines that match ``heading`` (a regex with one group, the
    title): {title: the text under it}."""
    parts = re.split(heading, text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@NEEDS_GROFF
def test_man_page_renders_without_warnings():
    for device in ("utf8", "ascii"):
        result = subprocess.run(
            ["groff", "-man", f"-T{device}", "-ww", "-z", str(PAGE)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
    if shutil.which("man") is not None:
        result = subprocess.run(
            ["man", "--warnings", "-l", str(PAGE)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "80"},
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert "veylor - declarative WebSocket fan-out router" in result.stdout


@NEEDS_GROFF
def test_man_page_names_every_command_and_option_under_its_command():
    result = render()
    assert result.returncode == 0 and result.stderr == "", result.stderr
    top = sections(result.stdout, r"^([A-Z][A-Z ]+)$")
    assert list(top)[:6] == ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS"]
    assert {"FILES", "ENVIRONMENT", "SIGNALS", "SEE ALSO"} <= set(top)
    per_command = {"veylor": top["OPTIONS"], **sections(top["COMMANDS"], r"^   (veylor [a-z-]+)$")}
    exit_status = {  # "veylor, veylor run": their codes
        name: codes
        for names, codes in sections(top["EXIT STATUS"], r"^       (veylor.*)$").items()
        for name in names.split(", ")
    }
    for name, parser in commands().items():
        assert name in per_command, f"{name} has no section in COMMANDS"
        assert re.search(rf"^       {name}( |$)", top["SYNOPSIS"], re.M), f"{name} not in SYNOPSIS"
        for flag in documented(parser, help_too=name == "veylor"):
            # As an item of its option list: "       -c, --config CONFIG", "       --json Print ..."
            tag = rf"^ {{7}}(?:-[\w-]+, )*{re.escape(flag)}(?![\w-])"
            assert re.search(tag, per_command[name], re.M), (name, flag)
        for code, _ in parser.exit_codes:
            assert re.search(rf"^ +{code}: ", exit_status[name], re.M), (name, code)
    for variable in ("VEYLOR_ADMIN_TOKEN", "NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM"):
        assert variable in top["ENVIRONMENT"]
    for path in ("/etc/veylor/config.yaml", "/etc/veylor/routes.d/*.yaml", "/run/veylor/"):
        assert path in top["FILES"]
    assert "SIGHUP" in top["SIGNALS"] and "SIGTERM, SIGINT" in top["SIGNALS"]


def test_every_os_environ_read_is_in_the_man_page():
    """ENVIRONMENT names every variable Veylor reads (a new os.environ.get fails here)."""
    page = PAGE.read_text()
    sources = "\n".join(p.read_text() for p in (REPO / "veylor").rglob("*.py"))
    read = set(re.findall(r"""(?:environ|env)(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]+)["']""", sources))
    read |= set(re.findall(r'^\w+_ENV = "([A-Z][A-Z0-9_]+)"', sources, re.M))  # TOKEN_ENV
    assert {"VEYLOR_ADMIN_TOKEN", "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC"} <= read
    read.discard("WATCHDOG_PID")  # systemd's, beside WATCHDOG_USEC: whose watchdog it is
    for variable in read:
        assert variable in page, f"{variable} is read but not in the man page's ENVIRONMENT"


def test_commands_md_names_every_command_and_option_under_its_command():
    text = DOC.read_text()
    per_command = sections(text, r"^## (veylor[a-z -]*)$")
    for name, parser in commands().items():
        assert name in per_command, f"docs/commands.md has no section for {name}"
        for flag in documented(parser, help_too=name == "veylor"):
            # A row of its table of options: "| `-c`, `--config CONFIG` | ..."
            row = rf"^\| (?:`[\w-]+`, )*`{re.escape(flag)}[` ]"
            assert re.search(row, per_command[name], re.M), (name, flag)
        for code, _ in parser.exit_codes:
            assert f"\n- {code}: " in per_command[name], (name, code)
    assert "## Files" in text and "## Environment" in text and "## Signals" in text
