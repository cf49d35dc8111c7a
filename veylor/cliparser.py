"""The ``veylor`` command line: its parser (every command, option and exit status) is
the one source of ``veylor --help``, the man page, the shell completions and
docs/commands.md (:mod:`veylor.clispec` reads it). The commands themselves are in
:mod:`veylor.cli`."""

from __future__ import annotations

import argparse
import os

from . import __version__

DEFAULT_CONFIGS = ("config.yaml", "/etc/veylor/config.yaml")
SHELLS = ("bash", "zsh", "fish")  # veylor completion SHELL: veylor.completion writes each


def default_config() -> str:
    """``./config.yaml`` when present, else ``/etc/veylor/config.yaml``."""
    for candidate in DEFAULT_CONFIGS:
        if os.path.exists(candidate):
            return candidate
    return DEFAULT_CONFIGS[-1]


# What argparse has no place for, put on the parser for veylor.clispec, which reads it
# for the completions, the man page and docs/commands.md (and is not imported here).


def _takes_file(action: argparse.Action) -> argparse.Action:
    """Mark ``action``'s value as a file name: the shell completions offer files for it."""
    action.completes = "file"  # type: ignore[attr-defined]
    return action


def _exit_status(parser: argparse.ArgumentParser, *codes: tuple[int, str]) -> None:
    """Give the command of ``parser`` its exit codes: the end of its ``--help``, and the
    manual's EXIT STATUS."""
    parser.exit_codes = codes  # type: ignore[attr-defined]
    parser.epilog = "exit status: " + "; ".join(f"{code} {text}" for code, text in codes) + "."


def _add_section(parser: argparse.ArgumentParser, title: str, *items: tuple[str, str]) -> None:
    """Add a section of the manual (FILES, ENVIRONMENT, SIGNALS): (term, what it is) pairs."""
    parser.sections = (*getattr(parser, "sections", ()), (title, items))  # type: ignore[attr-defined]


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    _takes_file(
        parser.add_argument(
            "-c",
            "--config",
            metavar="CONFIG",
            default=default,
            help="the main configuration file (default: ./config.yaml if present, else "
            "/etc/veylor/config.yaml); drop-in files come from the `include:` it names, routes.d/*.yaml "
            "beside it by default",
        )
    )
    _verbosity(parser, suppress)


def _log_format(parser: argparse.ArgumentParser, suppress: bool) -> None:
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=argparse.SUPPRESS if suppress else "text",
        help="the log lines' format: text (the default), or json, one object per line with time, level, logger, message and "
        "the source, endpoint, route and client it is about (for journald, podman logs, log shippers)",
    )


def _verbosity(parser: argparse.ArgumentParser, suppress: bool) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="log more: once (-v) for Veylor's debug detail (connections, reload steps, policy "
        "decisions), twice (-vv) for the WebSocket protocol too (handshakes, frames). Secrets are "
        "masked at every level",
    )


def _admin_options(parser: argparse.ArgumentParser) -> None:
    _common(parser, suppress=True)
    parser.add_argument(
        "--admin",
        metavar="URL",
        help="the admin endpoint to ask: http://HOST:PORT, HOST:PORT or unix:/PATH (default: the "
        "`admin:` of the configuration's main file)",
    )
    _takes_file(
        parser.add_argument(
            "--token-file",
            metavar="PATH",
            help="read the token to send from PATH (its first line; sent as Authorization: Bearer) for an "
            "admin endpoint with auth; default: $VEYLOR_ADMIN_TOKEN, else one of the configuration's "
            "admin.auth tokens if this user can read it",
        )
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
        help="do not watch the files (SIGHUP and veylor reload still reload)",
    )


def _tui_option(parser: argparse.ArgumentParser, suppress: bool) -> None:
    parser.add_argument(
        "--tui",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show the live terminal UI in this terminal while Veylor runs: the routing graph, sources, "
        "endpoints and clients with their rates (quitting it stops Veylor in order)",
    )


def _trace_option(parser: argparse.ArgumentParser, suppress: bool) -> None:
    parser.add_argument(
        "--trace-frames",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="log one line per message received from a source or sent to it (payloads shortened; "
        "on_connect payloads and secrets masked). Heavy on a real feed: for debugging",
    )


RUN_DESCRIPTION = (
    "Bind every endpoint, then connect every source, and log `ready:` once serving. Sources "
    "reconnect with exponential backoff and jitter; clients stay connected across upstream "
    "reconnects. A change to the configuration files is applied as it is saved (--watch), on "
    "SIGHUP, or by `veylor reload`: only what changed is touched, and a configuration with "
    "problems is refused while the running one stays. SIGTERM or SIGINT stop Veylor in order "
    "within 5 seconds."
)
RUN_EXITS = (
    (0, "stopped in order by SIGTERM or SIGINT (or by quitting the TUI)"),
    (
        1,
        "no configuration file, problems in it (each printed with its file, line and key), or an "
        "endpoint that cannot be bound (the endpoint and the address are named)",
    ),
    (2, "--tui without a terminal"),
)
ADMIN_UNREACHABLE = (
    "Veylor cannot be reached (the address tried is printed), the configuration names no admin "
    "endpoint, or the admin endpoint refused the request (a token, admin.read_only: it says which)"
)


def build_parser() -> argparse.ArgumentParser:
    """The ``veylor`` command line: its --help, and through :mod:`veylor.clispec` the
    shell completions, the man page and docs/commands.md."""
    parser = argparse.ArgumentParser(
        prog="veylor",
        description="Veylor is a declarative WebSocket fan-out router: it keeps one connection to each "
        "upstream feed (a source) and delivers every message to each local client routed to it, over "
        "WebSocket and Unix socket endpoints, as a YAML configuration declares; client messages go back "
        "upstream where a route allows it. Without a command, veylor runs the router: the options "
        "below are those of veylor run.",
    )
    parser.summary = "declarative WebSocket fan-out router"  # type: ignore[attr-defined]  # the man page's NAME
    parser.add_argument("--version", action="version", version=f"veylor {__version__}")
    _common(parser, suppress=False)
    _tui_option(parser, suppress=False)
    _watch_options(parser, suppress=False)
    _trace_option(parser, suppress=False)
    _log_format(parser, suppress=False)
    _exit_status(parser, *RUN_EXITS)
    parser.epilog = (
        f"{parser.epilog} Signals: SIGHUP reloads the configuration; SIGTERM and SIGINT stop Veylor "
        "in order. Each command's options and exit status: veylor COMMAND --help; files and "
        "environment: man veylor."
    )
    _manual_sections(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the router (the default command)",
        description=RUN_DESCRIPTION,
    )
    _common(run, suppress=True)
    _tui_option(run, suppress=True)
    _watch_options(run, suppress=True)
    _trace_option(run, suppress=True)
    _log_format(run, suppress=True)
    _exit_status(run, *RUN_EXITS)

    check = sub.add_parser(
        "check",
        help="validate the configuration and print the routing graph",
        description="Load and validate the main file and every drop-in, and print the routing graph: "
        "sources, endpoints, routes with their filters, the file and line each came from, and what each "
        "endpoint (the admin endpoint too) is exposed to. Otherwise print every problem found, each with "
        "its file, line and key, what is wrong and, where it is obvious, the fix. Run it before "
        "`systemctl reload veylor`; the systemd unit runs it as ExecStartPre=.",
    )
    _common(check, suppress=True)
    check.add_argument(
        "--json",
        action="store_true",
        help="print the graph (or the problems) as JSON; with --against, the plan with the runtime's "
        "steps in the order it would take them",
    )
    _takes_file(
        check.add_argument(
            "--against",
            metavar="OLD_CONFIG",
            help="print the plan a reload from OLD_CONFIG to CONFIG would apply (what is added, removed, "
            "restarted, rewired), without running anything",
        )
    )
    _exit_status(
        check,
        (0, "the configuration is valid (its graph, or the plan, is printed)"),
        (1, "problems were found (each is printed), or there is no configuration file"),
    )

    reload = sub.add_parser(
        "reload",
        help="reload a running Veylor through its admin endpoint and wait for the result",
        description="POST /reload to the admin endpoint named by the configuration (or --admin) and wait: "
        "print what changed and the steps applied, or every problem (file, line, key); a refused reload "
        "leaves the running configuration as it was. This is what ExecReload= needs: kill -HUP returns "
        "before the reload is done and cannot fail.",
    )
    _admin_options(reload)
    reload.add_argument("--dry-run", action="store_true", help="print what a reload would do; change nothing")
    reload.add_argument("--json", action="store_true", help="print the admin endpoint's answer as JSON")
    _exit_status(
        reload,
        (0, "applied, or nothing to change"),
        (1, "refused or not applied (the running configuration stays)"),
        (2, ADMIN_UNREACHABLE),
    )

    top = sub.add_parser(
        "top",
        help="the terminal UI of a running Veylor (the systemd unit, the container), through its admin endpoint",
        description="Show the live terminal UI of a running Veylor through its admin endpoint: the "
        "routing graph with per-edge rates, sources, endpoints, clients, the last reload. Quitting it "
        "leaves Veylor running; when Veylor does not answer, it says STALE, keeps the last state on the "
        "screen and keeps trying. With --read-only it only looks. Needs a terminal.",
    )
    _admin_options(top)
    top.add_argument(
        "--read-only",
        action="store_true",
        help="look only: no reload (r) and no tap (m), whatever the admin endpoint allows",
    )
    _exit_status(
        top,
        (0, "quit"),
        (2, "no terminal, or no admin endpoint to ask (the configuration names none and no --admin)"),
    )

    status = sub.add_parser(
        "status",
        help="the state of a running Veylor: sources, endpoints, edges, rates (from its admin endpoint)",
        description="Print one screen of a running Veylor's state from its admin endpoint: each "
        "source's state and message rate, each endpoint's clients and deliveries, each edge's messages "
        "(rates over one second).",
    )
    _admin_options(status)
    status.add_argument("--json", action="store_true", help="print the whole state view (/graph) as JSON")
    _exit_status(status, (0, "the state is printed"), (2, ADMIN_UNREACHABLE))

    health = sub.add_parser(
        "health",
        help="exit 0 if a running Veylor's admin endpoint answers /healthz, 1 if not (a container's HEALTHCHECK)",
        description="GET /healthz from the admin endpoint named by the configuration (or --admin), within 5 s.",
    )
    _admin_options(health)
    _exit_status(
        health,
        (0, "it answered, or the configuration has no admin endpoint (nothing to ask)"),
        (1, "it did not answer, or not as Veylor does"),
    )

    demo = sub.add_parser(
        "demo",
        help="run a built-in demo: a synthetic ticker upstream relayed to WebSocket and Unix clients",
        description="Start a synthetic ticker upstream on 127.0.0.1 and a Veylor relaying it, with no "
        "feed or configuration of your own: every trade on ws://127.0.0.1:PORT/ticker (what you type "
        "there goes upstream and is echoed back), BTCUSDT trades only on /btc (a JSON filter), every "
        "trade on a Unix socket in Veylor 1.x framing, and an admin endpoint. It prints the commands "
        "to try each (clients, check, status, top, metrics), then runs until Ctrl-C.",
    )
    _verbosity(demo, suppress=True)
    _trace_option(demo, suppress=True)
    _tui_option(demo, suppress=True)
    demo.add_argument(
        "--port", type=int, default=8765, help="the relay's WebSocket port on 127.0.0.1 (default 8765)"
    )
    demo.add_argument(
        "--rate", type=float, default=10.0, help="messages per second from the demo upstream (default 10)"
    )
    _exit_status(
        demo,
        (0, "stopped by Ctrl-C (SIGINT) or SIGTERM"),
        (1, "the port is taken (it says so: try --port)"),
        (2, "--tui without a terminal"),
    )

    completion = sub.add_parser(
        "completion",
        help="print the shell completion script for bash, zsh or fish",
        description="Print a script that completes veylor's commands, options, their values and file "
        "names in SHELL, generated from veylor's own command line. packaging/install.sh and the wheel "
        "install them where each shell looks; by hand: "
        "bash: `veylor completion bash > /usr/local/share/bash-completion/completions/veylor` (or "
        "`source <(veylor completion bash)` in ~/.bashrc); "
        "zsh: `veylor completion zsh > /usr/local/share/zsh/site-functions/_veylor` (a directory of "
        "$fpath, before compinit); "
        "fish: `veylor completion fish > ~/.config/fish/completions/veylor.fish`.",
    )
    completion.add_argument("shell", metavar="SHELL", choices=SHELLS, help="the shell: bash, zsh or fish")
    _exit_status(completion, (0, "the script is printed"))
    return parser


def _manual_sections(parser: argparse.ArgumentParser) -> None:
    """What the man page and docs/commands.md say beyond the commands and their options."""
    _add_section(
        parser,
        "FILES",
        (
            "./config.yaml",
            "the main configuration file, when it is in the working directory and -c is not given",
        ),
        (
            "/etc/veylor/config.yaml",
            "the main configuration file otherwise (the systemd unit's, the container's)",
        ),
        (
            "/etc/veylor/routes.d/*.yaml",
            "drop-in files of sources, endpoints and routes: the default of the main file's `include:` "
            "(relative to its directory), loaded in lexical order; each is applied as it is saved",
        ),
        (
            "/etc/veylor/veylor.env",
            "the systemd unit's environment file (EnvironmentFile=): variables for ${VAR} in the "
            "configuration, such as secrets, readable by root only",
        ),
        (
            "/run/veylor/",
            "the runtime directory of the systemd unit and the container: the Unix sockets of the "
            "packaged configuration's endpoints, and its admin endpoint, /run/veylor/admin.sock "
            "(veylor health asks it when the configuration cannot be read)",
        ),
    )
    _add_section(
        parser,
        "ENVIRONMENT",
        (
            "VEYLOR_ADMIN_TOKEN",
            "the token that reload, status, top and health send to an admin endpoint with auth, "
            "when --token-file is not given",
        ),
        (
            "${VAR}",
            "a configuration value may be ${VAR} or ${VAR:-default}: read from the environment at each "
            "load; an unset variable without a default is a problem naming it",
        ),
        (
            "NOTIFY_SOCKET",
            "set by systemd for Type=notify: Veylor says READY=1 once its listeners are bound, "
            "RELOADING=1 and READY=1 around a reload, STOPPING=1, and a one-line STATUS=",
        ),
        (
            "WATCHDOG_USEC",
            "set by systemd with WatchdogSec=: Veylor sends WATCHDOG=1 every half of it from its event "
            "loop, so a stuck loop gets the service restarted",
        ),
        (
            "JOURNAL_STREAM",
            "set by systemd when stderr is the journal: log lines carry no time stamp (the journal has its own)",
        ),
    )
    _add_section(
        parser,
        "SIGNALS",
        (
            "SIGHUP",
            "reload the configuration: load, validate, apply only what changed; a configuration with "
            "problems is refused (each problem logged) and the running one stays. Under --tui it means "
            "the terminal went away: Veylor stops in order, as on SIGTERM",
        ),
        (
            "SIGTERM, SIGINT",
            "stop in order: stop accepting (socket files are removed), close WebSocket clients with 1001 "
            "and Unix clients, close the upstream connections, exit 0; within 5 seconds even when "
            "clients have stopped reading",
        ),
    )
