"""The command line read as data (veylor/clispec.py), and the files generated from it.

clispec reads argparse's private parts (``_actions``, ``_choices_actions``, mutually
exclusive groups, the action classes): these tests fail loudly when argparse changes
them. The committed man page, completions and docs/commands.md must be what
packaging/gen_cli_files.py writes from the parser now."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from veylor.cliparser import build_parser
from veylor.clispec import read, short

REPO = Path(__file__).resolve().parents[2]


def test_reads_every_command_option_choice_and_file_option_of_the_parser():
    program = read(build_parser())
    assert program.name == "veylor"
    names = [c.name for c in program.commands]
    assert names == [
        "veylor run",
        "veylor check",
        "veylor reload",
        "veylor top",
        "veylor status",
        "veylor health",
        "veylor demo",
        "veylor completion",
    ]
    options = {o.longest: o for o in program.options}
    assert options["--config"].flags == ("-c", "--config") and options["--config"].file
    assert options["--config"].metavar == "CONFIG"
    assert options["--log-format"].choices == ("text", "json") and not options["--log-format"].file
    assert options["--watch"].excludes == ("--no-watch",) and options["--no-watch"].excludes == ("--watch",)
    assert options["--verbose"].repeat and options["--verbose"].metavar is None
    assert options["--help"].final and options["--version"].final
    assert not options["--tui"].final and options["--tui"].metavar is None
    commands = {c.path[-1]: c for c in program.commands}
    check = {o.longest: o for o in commands["check"].options}
    assert check["--against"].file and check["--against"].metavar == "OLD_CONFIG"
    assert {o.longest: o for o in commands["reload"].options}["--token-file"].file
    assert not {o.longest: o for o in commands["reload"].options}["--admin"].file
    assert commands["completion"].arguments[0].name == "SHELL"
    assert commands["completion"].arguments[0].choices == ("bash", "zsh", "fish")
    assert commands["check"].summary == "validate the configuration and print the routing graph"
    assert program.synopsis()[:4] == ["[-c CONFIG]", "[-v]", "[--tui]", "[--watch auto|poll | --no-watch]"]
    assert [s.title for s in program.sections] == ["FILES", "ENVIRONMENT", "SIGNALS"]


def test_every_command_is_documented_with_its_exit_status():
    """A new command or option needs a summary, a description, help texts and its exit
    codes: they are its --help, its man page section and its docs."""
    program = read(build_parser())
    assert program.description and program.exit_codes
    for command in program.commands:
        assert command.summary and command.description, command.name
        assert command.exit_codes and command.exit_codes[0][0] == 0, command.name
        for option in command.options:
            assert option.help, (command.name, option.flags)
    # The exit codes are in each command's --help too.
    parser = build_parser()
    sub = next(a for a in parser._actions if a.nargs == argparse.PARSER)
    assert "exit status: 0 applied, or nothing to change; 1 refused" in sub.choices["reload"].format_help()


def test_short_descriptions_drop_asides_and_keep_the_first_clause():
    assert (
        short("print the graph (or the problems) as JSON; with --against, more") == "print the graph as JSON"
    )
    assert (
        short("the main configuration file (default: ./config.yaml): more") == "the main configuration file"
    )
    assert short("`veylor run` does it. More") == "veylor run does it"
    assert len(short("word " * 40)) <= 80


def test_generated_files_are_what_the_parser_gives():
    """The man page, completions and docs/commands.md are generated and committed: after
    changing an option or a help text, run `python packaging/gen_cli_files.py`."""
    result = subprocess.run(
        [sys.executable, str(REPO / "packaging" / "gen_cli_files.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_relays_start_does_not_import_the_generators():
    """cli.py builds the parser without clispec, completion or manpage (dataclasses made
    at import: about 4 ms of every start); `veylor completion` imports them."""
    code = (
        "import sys, veylor.cliparser; veylor.cliparser.build_parser(); "
        "print(sorted(m for m in sys.modules if m in ('veylor.clispec', 'veylor.completion', 'veylor.manpage')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
