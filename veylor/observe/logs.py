"""Logging: levels for ``-v``/``-vv``/``--trace-frames``, and secrets kept out of every line.

Two layers keep secrets out of the log, whatever the level:

- **Structure.** websockets' protocol debug lines (``-vv`` only) are rewritten as
  they are emitted: handshake header values are masked except for a short list of
  harmless headers, query values in request lines are masked, and the payload of
  every data frame Veylor sends *upstream* (``on_connect`` messages, client
  messages) is replaced by its size.
- **Known values.** The formatter replaces every known secret of 8 characters or
  more (header values, URL credentials, secret-looking query values, whole
  ``on_connect`` payloads) in the final text of every line, tracebacks included,
  with ``***``: a secret that reaches a log line by a path nobody thought of is
  still masked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import re2

from ..config.common import redact_url
from ..config.model import Config
from ..printable import printable

if TYPE_CHECKING:
    from ..graph import Graph

MASK = "***"
MIN_SECRET = 8  # shorter values are masked only where structure says they are secret (masked
# everywhere, a header "X-Client: veylor" would blank every logger name)

UPSTREAM_LOGGER = "veylor.websockets.upstream"  # websockets' logger for source connections
DOWNSTREAM_LOGGER = "veylor.websockets.downstream"  # ... and for client connections
TRACE_LOGGER = "veylor.trace"  # --trace-frames: one line per message

# Handshake headers whose values are never secret (compared lowercased).
SAFE_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-version",
        "sec-websocket-key",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "user-agent",
        "server",
        "date",
        "content-type",
        "content-length",
        "origin",
    }
)


class Secrets:
    """The secret values of the running configuration and of the one before it (lines
    about connections of the previous generation are masked too).

    Secrets of 16 characters or more without spaces (tokens, API keys, passwords:
    nearly all of them) are found by their first 16 characters: each run of non-space
    characters of a line is read window by window, each window looked up in a dict.
    The cost is the line's length, whatever the number of secrets and their lengths (a
    tokens file may hold thousands). The others (shorter ones, header values with a
    space) are matched with one RE2 alternation. One RE2 alternation of everything
    outgrew RE2's DFA at 20,000 tokens: 28 ms per line on the event loop, and seconds
    to compile, with the GIL held.
    """

    def __init__(self) -> None:
        self._current: frozenset[str] = frozenset()
        self._previous: frozenset[str] = frozenset()
        self._values: frozenset[str] = frozenset()
        self._pattern: Any = None
        self._by_prefix: dict[str, tuple[str, ...]] = {}  # first PREFIX characters -> longest first

    def update(self, values: Iterable[str]) -> None:
        """Make ``values`` the current generation's secrets."""
        current = frozenset(v for v in values if len(v) >= MIN_SECRET)
        if current == self._current:
            return
        self._previous, self._current = self._current, current
        self._values = self._previous | self._current
        by_prefix: dict[str, list[str]] = {}
        rest = []
        for value in self._values:
            if len(value) >= PREFIX and not _SPACE.search(value):
                by_prefix.setdefault(value[:PREFIX], []).append(value)
            else:
                rest.append(value)
        self._by_prefix = {k: tuple(sorted(v, key=len, reverse=True)) for k, v in by_prefix.items()}
        self._pattern = _alternation(frozenset(rest)) if rest else None

    def mask(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        if self._by_prefix:
            text = _RUNS.sub(self._mask_run, text)
        return text

    def _mask_run(self, match: re.Match[str]) -> str:
        run = match.group()
        index = self._by_prefix
        out = []
        start = i = 0
        end = len(run) - PREFIX
        while i <= end:
            found = index.get(run[i : i + PREFIX])
            if found is not None:
                value = next((v for v in found if run.startswith(v, i)), None)
                if value is not None:
                    out.append(run[start:i])
                    out.append(MASK)
                    i = start = i + len(value)
                    continue
            i += 1
        if not out:
            return run
        out.append(run[start:])
        return "".join(out)

    def __contains__(self, value: str) -> bool:
        return value in self._values


PREFIX = 16  # secrets at least this long (and without spaces) are found by their first characters
_SPACE = re.compile(r"\s")
_RUNS = re.compile(rf"\S{{{PREFIX},}}")


def _alternation(values: frozenset[str]) -> Any:
    """One RE2 pattern matching any of ``values``, longest first where they overlap."""
    options = re2.Options()
    options.log_errors = False
    options.never_capture = True
    options.max_mem = 256 << 20  # thousands of literals
    ordered = sorted(values, key=len, reverse=True)
    return re2.compile("|".join(re2.escape(v) for v in ordered), options)


SECRETS = Secrets()


def secrets_of(config: Config | Graph) -> set[str]:
    """Every value of ``config`` that must never reach a log line (each component kind
    knows its own: ``secrets()``)."""
    out: set[str] = set()
    for spec in (*config.sources.values(), *config.endpoints.values()):
        out.update(_secrets(spec))
    if config.admin is not None:
        out.update(config.admin.secrets())
    return out


def _secrets(spec: Any) -> frozenset[str]:
    return spec.secrets()  # type: ignore[no-any-return]


def remember(config: Config | Graph) -> None:
    """Make ``config``'s secrets the ones the log formatter masks (with the previous
    configuration's); call it before using the configuration."""
    SECRETS.update(secrets_of(config))


class RedactingFormatter(logging.Formatter):
    """A formatter whose output never contains a known secret, nor a control character
    but newline and tab (an upstream's close reason could otherwise write escape
    sequences to the operator's terminal)."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(SECRETS.mask(super().format(record)), lines=True)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message`` (secrets masked, traceback included), and the components the line is
    about, taken from Veylor's wording ("source NAME", "endpoint NAME: client ADDR", ...):
    ``source``, ``endpoint``, ``route``, ``listener``, ``client``."""

    def format(self, record: logging.LogRecord) -> str:
        message = SECRETS.mask(record.getMessage())
        if record.exc_info:
            message += "\n" + SECRETS.mask(self.formatException(record.exc_info))
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for m in _SUBJECT.finditer(message):
            out.setdefault(m.group(1), m.group(2))
        client = _CLIENT.search(message)
        if client is not None:
            out["client"] = client.group(1)
        return json.dumps(out, ensure_ascii=False)


_SUBJECT = re.compile(r"\b(source|endpoint|route|listener) (\S+?):(?=\s|$)")  # "listener [::1]:8765: ..."
_CLIENT = re.compile(r"\bclient ((?:\d|\[|unix#)[^\s,;]*)")  # an address, or a Unix client's number


class WebsocketsRedactor(logging.Filter):
    """Rewrites websockets' protocol debug records (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._errors_at = -ERROR_INTERVAL  # when a client's connection last logged an error
        self._errors_held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == DOWNSTREAM_LOGGER and record.levelno >= logging.ERROR:
            # websockets' own errors on a client's connection ("unexpected internal error"
            # for some malformed requests): a client can cause one per connection. A
            # warning, at most one per ERROR_INTERVAL, with the count of those held back.
            now = time.monotonic()
            if now - self._errors_at < ERROR_INTERVAL:
                self._errors_held += 1
                return False
            self._errors_at = now
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            if self._errors_held and isinstance(record.msg, str):
                record.msg += f" ({self._errors_held} more since the last report)"
                self._errors_held = 0
        if record.exc_info and record.name == DOWNSTREAM_LOGGER:
            # A client's request websockets could not parse: the exception quotes the raw
            # request (its token too, percent-encoded or not). Its type is enough.
            exc = record.exc_info[1]
            record.exc_info = None
            record.exc_text = None
            if exc is not None and isinstance(record.msg, str):
                record.msg += f" ({type(exc).__name__}; the request is not logged: it may hold a token)"
        msg, args = record.msg, record.args
        if not isinstance(args, tuple) or not args or not isinstance(msg, str):
            return True
        if msg in ("> %s: %s", "< %s: %s") and len(args) == 2:
            key = str(args[0])
            if key.lower() not in SAFE_HEADERS:
                record.args = (key, MASK)
        elif msg.endswith("GET %s HTTP/1.1") and len(args) == 1:
            record.args = (redact_url(str(args[0])),)
        elif msg == "< %s %s %s" and len(args) == 3:  # a client's request line (websockets >= 14)
            record.args = (args[0], _path_only(str(args[1])), args[2])
        elif msg == "> %s" and record.name == UPSTREAM_LOGGER:
            record.args = (_frame_text(args[0]),)
        return True


ERROR_INTERVAL = 10.0  # seconds between two reports of websockets' errors on client connections


def _path_only(target: str) -> str:
    """A client's request target with every query value masked: clients put tokens there
    (``?token=``: browsers cannot set headers), and other secrets of their own."""
    path, sep, query = target.partition("?")
    if not sep:
        return path
    masked = "&".join(f"{k}={MASK}" if eq else k for k, eq, _ in (p.partition("=") for p in query.split("&")))
    return f"{path}?{masked}"


def _frame_text(frame: Any) -> Any:
    """An outgoing upstream frame without its payload (it may be a credential)."""
    opcode = getattr(frame, "opcode", None)
    data = getattr(frame, "data", None)
    if opcode is None or data is None or opcode.value not in (0, 1, 2):
        return frame  # control frames: no secret
    return f"{opcode.name} [payload not logged, {len(data)} bytes]"


def setup_logging(
    verbosity: int = 0, trace_frames: bool = False, log_format: str = "text", stream: Any = None
) -> logging.Handler:
    """Configure the ``veylor`` loggers.

    ``verbosity`` 0: INFO; 1 (``-v``): Veylor's own DEBUG detail (connections, reload
    steps, policy decisions); 2 (``-vv``): also websockets' protocol debug lines
    (handshakes and frames, masked). ``trace_frames``: one line per message on
    ``veylor.trace``. ``log_format`` "json": one JSON object per line
    (:class:`JsonFormatter`). Returns the handler it installed.
    """
    # Under systemd the journal stamps each line itself.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter(f"{stamp}%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # third-party libraries: INFO and up, whatever -v says
    logging.getLogger("veylor").setLevel(logging.DEBUG if verbosity >= 1 else logging.INFO)
    ws = logging.getLogger("veylor.websockets")
    ws.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    redactor = WebsocketsRedactor()
    for name in (UPSTREAM_LOGGER, DOWNSTREAM_LOGGER):
        lg = logging.getLogger(name)
        if not any(isinstance(f, WebsocketsRedactor) for f in lg.filters):
            lg.addFilter(redactor)
    logging.getLogger("veylor.demo.upstream").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    # watchfiles says "1 change detected" at INFO for every change it sees; Veylor's own
    # reload lines say what changed and what it did.
    logging.getLogger("watchfiles").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    logging.getLogger(TRACE_LOGGER).setLevel(logging.DEBUG if trace_frames else logging.WARNING)
    return handler


def tracing() -> bool:
    """Whether ``--trace-frames`` is on (checked when a connection starts, not per message)."""
    return logging.getLogger(TRACE_LOGGER).isEnabledFor(logging.DEBUG)


def preview(data: bytes, limit: int = 120) -> str:
    """A short printable rendering of a payload for trace lines."""
    text = data[:limit].decode("utf-8", "replace")
    text = text.encode("unicode_escape").decode("ascii")
    return text + ("..." if len(data) > limit else "")
