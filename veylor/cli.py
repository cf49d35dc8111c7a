"""The ``veylor`` command: ``run`` (the default), ``check``, ``demo``.

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
from .config import ConfigError, load_config
from .graph import build_graph, diff
from .observe.logs import setup_logging
from .report import SHAPE_TEXT, config_json, config_text, plural, problems_json
from .server import Server, run_loop

DEFAULT_CONFIGS = ("config.yaml", "/etc/veylor/config.yaml")

log = logging.getLogger("veylor")


def default_config() -> str:
    """``./config.yaml`` when present, else ``/etc/veylor/config.yaml``."""
    for candidate in DEFAULT_CONFIGS:
        if os.path.exists(candidate):
            return candidate
    return DEFAULT_CONFIGS[-1]


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "-c",
        "--config",
        metavar="CONFIG",
        default=default,
        help="main configuration file (default: ./config.yaml if present, else /etc/veylor/config.yaml)",
    )
    _verbosity(parser, suppress)


def _log_format(parser: argparse.ArgumentParser, suppress: bool) -> None:
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS if suppress else "text",
        help="text (the default), or json: one object per line with time, level, logger, message and "
        "the source, endpoint, route and client it is about (for journald, podman logs, log shippers)",
    )


def _verbosity(parser: argparse.ArgumentParser, suppress: bool) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="-v: Veylor's debug detail (connections, reload steps, policy decisions); "
        "-vv: also the WebSocket protocol (handshakes, frames). Secrets are masked at every level",
    )


def _admin_options(parser: argparse.ArgumentParser) -> None:
    _common(parser, suppress=True)
    parser.add_argument(
        "--admin",
        metavar="URL",
        help="the admin endpoint (http://HOST:PORT or unix:/PATH); default: the `admin:` of the configuration",
    )
    parser.add_argument(
        "--token-file",
        metavar="PATH",
        help="send the token in PATH (its first line) as Authorization: Bearer, for an admin endpoint with "
        "auth; default: $VEYLOR_ADMIN_TOKEN, else one of the configuration's admin.auth tokens if readable",
    )


def _watch_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--watch",
        choices=("auto", "poll"),
        default=argparse.SUPPRESS if suppress else "auto",
        help="reload when the configuration files change: auto (file system notifications, "
        "the default) or poll (for symlink-swapped directories such as Kubernetes ConfigMaps)",
    )
    group.add_argument(
        "--no-watch",
        dest="watch",
        action="store_const",
        const="off",
        default=argparse.SUPPRESS,
        help="do not watch files (SIGHUP still reloads)",
    )


def _trace_option(parser: argparse.ArgumentParser, suppress: bool) -> None:
    parser.add_argument(
        "--trace-frames",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="log one line per message received from a source or sent to it (payloads shortened; "
        "on_connect payloads and secrets masked). Heavy on a real feed: for debugging",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veylor",
        description="Declarative WebSocket fan-out router: one upstream connection, many local clients.",
    )
    parser.add_argument("--version", action="version", version=f"veylor {__version__}")
    _common(parser, suppress=False)
    parser.add_argument("--tui", action="store_true", default=False, help="show the live terminal UI")
    _watch_options(parser, suppress=False)
    _trace_option(parser, suppress=False)
    _log_format(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the router (the default command)")
    _common(run, suppress=True)
    _watch_options(run, suppress=True)
    _log_format(run, suppress=True)
    run.add_argument(
        "--tui", action="store_true", default=argparse.SUPPRESS, help="show the live terminal UI"
    )
    _trace_option(run, suppress=True)

    check = sub.add_parser(
        "check",
        help="validate the configuration and print the routing graph",
        description="Load and validate the main file and every drop-in; print the graph and exit 0, "
        "or print every problem found and exit 1.",
    )
    _common(check, suppress=True)
    check.add_argument("--json", action="store_true", help="print the graph (or the problems) as JSON")
    check.add_argument(
        "--against",
        metavar="OLD_CONFIG",
        help="print the plan a reload from OLD_CONFIG to CONFIG would apply (a dry run)",
    )

    reload = sub.add_parser(
        "reload",
        help="reload a running Veylor through its admin endpoint and wait for the result",
        description="POST /reload to the admin endpoint named by the configuration (or --admin): prints "
        "what changed, or the problems (file, line, key). Exit 0: applied or nothing to change; 1: refused "
        "or not applied (the running configuration stays); 2: Veylor cannot be reached, or refused the request "
        "(a token, admin.read_only). This is what "
        "ExecReload= needs: kill -HUP returns before the reload is done and cannot fail.",
    )
    _admin_options(reload)
    reload.add_argument("--dry-run", action="store_true", help="print what a reload would do; change nothing")
    reload.add_argument("--json", action="store_true", help="print the admin endpoint's answer as JSON")

    top = sub.add_parser(
        "top",
        help="the terminal UI of a running Veylor (the systemd unit, the container), through its admin endpoint",
    )
    _admin_options(top)

    status = sub.add_parser(
        "status",
        help="the state of a running Veylor: sources, endpoints, edges, rates (from its admin endpoint)",
    )
    _admin_options(status)
    status.add_argument("--json", action="store_true", help="print the whole state view (/graph) as JSON")

    health = sub.add_parser(
        "health",
        help="exit 0 if a running Veylor's admin endpoint answers /healthz, 1 if not (a container's HEALTHCHECK)",
        description="GET /healthz from the admin endpoint named by the configuration (or --admin), within 5 s. "
        "Exit 0: it answered; 1: it did not. A configuration without an admin endpoint: 0 (nothing to ask).",
    )
    _admin_options(health)

    demo = sub.add_parser(
        "demo",
        help="run a built-in demo: a synthetic ticker upstream relayed to WebSocket and Unix clients",
    )
    _verbosity(demo, suppress=True)
    _trace_option(demo, suppress=True)
    demo.add_argument(
        "--tui", action="store_true", default=argparse.SUPPRESS, help="show the live terminal UI"
    )
    demo.add_argument(
        "--port", type=int, default=8765, help="relay WebSocket port on 127.0.0.1 (default 8765)"
    )
    demo.add_argument(
        "--rate", type=float, default=10.0, help="demo upstream messages per second (default 10)"
    )
    return parser


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
    configs = []
    for path in (old_path, new_path):
        try:
            configs.append(load_config(path))
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            print(f"{path}: {len(exc.problems)} problem(s); no plan", file=sys.stderr)
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
        log.error("%s: %d problem(s) in the configuration; not starting", path, len(exc.problems))
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

    refused = _tui_refused(args)
    if refused is not None:
        return refused
    return run_loop(lambda: run_demo(args.port, args.rate, tui=getattr(args, "tui", False)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.trace_frames, args.log_format)
    command = args.command or "run"
    if command == "check":
        return cmd_check(args)
    if command == "top":
        from .tui.run import attached, unavailable

        why = unavailable()
        if why is not None:
            print(f"veylor top: {why}", file=sys.stderr)
            return 2
        return attached(
            None if args.admin else (args.config or default_config()), args.admin, args.token_file
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
