"""The manual of the ``veylor`` command, written from its parser: ``veylor.1`` (roff)
and ``docs/commands.md`` (Markdown).

Everything comes from :func:`veylor.clispec.read` of :func:`veylor.cliparser.build_parser`:
the commands, their options and help texts, exit codes, and the sections the parser
carries (FILES, ENVIRONMENT, SIGNALS). Change a help text there, then run
``python packaging/gen_cli_files.py``, which writes these and the shell completions;
``tests/unit/test_clispec.py`` fails while they differ.

    python -m veylor.manpage              # the man page, on stdout
    python -m veylor.manpage --markdown   # docs/commands.md
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Sequence

from . import __version__
from .clispec import Command, Option, Section, read

SOURCE = "https://github.com/veylor/veylor"
USAGE_ERROR = (
    "Every command exits with 2 on a usage error (an unknown option, a missing or bad value), "
    "after saying what is wrong."
)
EVERY_COMMAND = "Each command also takes -h, --help: its own usage, options and exit status."
SEE_ALSO = ("systemctl(1)", "journalctl(1)", "systemd.service(5)", "podman-run(1)")
SEE_ALSO_TEXT = (
    "The configuration reference: docs/configuration.md in Veylor's source, and "
    "config.yaml.example with every key and its default. Operations, observability, security "
    f"and scale-out: the docs/ directory of {SOURCE}."
)


def _commands(program: Command) -> list[Command]:
    return [program, *program.commands]


def _exit_groups(program: Command) -> list[tuple[list[Command], tuple[tuple[int, str], ...]]]:
    """Commands with their exit codes, those with the same codes together (veylor, veylor run)."""
    groups: list[tuple[list[Command], tuple[tuple[int, str], ...]]] = []
    for command in _commands(program):
        if not command.exit_codes:
            continue
        for names, codes in groups:
            if codes == command.exit_codes:
                names.append(command)
                break
        else:
            groups.append(([command], command.exit_codes))
    return groups


# roff -------------------------------------------------------------------------------


def roff(program: Command) -> str:
    """The man page, ``veylor.1``."""
    out = [
        f'.\\" {program.name}({1}): generated from its command line by packaging/gen_cli_files.py; do not edit',
        f'.TH {program.name.upper()} 1 "" "{program.name} {__version__}" "User Commands"',
        ".SH NAME",
        f"{program.name} \\- {_text(program.summary)}",
        ".SH SYNOPSIS",
    ]
    for command in _commands(program):
        out += _synopsis(command)
    out += [".SH DESCRIPTION", _text(program.description)]
    out += [".SH OPTIONS", *_options(program.options)]
    out += [".SH COMMANDS", _text(EVERY_COMMAND)]
    for command in program.commands:
        out += [f'.SS "{_text(command.name)}"', _text(_sentence(command.summary))]
        if command.description:
            out += [".PP", _text(command.description)]
        out += _options([o for o in command.options if not o.final])
        for argument in command.arguments:
            out += [".TP", f"\\fI{_text(argument.name)}\\fR", _text(argument.help)]
    out += [".SH EXIT STATUS", _text(USAGE_ERROR)]
    for commands, codes in _exit_groups(program):
        out += [".TP", ", ".join(f"\\fB{_text(c.name)}\\fR" for c in commands)]
        out += ["\n.br\n".join(f"\\fB{code}\\fR: {_text(text)}" for code, text in codes)]
    for section in program.sections:
        out += [f".SH {section.title}", *_items(section)]
    out += [
        ".SH SEE ALSO",
        ",\n".join(".BR " + re.sub(r"\((\d)\)$", r" (\1)", _text(page)) for page in SEE_ALSO),
        ".PP",
        _text(SEE_ALSO_TEXT),
    ]
    return "\n".join(out) + "\n"


def _synopsis(command: Command) -> list[str]:
    words = []
    for word in command.synopsis():
        word = _text(word)
        # Options in bold, their values in italics: [-c CONFIG] -> [\fB-c\fR \fICONFIG\fR]
        word = re.sub(r"(\\-[\w\\-]+)", r"\\fB\1\\fR", word)
        word = re.sub(r"(?<=\\fR )([A-Za-z_|]+)", r"\\fI\1\\fR", word)
        words.append(word if word.startswith("[") else f"\\fI{word}\\fR")
    return [f'.SY "{_text(command.name)}"', *words, ".YS"]


def _options(options: Sequence[Option]) -> Iterator[str]:
    for option in options:
        flags = ", ".join(f"\\fB{_text(flag)}\\fR" for flag in option.flags)
        if option.value is not None:
            flags += " " + "|".join(f"\\fI{_text(v)}\\fR" for v in option.value.split("|"))
        yield ".TP"
        yield flags
        yield _text(_sentence(option.help))


def _items(section: Section) -> Iterator[str]:
    for term, text in section.items:
        yield ".TP"
        yield f"\\fB{_text(term)}\\fR"
        yield _text(_sentence(text))


def _text(text: str) -> str:
    """Plain text as roff: backslashes and minus signs escaped, `code` in bold, and no
    line that starts with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    return "\\&" + text if text[:1] in (".", "'") else text


def _sentence(text: str) -> str:
    """A help text as a sentence: capitalised, with its full stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


# Markdown ---------------------------------------------------------------------------


def markdown(program: Command) -> str:
    """docs/commands.md: the same manual as a page of the documentation."""
    out = [
        "# Command reference",
        "",
        "<!-- Generated from veylor/cliparser.py's parser by packaging/gen_cli_files.py: edit the help",
        "texts there, then run `python packaging/gen_cli_files.py`. -->",
        "",
        _md(program.description),
        "",
        "The same text is printed by `veylor --help` and `veylor COMMAND --help`, and is in the man",
        "page (`man veylor`). `veylor completion bash|zsh|fish` prints a shell completion script",
        "(packaging/install.sh installs them, and the man page).",
        "",
        "| command | what it does |",
        "| --- | --- |",
    ]
    for command in _commands(program):
        summary = "run the router (the same as `veylor run`)" if command is program else command.summary
        out.append(f"| [`{command.name}`](#{_anchor(command.name)}) | {_md(summary)} |")
    for command in _commands(program):
        out += ["", f"## {command.name}", "", "```", _wrap(command.name, command.synopsis()), "```", ""]
        if command is not program:
            out += [_md(_sentence(command.summary)), ""]
            if command.description:
                out += [_md(command.description), ""]
        out += ["| option | |", "| --- | --- |"]
        for option in command.options if command is program else [o for o in command.options if not o.final]:
            value = "" if option.value is None else " " + option.value
            flags = ", ".join(f"`{flag}`" for flag in option.flags[:-1])
            flags += (", " if flags else "") + _md_code(option.flags[-1] + value)
            out.append(f"| {flags} | {_md(_sentence(option.help))} |")
        for argument in command.arguments:
            out.append(f"| {_md_code(argument.name)} | {_md(_sentence(argument.help))} |")
        if command.exit_codes:
            out += ["", "Exit status:", ""]
            out += [f"- {code}: {_md(text)}" for code, text in command.exit_codes]
    out += ["", "## Exit status", "", _md(USAGE_ERROR) + " Each command's other codes are listed with it."]
    for section in program.sections:
        out += ["", f"## {section.title.capitalize()}", ""]
        out += [f"- `{term}`: {_md(text)}" for term, text in section.items]
    return "\n".join(out) + "\n"


def _wrap(name: str, words: Sequence[str], width: int = 88) -> str:
    lines = [name]
    for word in words:
        if len(lines[-1]) + 1 + len(word) > width:
            lines.append(" " * (len(name) + 1) + word)
        else:
            lines[-1] += " " + word
    return "\n".join(lines)


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def _md(text: str) -> str:
    """Prose for a Markdown page (and its tables): outside `code`, the characters that
    would start emphasis, an HTML tag or a new table cell are escaped; inside, ``|``."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: no code in it
        parts = [text]
    return "`".join(
        p.replace("|", "\\|") if i % 2 else re.sub(r"([*<|])", r"\\\1", p) for i, p in enumerate(parts)
    )


def _md_code(text: str) -> str:
    return "`" + text.replace("|", "\\|") + "`"


def main(argv: Sequence[str] | None = None) -> int:
    from .cliparser import build_parser

    parser = argparse.ArgumentParser(prog="python -m veylor.manpage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="docs/commands.md instead of the man page")
    args = parser.parse_args(argv)
    program = read(build_parser())
    sys.stdout.write(markdown(program) if args.markdown else roff(program))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
