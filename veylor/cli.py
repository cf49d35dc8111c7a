"""The ``veylor`` command: ``run`` (the default), ``check``, ``reload``, ``top``, ``status``,
``health``, ``demo``, ``completion``.

Veylor 1.x flags keep their meaning: ``-c/--config``, ``-v/--verbose``, ``--tui``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__
from .cliparser import DEFAULT_CONFIGS, build_parser, default_config
from .observe.logs import setup_logging

# Each command imports what it needs, when it runs: `veylor completion`, `--help` and
# `--version` need no configuration code, `check` and the admin clients no runtime
# (tests/unit/test_cli_imports.py holds them to it).


log = logging.getLogger("veylor")


def no_config(args: argparse.Namespace) -> str | None:
    """What to say when there is no configuration file to read, or None if there is one."""
    if args.config is not None:
        if os.path.exists(args.config):
            return None
        return f"{args.config}: no such file (given with -c); check the path"
    if any(os.path.exists(c) for c in DEFAULT_CONFIGS):
        return None
    tried = " and ".join(os.path.abspath(c) if c == "config.yaml" else c for c in DEFAULT_CONFIGS)
    return (
        f"no configuration file: tried {tried}. Give one with -c FILE; start from "
        "config.yaml.example (every key, with its default, in Veylor's source); "
        "or see Veylor run with `veylor demo`"
    )


def cmd_check(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .report import config_json, config_text, plural, problems_json

    missing = no_config(args)
    if missing is not None and not args.against:
        print(missing, file=sys.stderr)
        return 1
    path = args.config or default_config()
    if args.against:
        return _check_against(args.against, path, args.json)
    try:
        config = load_config(path)
    except ConfigError as exc:
        if args.json:
            print(json.dumps(problems_json(exc.problems, exc.warnings), indent=2))
        else:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            for warning in exc.warnings:
                print(warning, file=sys.stderr)
            n = len(exc.problems)
            print(f"{path}: {plural(n, 'problem')} found", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(config_json(config), indent=2))
    else:
        print(config_text(config))
    return 0


def _check_against(old_path: str, new_path: str, as_json: bool) -> int:
    from .config import ConfigError, load_config
    from .graph import build_graph, diff
    from .report import plural

    configs = []
    for path in (old_path, new_path):
        try:
            configs.append(load_config(path))
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            print(f"{path}: {plural(len(exc.problems), 'problem')}; no plan", file=sys.stderr)
            return 1
    plan = diff(build_graph(configs[0]), build_graph(configs[1]))
    if as_json:
        print(json.dumps({"ok": True, **plan.as_dict()}, indent=2))
    else:
        print(f"A reload from {old_path} to {new_path} would:")
        for line in plan.describe():
            print(f"  {line}")
    return 0


def _tui_refused(args: argparse.Namespace) -> int | None:
    """With ``--tui``: 2 and why, when the TUI cannot run here (no Textual, no terminal)."""
    if not getattr(args, "tui", False):
        return None
    from .tui.run import unavailable

    why = unavailable()
    if why is None:
        return None
    print(f"veylor --tui: {why}", file=sys.stderr)
    return 2


def cmd_run(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .report import SHAPE_TEXT, plural
    from .server import Server, run_loop

    refused = _tui_refused(args)
    if refused is not None:
        return refused
    missing = no_config(args)
    if missing is not None:
        log.error("%s", missing)
        return 1
    path = args.config or default_config()
    try:
        server = Server.load(path, watch=args.watch)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        log.error("%s: %s in the configuration; not starting", path, plural(len(exc.problems), "problem"))
        return 1
    config = server.config
    for warning in config.warnings:
        log.warning("%s", warning)
    log.info("veylor %s: configuration %s (%s)", __version__, path, SHAPE_TEXT[config.shape])
    if getattr(args, "tui", False):
        from .tui.run import in_process

        return run_loop(lambda: server.serve(on_ready=in_process))
    return run_loop(server.serve)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .server import run_loop

    refused = _tui_refused(args)
    if refused is not None:
        return refused
    return run_loop(lambda: run_demo(args.port, args.rate, tui=getattr(args, "tui", False)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` asks for; its exit status. A reader that stops reading what
    a command writes (``veylor status | head -1``) ends it quietly, with 0: it had what
    it wanted."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # (here, not at exit: a pipe closed meanwhile is caught)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # (the interpreter's own flush at exit: quiet too)
        os.close(devnull)
        return 0
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.trace_frames, args.log_format)
    command = args.command or "run"
    if command == "completion":
        from .completion import script

        sys.stdout.write(script(args.shell, parser))
        return 0
    if command == "check":
        return cmd_check(args)
    if command == "top":
        from .tui.run import attached, unavailable

        why = unavailable("top")
        if why is not None:
            print(f"veylor top: {why}", file=sys.stderr)
            return 2
        return attached(
            None if args.admin else (args.config or default_config()),
            args.admin,
            args.token_file,
            read_only=args.read_only,
        )
    if command in ("reload", "status", "health"):
        from .observe import client

        config = None if args.admin else (args.config or default_config())
        if command == "reload":
            return client.reload(config, args.admin, args.dry_run, args.json, args.token_file)
        if command == "health":
            return client.health(config, args.admin, args.token_file)
        return client.status(config, args.admin, args.json, args.token_file)
    if command == "demo":
        return cmd_demo(args)
    return cmd_run(args)
