"""``veylor completion bash|zsh|fish``: completion scripts written from the parser.

Each script is generated from :func:`veylor.clispec.read` of the command line, so a new
command, option or choice completes without anyone editing a script: subcommands,
options (long and short), an option's choices (``--log-format text|json``), a
positional's choices (``completion bash|zsh|fish``) and file names for the options
marked with :func:`veylor.clispec.takes_file`. The scripts are static: nothing runs
Python on a key press. The packaged copies (packaging/completions/, in the wheel's
data) are this module's output; ``tests/unit/test_clispec.py`` checks they are current.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator

from .clispec import Command, Option, read, short

HEADER = "# {shell} completion for veylor, generated from its command line by `veylor completion {shell}`"


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for ``shell`` (bash, zsh or fish)."""
    return RENDERERS[shell](read(parser))


def _value_spec(option: Option) -> str | None:
    """How an option's value completes: files, choices (space-separated), anything
    (nothing to offer), or None for a flag."""
    if option.metavar is None:
        return None
    if option.file:
        return "@files"
    if option.choices:
        return " ".join(option.choices)
    return "@any"


# bash -------------------------------------------------------------------------------


def bash(program: Command) -> str:
    """A ``complete -F _veylor veylor`` function. The options' values and each command's
    options are ``case`` tables generated from the parser."""
    commands = [program, *program.commands]
    specs: dict[str, dict[str, list[str]]] = {}  # option -> its value's spec -> commands
    for command in commands:
        for option in command.options:
            spec = _value_spec(option)
            if spec is not None:
                for flag in option.flags:
                    specs.setdefault(flag, {}).setdefault(spec, []).append(_bash_key(program, command))
    values: dict[str, list[str]] = {}  # value spec -> "command option" patterns
    for flag, by_spec in specs.items():
        for spec, keys in by_spec.items():
            # One pattern for an option whose value is the same wherever it is.
            patterns = ["* " + flag] if len(by_spec) == 1 else [f"{key} {flag}" for key in keys]
            values.setdefault(spec, []).extend(patterns)
    value_arms = "\n".join(
        f"        {_bash_patterns(patterns)}) REPLY={_bash_quote(spec)} ;;"
        for spec, patterns in values.items()
    )
    option_arms = "\n".join(
        f"        {_bash_quote(_bash_key(program, c))}) REPLY={_bash_quote(_flags(c))} ;;" for c in commands
    )
    positional_arms = "\n".join(
        f"        {_bash_quote(f'{_bash_key(program, c)} {i}')}) REPLY={_bash_quote(' '.join(a.choices))} ;;"
        for c in commands
        for i, a in enumerate(c.arguments)
        if a.choices
    )
    names = " ".join(c.path[-1] for c in program.commands)
    return f"""\
{HEADER.format(shell="bash")}

# The value of option $2 of command $1 ("" before a command): REPLY is @files, @any
# (nothing to offer), the choices, or empty for an option that takes no value.
_veylor_value()
{{
    case "$1 $2" in
{value_arms}
        *) REPLY= ;;
    esac
}}

# The options of command $1.
_veylor_options()
{{
    case "$1" in
{option_arms}
        *) REPLY= ;;
    esac
}}

# The choices of positional argument $2 (0 for the first) of command $1.
_veylor_positional()
{{
    case "$1 $2" in
{positional_arms or '        "") ;;'}
        *) REPLY= ;;
    esac
}}

_veylor()
{{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev= command= word i=1 arg=0 REPLY
    COMPREPLY=()
    # bash splits --option=value at the '=' (COMP_WORDBREAKS): --option, =, value.
    if [[ $cur == = ]]; then
        cur=
        prev=${{COMP_WORDS[COMP_CWORD-1]}}
    elif (( COMP_CWORD > 1 )) && [[ ${{COMP_WORDS[COMP_CWORD-1]}} == = ]]; then
        prev=${{COMP_WORDS[COMP_CWORD-2]}}
    elif (( COMP_CWORD > 1 )); then
        prev=${{COMP_WORDS[COMP_CWORD-1]}}
    fi
    # The command, and how many of its positional arguments come before the cursor.
    while (( i < COMP_CWORD )); do
        word=${{COMP_WORDS[i]}}
        if [[ $word == -* ]]; then
            if [[ ${{COMP_WORDS[i+1]}} == = ]]; then
                (( i += 2 ))
            else
                _veylor_value "$command" "$word"
                [[ -n $REPLY ]] && (( i += 1 ))
            fi
        elif [[ -z $command && " {names} " == *" $word "* ]]; then
            command=$word
        elif [[ $word != = ]]; then
            (( arg += 1 ))
        fi
        (( i += 1 ))
    done
    if [[ $prev == -* ]]; then
        _veylor_value "$command" "$prev"
        case $REPLY in
            "") ;;
            @any) return 0 ;;
            @files)
                compopt -o filenames 2>/dev/null
                mapfile -t COMPREPLY < <(compgen -f -- "$cur")
                return 0
                ;;
            *)
                mapfile -t COMPREPLY < <(compgen -W "$REPLY" -- "$cur")
                return 0
                ;;
        esac
    fi
    if [[ $cur != -* ]]; then
        if [[ -z $command ]]; then
            mapfile -t COMPREPLY < <(compgen -W "{names}" -- "$cur")
            return 0
        fi
        _veylor_positional "$command" "$arg"
        if [[ -n $REPLY ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$REPLY" -- "$cur")
            return 0
        fi
    fi
    _veylor_options "$command"
    mapfile -t COMPREPLY < <(compgen -W "$REPLY" -- "$cur")
}}

complete -F _veylor veylor
"""


def _bash_key(program: Command, command: Command) -> str:
    return "" if command is program else command.path[-1]


def _flags(command: Command) -> str:
    return " ".join(flag for option in command.options for flag in option.flags)


def _bash_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`") + '"'


def _bash_patterns(patterns: list[str]) -> str:
    return "|".join("*" + _bash_quote(p[1:]) if p.startswith("* ") else _bash_quote(p) for p in patterns)


# zsh --------------------------------------------------------------------------------


def zsh(program: Command) -> str:
    """A ``#compdef veylor`` function for a directory of ``$fpath`` (or ``source``d after
    compinit): ``_arguments`` specs for each command, ``_describe`` for the commands."""
    subcommands = program.commands
    described = "\n".join(
        f"    {_zsh_quote(_zsh_escape(c.path[-1]) + ':' + short(c.summary))}" for c in subcommands
    )
    arms = "\n".join(f"        {c.path[-1]}) _veylor_{_zsh_name(c)} && ret=0 ;;" for c in subcommands)
    functions = "\n\n".join(
        f"_veylor_{_zsh_name(c)}() {{\n    _arguments -s -S \\\n{_zsh_specs(c)}\n}}" for c in subcommands
    )
    return f"""\
#compdef veylor
{HEADER.format(shell="zsh")}

_veylor_commands() {{
    local -a commands=(
{described}
    )
    _describe -t commands 'veylor command' commands
}}

{functions}

_veylor() {{
    local curcontext=$curcontext state state_descr line ret=1
    typeset -A opt_args
    _arguments -C -s -S \\
{_zsh_specs(program)} \\
        '1: :_veylor_commands' \\
        '*:: :->command' && ret=0
    if [[ $state == command ]]; then
        curcontext=${{curcontext%:*:*}}:veylor-$words[1]:
        case $words[1] in
{arms}
        esac
    fi
    return ret
}}

# Autoloaded from $fpath, this file is _veylor's body; sourced, it defines and registers it.
if [[ $funcstack[1] == _veylor ]]; then
    _veylor "$@"
else
    compdef _veylor veylor
fi
"""


def _zsh_name(command: Command) -> str:
    return command.path[-1].replace("-", "_")


def _zsh_specs(command: Command) -> str:
    specs: list[str] = []
    for option in command.options:
        description = "[" + _zsh_escape(short(option.help)) + "]"
        if option.final:
            exclusion = "(- *)"
        elif option.repeat:
            exclusion = "*"
        else:
            exclusion = "(" + " ".join((*option.flags, *option.excludes)) + ")"
        spec = _value_spec(option)
        if spec is None:
            value = ""
        else:
            message = _zsh_escape(option.value or "")
            if spec == "@files":
                action = "_files"
            elif spec == "@any":
                action = " "
            else:
                action = "(" + spec + ")"
            value = f":{message}:{action}"
        flags = [f"{flag}=" if spec is not None and flag.startswith("--") else flag for flag in option.flags]
        if len(flags) == 1:
            specs.append(_zsh_quote(exclusion + flags[0] + description + value))
        else:
            specs.append(
                _zsh_quote(exclusion) + "{" + ",".join(flags) + "}" + _zsh_quote(description + value)
            )
    for index, argument in enumerate(command.arguments, 1):
        action = "(" + " ".join(argument.choices) + ")" if argument.choices else " "
        specs.append(_zsh_quote(f"{index}:{_zsh_escape(argument.name)}:{action}"))
    return " \\\n".join(f"        {s}" for s in specs)


def _zsh_escape(text: str) -> str:
    """Escape what _arguments and _describe read specially in a description or message."""
    return "".join("\\" + c if c in "[]:\\" else c for c in text)


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# fish -------------------------------------------------------------------------------


def fish(program: Command) -> str:
    """``complete -c veylor`` lines: one per command, one per option of each command."""
    subcommands = program.commands
    names = " ".join(c.path[-1] for c in subcommands)
    before = f"not __fish_seen_subcommand_from {names}"
    lines = [
        HEADER.format(shell="fish"),
        "",
        "complete -c veylor -f  # no file names unless said",
    ]
    lines += [
        f"complete -c veylor -n {_fish_quote(before)} -a {c.path[-1]} -d {_fish_quote(short(c.summary))}"
        for c in subcommands
    ]
    lines += _fish_options(program, before)
    for command in subcommands:
        condition = f"__fish_seen_subcommand_from {command.path[-1]}"
        lines += _fish_options(command, condition)
        for argument in command.arguments[:1]:
            if argument.choices:
                done = f"{condition}; and not __fish_seen_subcommand_from {' '.join(argument.choices)}"
                lines.append(
                    f"complete -c veylor -n {_fish_quote(done)} -a {_fish_quote(' '.join(argument.choices))}"
                    f" -d {_fish_quote(short(argument.help))}"
                )
    return "\n".join(lines) + "\n"


def _fish_options(command: Command, condition: str) -> Iterator[str]:
    for option in command.options:
        words = [f"complete -c veylor -n {_fish_quote(condition)}"]
        for flag in option.flags:
            words.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
        spec = _value_spec(option)
        if spec == "@files":
            words.append("-r -F")
        elif spec == "@any":
            words.append("-x")
        elif spec is not None:
            words.append(f"-x -a {_fish_quote(spec)}")
        words.append(f"-d {_fish_quote(short(option.help))}")
        yield " ".join(words)


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


RENDERERS: dict[str, Callable[[Command], str]] = {"bash": bash, "zsh": zsh, "fish": fish}
