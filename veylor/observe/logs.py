"""Logging: levels for ``-v``/``-vv``/``--trace-frames``, and secrets kept out of every line.

Two layers keep secrets out of the log, whatever the level:

- **Structure.** websockets' protocol debug lines (``-vv`` only) are rewritten as
  they are emitted: handshake header values are masked except for a short list of
  harmless headers, query values in request lines are masked, and the payload of
  every data frame Veylor sends *upstream* (``on_connect`` messages, client
  messages) is replaced by its size.
- **Known values.** The formatter replaces every known secret (header values, URL
  passwords, secret-looking query values, whole ``on_connect`` payloads) in the
  final text of every line, tracebacks included, with ``***``: a secret that
  reaches a log line by a path nobody thought of is still masked.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..config.model import Config, SourceSpec, redact_url, secret_query_key

MASK = "***"
MIN_SECRET = 4  # shorter values are masked only where structure says they are secret

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
    """The secret values known to this process (added as configurations load; never
    forgotten, so a line about an old configuration is masked too)."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._ordered: tuple[str, ...] = ()

    def add(self, values: Iterable[str]) -> None:
        new = {v for v in values if len(v) >= MIN_SECRET} - self._values
        if new:
            self._values |= new
            # Longest first: a secret that contains another is masked whole.
            self._ordered = tuple(sorted(self._values, key=len, reverse=True))

    def mask(self, text: str) -> str:
        for value in self._ordered:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def __contains__(self, value: str) -> bool:
        return value in self._values

    def clear(self) -> None:
        self._values.clear()
        self._ordered = ()


SECRETS = Secrets()


def secrets_of(config: Config) -> set[str]:
    """Every value of ``config`` that must never reach a log line."""
    out: set[str] = set()
    for source in config.sources.values():
        out.update(_source_secrets(source))
    return out


@functools.lru_cache(maxsize=8192)  # a reload of a thousand unchanged sources: no work
def _source_secrets(source: SourceSpec) -> frozenset[str]:
    out: set[str] = set()
    for _, value in source.headers:
        out.add(value)
        scheme, _, credentials = value.partition(" ")
        if credentials and scheme.isalpha():  # "Bearer TOKEN": the token alone is secret too
            out.add(credentials.strip())
    for message in source.on_connect:
        data = message.data
        out.add(data if isinstance(data, str) else data.decode("utf-8", "replace"))
    out.update(url_secrets(source.url))
    return frozenset(out)


def url_secrets(url: str) -> set[str]:
    """The password and the secret-looking query values of ``url``."""
    out: set[str] = set()
    try:
        parts = urlsplit(url)
        if parts.password:
            out.add(parts.password)
        out.update(v for k, v in parse_qsl(parts.query) if v and secret_query_key(k))
    except ValueError:
        pass
    return out


def remember(config: Config) -> None:
    """Register ``config``'s secrets with the log formatter (call before using it)."""
    SECRETS.add(secrets_of(config))


class RedactingFormatter(logging.Formatter):
    """A formatter whose output never contains a known secret."""

    def format(self, record: logging.LogRecord) -> str:
        return SECRETS.mask(super().format(record))


class WebsocketsRedactor(logging.Filter):
    """Rewrites websockets' protocol debug records (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg, args = record.msg, record.args
        if not isinstance(args, tuple) or not args or not isinstance(msg, str):
            return True
        if msg in ("> %s: %s", "< %s: %s") and len(args) == 2:
            key = str(args[0])
            if key.lower() not in SAFE_HEADERS:
                record.args = (key, MASK)
        elif msg.endswith("GET %s HTTP/1.1") and len(args) == 1:
            record.args = (redact_url(str(args[0])),)
        elif msg == "> %s" and record.name == UPSTREAM_LOGGER:
            record.args = (_frame_text(args[0]),)
        return True


def _frame_text(frame: Any) -> Any:
    """An outgoing upstream frame without its payload (it may be a credential)."""
    opcode = getattr(frame, "opcode", None)
    data = getattr(frame, "data", None)
    if opcode is None or data is None or opcode.value not in (0, 1, 2):
        return frame  # control frames: no secret
    return f"{opcode.name} [payload not logged, {len(data)} bytes]"


def setup_logging(verbosity: int = 0, trace_frames: bool = False, stream: Any = None) -> logging.Handler:
    """Configure the ``veylor`` loggers.

    ``verbosity`` 0: INFO; 1 (``-v``): Veylor's own DEBUG detail (connections, reload
    steps, policy decisions); 2 (``-vv``): also websockets' protocol debug lines
    (handshakes and frames, masked). ``trace_frames``: one line per message on
    ``veylor.trace``. Returns the handler it installed.
    """
    # Under systemd the journal stamps each line itself.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    handler = logging.StreamHandler(stream or sys.stderr)
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
