"""Veylor's command line as plain data, read from its argparse parser.

The parser (:func:`veylor.cliparser.build_parser`) is the one source of ``veylor --help``,
the shell completions (:mod:`veylor.completion`), the man page and
``docs/commands.md`` (:mod:`veylor.manpage`). What argparse has no place for, cli.py
puts on the parser as attributes, read here: an action's ``completes`` (``"file"``: its
value is a file name, completion offers files), a parser's ``exit_codes`` ((code,
meaning) pairs, also in its ``--help`` epilog), the program's ``summary`` (the man
page's NAME line) and ``sections`` ((title, ((term, text), ...)) for FILES,
ENVIRONMENT, SIGNALS). cli.py does not import this module: the relay's start does not
pay for it.

argparse keeps the parts of a parser private (``_actions``, the subcommands' help,
mutually exclusive groups, the action classes): :func:`read` is the one place that
reads them, and ``tests/unit/test_clispec.py`` fails loudly if argparse changes them.
Pure: nothing here runs a command or touches a file.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass

FILE = "file"  # an action's ``completes`` when its value is a file name


@dataclass(frozen=True)
class Section:
    """A section of the manual that argparse has no place for."""

    title: str
    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Option:
    """An option of a command: ``-c/--config CONFIG``, ``--json``."""

    flags: tuple[str, ...]
    help: str
    metavar: str | None = None  # None: a flag, it takes no value
    choices: tuple[str, ...] = ()
    file: bool = False  # its value is a file name
    repeat: bool = False  # may be given more than once (-vv)
    final: bool = False  # prints something and exits (--help, --version)
    excludes: tuple[str, ...] = ()  # flags of the options it cannot be given with

    @property
    def value(self) -> str | None:
        """Its value as a synopsis shows it: ``text|json``, ``CONFIG``; None for a flag."""
        if self.metavar is None:
            return None
        return "|".join(self.choices) if self.choices else self.metavar

    @property
    def longest(self) -> str:
        return max(self.flags, key=len)


@dataclass(frozen=True)
class Argument:
    """A positional argument of a command."""

    name: str
    help: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """The program (``path == ("veylor",)``) or one of its subcommands."""

    path: tuple[str, ...]
    summary: str  # one line: the subcommand's help in the program's command list
    description: str
    options: tuple[Option, ...]
    arguments: tuple[Argument, ...] = ()
    exit_codes: tuple[tuple[int, str], ...] = ()
    commands: tuple[Command, ...] = ()
    sections: tuple[Section, ...] = ()

    @property
    def name(self) -> str:
        return " ".join(self.path)

    def synopsis(self) -> list[str]:
        """The words of its usage line: ``[-c CONFIG]``, ``[--watch auto|poll | --no-watch]``,
        ``SHELL``; help and version are left to the manual's text."""
        words: list[str] = []
        done: set[tuple[str, ...]] = set()
        for option in self.options:
            if option.final or option.flags in done:
                continue
            group = [option] + [o for o in self.options if o.flags[0] in option.excludes]
            done.update(o.flags for o in group)
            words.append("[" + " | ".join(_usage(o) for o in group) + "]")
        words.extend(a.name for a in self.arguments)
        return words


def read(parser: argparse.ArgumentParser, path: Sequence[str] = (), summary: str = "") -> Command:
    """The command ``parser`` parses, with its subcommands."""
    path = tuple(path) or (parser.prog,)
    summary = summary or getattr(parser, "summary", "")
    options: list[Option] = []
    arguments: list[Argument] = []
    commands: list[Command] = []
    exclusive: dict[argparse.Action, tuple[str, ...]] = {}
    for group in parser._mutually_exclusive_groups:
        for action in group._group_actions:
            exclusive[action] = tuple(
                o.option_strings[0] for o in group._group_actions if o is not action and o.option_strings
            )
    for action in parser._actions:
        if action.nargs == argparse.PARSER:
            helps = {a.dest: a.help or "" for a in action._choices_actions}  # type: ignore[attr-defined]
            for name, sub in action.choices.items():  # type: ignore[union-attr]
                if name in helps:  # not an alias, not hidden
                    commands.append(read(sub, (*path, name), _expand(helps[name], sub.prog)))
            continue
        if action.help == argparse.SUPPRESS:
            continue
        text = _expand(action.help or "", parser.prog, action)
        choices = tuple(str(c) for c in action.choices or ())
        if not action.option_strings:
            arguments.append(Argument(_metavar(action, action.dest), text, choices))
            continue
        takes = action.nargs != 0
        options.append(
            Option(
                flags=tuple(action.option_strings),
                help=text,
                metavar=_metavar(action, action.dest.upper()) if takes else None,
                choices=choices,
                file=getattr(action, "completes", None) == FILE,
                repeat=isinstance(action, argparse._CountAction | argparse._AppendAction),
                final=isinstance(action, argparse._HelpAction | argparse._VersionAction),
                excludes=exclusive.get(action, ()),
            )
        )
    return Command(
        path=path,
        summary=summary,
        description=_expand(parser.description or "", parser.prog),
        options=tuple(options),
        arguments=tuple(arguments),
        exit_codes=getattr(parser, "exit_codes", ()),
        commands=tuple(commands),
        sections=tuple(Section(title, tuple(items)) for title, items in getattr(parser, "sections", ())),
    )


def short(text: str, limit: int = 80) -> str:
    """The first clause of a help text without its asides, for a completion's one-line
    description: 'print the graph (or the problems) as JSON; with ...' -> 'print the
    graph as JSON'."""
    text = re.sub(r" ?\([^()]*\)", "", text.replace("`", ""))
    clause = re.split(r"; |: |\. ", text, maxsplit=1)[0].rstrip(".")
    if len(clause) > limit:
        clause = clause[: limit - 3].rsplit(" ", 1)[0] + "..."
    return clause


def _usage(option: Option) -> str:
    flag = option.flags[0]
    return flag if option.value is None else f"{flag} {option.value}"


def _metavar(action: argparse.Action, default: str) -> str:
    metavar = action.metavar
    if isinstance(metavar, tuple):
        return " ".join(metavar)
    return metavar or default


def _expand(text: str, prog: str, action: argparse.Action | None = None) -> str:
    """``%(prog)s``, ``%(default)s`` and ``%%`` as argparse's help formatter expands them."""
    if "%" not in text:
        return text
    params = {**vars(action), "prog": prog} if action is not None else {"prog": prog}
    return text % params
