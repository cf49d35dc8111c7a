"""Fuzzing the configuration loader, ``veylor.config.load_config``, with hypothesis.

Each example writes real files in a fresh temporary directory (a main file, drop-ins
in its ``routes.d/``) and loads them as ``veylor check`` does, or as a reload does: in a
worker thread with ``RESPONSIVE`` set, where a file larger than 256 KiB goes to PyYAML's
pure-Python parser instead of libyaml (``test_the_reload_parser`` sends small files
there too, lowering that threshold for the duration; the regressions use real 256 KiB
files).

Inputs:

- random YAML documents: nested mappings, lists and scalars in block and flow style,
  with anchors, aliases and merge keys, tags (``!!python/object``, ``!!binary``,
  ``!!timestamp``, unknown ones), huge numbers, odd Unicode, ``${VAR}`` references,
  nesting up to and beyond the parsers' limits; then damaged as bytes: NUL and
  control characters, bytes that are not UTF-8, a BOM, tabs, the file cut at a random
  byte (half written), bits flipped, lines duplicated or swapped; as the main file and
  as drop-ins (one of them perhaps a FIFO);
- mutations of valid configurations: ``config.yaml.example`` with the drop-ins of
  ``routes.d/*.yaml.example``, the demo's configuration, and Veylor 1.0 and 1.1
  files, with keys deleted, duplicated, renamed or retyped (dates, bytes, sets, NaN,
  huge integers...), values swapped or shared (YAML aliases), components copied
  into another file, then damaged as above;
- alias bombs ("billion laughs"), wide or deep, where the loader builds from them.

Properties, for every input:

- **ConfigError or Config**: ``load_config`` returns a ``Config`` or raises
  ``veylor.config.ConfigError``, never another exception (``veylor check`` would
  print a traceback; a reload would fail with "unexpected error" instead of naming a
  file and a line).
- **a file**: every problem, error or warning, names a file (``location.file`` is not
  empty); a problem in a configuration file names it as the loader was given it.
- **a line**: ``Location.line`` is 1-based and 0 means "no line" (``str(location)`` is
  then the file alone). A problem with a key path (``problem.path``) is about a value
  inside a parsed document: its line is >= 1. An error without a key path may have
  line 0 only when there is no line to point at: the file was not read (not found,
  not a regular file, over 4 MiB, too many lines to parse) or it holds no YAML node
  (empty, or comments only). Whatever else the loader refuses in a file's text (a
  syntax error, a character YAML does not allow, a byte that is not UTF-8) is at a
  line. Warnings without a key path are about the configuration as a whole ("no
  routes are defined") and may have line 0. Problems located in other files (a
  tokens file, a certificate) are only required to name their file.
- **bounded**: each load takes less than 5 s and raises the process's peak memory by
  less than 64 MiB (see ``PeakMemory`` for how). The bounds are generous on purpose:
  they catch runaway inputs (an alias bomb, deep nesting); they do not measure speed.

Inputs the fuzzing found to break a property are kept at the end as plain regression
examples, each with what it broke.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import ctypes
import gc
import json
import os
import re
import string
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import note as _hypothesis_note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from veylor.config import Config, ConfigError, Problem, format_path, load_config, schema_path, yamlfile
from veylor.config.files import MAX_FILE_SIZE
from veylor.config.yamlfile import C_PARSER_MAX, MAX_VALUES, RESPONSIVE
from veylor.demo import DEMO_CONFIG

pytestmark = [pytest.mark.fuzz, pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
# CPU seconds of the loading thread, not wall time: the suite runs in parallel, and a
# load that took 1 s of CPU took 6 s of wall time beside the soak and the image builds.
LIMIT_SECONDS = 5.0
LIMIT_BYTES = 64 * 2**20

# The environment every load sees: ${VAR} references find these (and miss others).
ENV = {
    "SET": "value",
    "EMPTY": "",
    "PORT": "8765",
    "NUM": "12",
    "WORD": "eighty",
    "URL": "ws://127.0.0.1:9/feed",
    "TICKER_API_KEY": "k" * 12,
    "ORDERS_TOKEN": "t" * 20,
}


# No "explain" phase: on Python < 3.12 it traces every line the loader runs, which takes
# minutes on the inputs that matter here.
PHASES = [p for p in Phase if p is not Phase.explain]
# No shrinking where one failing example costs a second or more: the example is small
# anyway, and the regressions at the end of this module keep minimal ones.
NO_SHRINK = [p for p in PHASES if p is not Phase.shrink]
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]


def budget(share: int) -> int:
    """``1/share`` of the active profile's ``max_examples`` (at least 2), so that a test
    whose examples cost more still runs longer under ``--hypothesis-profile=long``."""
    return max(2, settings.default.max_examples // share)


# ------------------------------------------------------------------ the properties


@pytest.fixture(autouse=True, scope="module")
def _frozen_heap() -> Iterator[None]:
    """What exists before these tests is moved out of the collector's sight for their
    duration (``gc.freeze``): the full collection before each measured load then costs
    a millisecond, not the 30 it takes over the whole test session's objects."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def note(text: str) -> None:
    """Say ``text`` with the falsifying example (printed, outside a hypothesis test)."""
    try:
        _hypothesis_note(text)
    except InvalidArgument:
        print(text)


Mode = str  # "check", "reload" or "python": see load_once
DEFAULT_RECURSION_LIMIT = sys.getrecursionlimit()  # Veylor's (hypothesis raises it while a test runs)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def _status_bytes(name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{name}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


class PeakMemory:
    """How much a block raised the process's peak memory.

    Linux: the growth of the resident set's high-water mark, from a clean start:
    earlier examples' garbage collected and free memory handed back to the system
    (``malloc_trim``), so that what the block allocates shows as growth, then the mark
    reset (``/proc/self/clear_refs``). It counts every allocation (libyaml's and the
    Rust validator's too) and slows nothing down. Measured twice, one input gives the
    same figure within a few MiB. tracemalloc would be exact, but it slows the loader
    3 to 10 times, and makes the pure-Python parser's deep recursions take minutes.
    Elsewhere (no ``clear_refs``): tracemalloc's peak, Python allocations only."""

    def __init__(self) -> None:
        gc.collect()
        if _TRIM is not None:
            _TRIM(0)
        self.start: int | None = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.start = _status_bytes("VmRSS")
        except OSError:
            pass
        self.traced = self.start is None and not tracemalloc.is_tracing()
        if self.traced:
            tracemalloc.start()

    def growth(self) -> int:
        if self.start is None:
            peak = tracemalloc.get_traced_memory()[1]
            if self.traced:
                tracemalloc.stop()
            return peak
        high = _status_bytes("VmHWM")
        return 0 if high is None else max(0, high - self.start)


Measured = tuple[Config | ConfigError, float, int]  # the result, seconds, bytes at the peak


def load_once(main: Path, mode: Mode) -> Measured:
    """``load_config(main)`` as ``mode`` says, with its duration and its peak of memory.

    - ``check``: as ``veylor check`` loads (libyaml);
    - ``reload``: as the reloader loads: in a worker thread, with ``RESPONSIVE`` set (a
      file over 256 KiB is parsed by PyYAML's pure-Python parser, which lets the
      relay's event loop run) and the interpreter's recursion limit;
    - ``python``: ``reload`` with that threshold at 0 for the duration, so that small
      inputs reach the pure-Python parser without a 256 KiB padding each. The
      regressions at the end show what it found with real padded files.
    """

    def run() -> Measured:
        token = RESPONSIVE.set(mode != "check")
        saved = yamlfile.C_PARSER_MAX
        if mode == "python":
            yamlfile.C_PARSER_MAX = 0
        memory = PeakMemory()
        start = time.thread_time()  # (see LIMIT_SECONDS)
        try:
            try:
                result: Config | ConfigError = load_config(main, env=ENV)
            except ConfigError as exc:
                result = exc
            return result, time.thread_time() - start, memory.growth()
        finally:
            yamlfile.C_PARSER_MAX = saved
            RESPONSIVE.reset(token)

    if mode == "check":
        return run()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
    try:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="veylor-reload") as worker:
            return worker.submit(run).result()
    finally:
        sys.setrecursionlimit(limit)


def bounded_load(main: Path, mode: Mode) -> Config | ConfigError:
    """``load_config(main)`` as ``mode`` says, failing unless it takes less than
    LIMIT_SECONDS of CPU and at its peak less than LIMIT_BYTES of memory."""
    note(f"loaded as: {mode}")
    try:
        result, elapsed, peak = load_once(main, mode)
    except Exception:
        note("load_config raised an exception that is not a ConfigError")
        raise
    note(f"loading {main.name}: {elapsed:.2f} s of CPU, peak memory +{peak / 2**20:.1f} MiB")
    assert elapsed < LIMIT_SECONDS, f"loading took {elapsed:.1f} s of CPU (bound: {LIMIT_SECONDS:.0f} s)"
    assert peak < LIMIT_BYTES, f"loading took {peak / 2**20:.0f} MiB more memory at its peak (bound: 64 MiB)"
    return result


def has_content(path: str) -> bool:
    """Whether the loader reads this file's text and finds something in it to point at:
    False when it cannot be read or is refused unread (too large, too many lines), or
    when it holds no YAML node (empty, comments only)."""
    try:
        blob = Path(path).read_bytes()
    except OSError:
        return False
    if len(blob) > MAX_FILE_SIZE:
        return False
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError:
        return True  # the first byte that is not UTF-8 is on a line
    if text.count("\n") + text.count(",") > 2 * MAX_VALUES:
        return False
    try:
        return yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) is not None
    except yaml.YAMLError:
        return True  # something is there, and it is wrong somewhere


def check_problem(problem: Problem, config_files: set[str]) -> None:
    where = problem.location
    assert where.file, f"a problem names no file: {problem!r}"
    assert where.line >= 0 and where.column >= 0, f"a negative line or column: {problem!r}"
    assert problem.message, f"a problem says nothing: {problem!r}"
    name = os.path.normpath(where.file)
    if name not in config_files:
        return  # a file a component refers to (a tokens file, a certificate)
    if problem.path:
        assert where.line >= 1, f"a problem about {format_path(problem.path)} has no line: {problem}"
    elif where.line == 0 and not problem.warning:
        assert not has_content(name), f"a problem about the text of {where.file} has no line: {problem}"


def load_checked(main: Path, config_files: Sequence[Path], mode: Mode = "check") -> Config | ConfigError:
    """``load_config(main)`` (as ``mode`` says), with every property of this module checked."""
    result = bounded_load(main, mode)
    files = {os.path.normpath(p) for p in config_files}
    if isinstance(result, ConfigError):
        assert result.problems, "a ConfigError without a problem"
        problems = [*result.problems, *result.warnings]
    else:
        problems = list(result.warnings)
    for problem in problems:
        check_problem(problem, files)
    return result


@contextlib.contextmanager
def config_tree(main: bytes, dropins: Sequence[bytes] = ()) -> Iterator[tuple[Path, list[Path]]]:
    """``config.yaml`` and ``routes.d/NN-dropin.yaml`` in a fresh directory."""
    with tempfile.TemporaryDirectory(prefix="veylor-fuzz-") as tmp:
        root = Path(tmp)
        main_path = root / "config.yaml"
        main_path.write_bytes(main)
        paths = [main_path]
        if dropins:
            (root / "routes.d").mkdir()
        for i, blob in enumerate(dropins):
            path = root / "routes.d" / f"{10 * (i + 1)}-dropin.yaml"
            path.write_bytes(blob)
            paths.append(path)
        yield main_path, paths


def show(label: str, blob: bytes) -> None:
    note(f"{label} ({len(blob)} bytes): {blob[:1500]!r}{' ...' if len(blob) > 1500 else ''}")


# ------------------------------------------------------------------ vocabulary


def _schema_words() -> tuple[list[str], list[str]]:
    """Every property name and every string enum value of the schema."""
    keys: set[str] = set()
    enums: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "properties" and isinstance(v, dict):
                    keys.update(v)
                if k == "enum" and isinstance(v, list):
                    enums.update(x for x in v if isinstance(x, str))
                walk(v)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(schema_path().read_text(encoding="utf-8")))
    return sorted(keys), sorted(enums)


SCHEMA_KEYS, SCHEMA_ENUMS = _schema_words()
TOP_KEYS = ["version", "sources", "endpoints", "routes", "include", "limits", "admin"]
LEGACY_KEYS = ["rebroadcast", "performance"]
NAMES = ["s", "ticker", "e", "public", "ipc", "r", "all", "up", "x y", "a.b", "-", ""]
ANCHORS = ["a", "b", "c"]

# Scalars as they are written in YAML (all valid in block and in flow context).
SPECIAL_SCALARS = [
    *[
        "~",
        "null",
        "Null",
        "true",
        "False",
        "yes",
        "no",
        "on",
        "off",
        "y",
        "0",
        "-0",
        "007",
        "0660",
        "0o660",
        "0x1F",
        "0b101",
        "1_000",
        "+12",
    ],
    *[
        "12:30:45",
        "190:20:30",
        "1e999",
        "-1e999",
        ".inf",
        "-.Inf",
        ".nan",
        ".NaN",
        "1.5",
        "6.8523015e+5",
        "-0.0",
    ],
    *["2024-01-01", "2024-02-30", "2001-12-14t21:59:43.10-05:00", "2002-12-14", "9999-99-99"],
    *[
        "64KiB",
        "16MiB",
        "1GiB",
        "16M",
        "16MB",
        "-1KiB",
        "0B",
        "1.5MiB",
        "99999999999999999999999YiB",
        "0x10KiB",
    ],
    "ws://127.0.0.1:9/feed",
    "wss://user:pass@example.com:443/x?token=secret0123456789",
    "http://example.com/",
    "ws://",
    "'ws://[::1]:80/'",
    "ws://%zz/",
    "ws://127.0.0.1:99999/",
    "/",
    '"*"',
    "/path?x#y",
    "/tmp/veylor-fuzz-no-such-dir/x.sock",
    "relative.sock",
    '"0660"',
    '"1777"',
    '"9999"',
    '"-1"',
    *SCHEMA_ENUMS,
    "127.0.0.1",
    "0.0.0.0",
    "'::1'",
    '"127.0.0.1:9900"',
    '"[::1]:9900"',
    '"host:notaport"',
    '"localhost:0"',
    "${SET}",
    "${UNSET}",
    "${UNSET:-8765}",
    "${EMPTY:-d}",
    "${EMPTY-d}",
    "${}",
    "${1X}",
    "$${SET}",
    "${PORT}",
    '"${PORT}"',
    "${NUM}",
    "${WORD}",
    '"${UNSET:-a,b}"',
    "${SET",
    "'(a+)+$'",
    "'['",
    "'\\1'",
    "'(?=x)'",
    "'^x$'",
    "'\\d+'",
    "'a{1000}{1000}'",
    '"\\x00"',
    '"\\u2028"',
    '"\\uffff"',
    '"\\U0001F600"',
    '"a\\nb"',
    '"x\\n"',
    '"\\e[31m"',
    '"\\ud800"',
    "1" + "0" * 400,
    "9" * 4400,
    "-" + "9" * 30,
    "0." + "0" * 400 + "1",
    '"routes.d/*.yaml"',
    '"*.yaml"',
    '"nowhere/*.yaml"',
    "missing.yaml",
    "routes.d",
    "fifo",
    "'routes.d/[.yaml'",
    "'~/x.yaml'",
    '!!int ""',
    '!!int "-"',
    '!!float "_"',
    "!!bool maybe",
    "!!timestamp x",
    "!!binary ä",
]
TAGS = [
    "!!str",
    "!!int",
    "!!float",
    "!!bool",
    "!!null",
    "!!binary",
    "!!timestamp",
    "!!python/object:os.system",
    "!!python/object/apply:os.system",
    "!!python/name:os.system",
    "!!python/tuple",
    "!!set",
    "!!omap",
    "!!pairs",
    "!!map",
    "!!seq",
    "!!merge",
    "!custom",
    "!<tag:yaml.org,2002:int>",
    "!",
]
PLAIN = string.ascii_letters + string.digits + "-_./@"
# No '*', '?' or '[' in free text: an include pattern such as "/**" would walk the
# whole file system (a choice of the configuration's author, not a loader bug).
TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="*?[")


def scalars() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(SPECIAL_SCALARS),
        st.text(PLAIN, min_size=1, max_size=12),
        st.integers().map(str),
        st.floats().map(repr),
        st.builds(
            lambda s, ascii_only: json.dumps(s, ensure_ascii=ascii_only),
            st.text(TEXT, max_size=16),
            st.booleans(),
        ),
        st.text(
            st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="'*?[\x85\u2028\u2029"),
            max_size=12,
        ).map(lambda s: f"'{s}'"),
    )


def keys() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(SCHEMA_KEYS),
        st.sampled_from(TOP_KEYS + LEGACY_KEYS),
        st.sampled_from([n for n in NAMES if n and " " not in n]),
        st.sampled_from(["<<", '""', "''", "~", "1", "true", '"a\\nb"', '"x\\n"', '"\\x00"', "'x y'"]),
        st.text(PLAIN, min_size=1, max_size=10),
    )


# ------------------------------------------------------------------ random documents


@dataclass
class Node:
    """A YAML node to render: a scalar (its source text), an alias, a list or a mapping."""

    kind: str
    text: str = ""
    items: list[Any] = field(default_factory=list)
    anchor: str | None = None
    tag: str | None = None
    flow: bool = False


def _props(node: Node) -> str:
    return " ".join(p for p in (f"&{node.anchor}" if node.anchor else "", node.tag or "") if p)


def inline(node: Node) -> str:
    """``node`` in flow style (one line)."""
    if node.kind == "alias":
        return f"*{node.text}"
    props = _props(node)
    head = f"{props} " if props else ""
    if node.kind == "scalar":
        return head + node.text if node.text or not props else props
    if node.kind == "seq":
        return head + "[" + ", ".join(inline(i) for i in node.items) + "]"
    return head + "{" + ", ".join(f"{inline(k)}: {inline(v)}" for k, v in node.items) + "}"


def _is_block(node: Node) -> bool:
    return node.kind in ("seq", "map") and bool(node.items) and not node.flow


def block(node: Node, indent: int = 0) -> str:
    """``node`` in block style where it is a non-empty collection not marked flow."""
    pad = " " * indent
    if not _is_block(node):
        return f"{pad}{inline(node)}\n"
    out = []
    for entry in node.items:
        if node.kind == "map":
            key, value = entry
            lead = f"{pad}{inline(key)}:"
        else:
            value = entry
            lead = f"{pad}-"
        if _is_block(value):
            props = _props(value)
            out.append(f"{lead}{' ' + props if props else ''}\n{block(value, indent + 2)}")
        else:
            out.append(f"{lead} {inline(value)}\n")
    return "".join(out)


def render(root: Node) -> str:
    props = _props(root) if _is_block(root) else ""
    return (f"--- {props}\n" if props else "") + block(root)


def _maybe(values: list[Any], none_weight: int = 3) -> st.SearchStrategy[Any]:
    return st.sampled_from([None] * none_weight + values)


def nodes(max_leaves: int = 24) -> st.SearchStrategy[Node]:
    leaf = st.one_of(
        st.builds(Node, kind=st.just("scalar"), text=scalars(), anchor=_maybe(ANCHORS), tag=_maybe(TAGS, 8)),
        st.builds(Node, kind=st.just("alias"), text=st.sampled_from(ANCHORS)),
    )

    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        props = {
            "anchor": _maybe(ANCHORS),
            "tag": _maybe(["!!set", "!!omap", "!!seq", "!!map", "!custom"], 10),
        }
        key = st.one_of(
            st.builds(Node, kind=st.just("scalar"), text=keys()),
            st.builds(Node, kind=st.just("alias"), text=st.sampled_from(ANCHORS)),
            children,
        )
        return st.one_of(
            st.builds(
                Node, kind=st.just("seq"), items=st.lists(children, max_size=4), flow=st.booleans(), **props
            ),
            st.builds(
                Node,
                kind=st.just("map"),
                items=st.lists(st.tuples(key, children), max_size=5),
                flow=st.booleans(),
                **props,
            ),
        )

    return st.recursive(leaf, extend, max_leaves=max_leaves)


# Built once: a recursive strategy is checked (its source parsed) each time it is made.
NODES_SMALL, NODES_MEDIUM, NODES_LARGE = nodes(8), nodes(12), nodes(24)


@st.composite
def config_like(draw: st.DrawFn) -> Node:
    """A mapping shaped like a configuration: known top-level keys, sections of named
    components whose settings are schema keys with random values."""
    entries = []
    for top in draw(st.lists(st.sampled_from(TOP_KEYS + LEGACY_KEYS), min_size=1, max_size=5)):
        if top in ("sources", "endpoints", "routes") and draw(st.booleans()):
            components = []
            for name in draw(st.lists(st.sampled_from(NAMES), max_size=3)):
                settings_ = [
                    (Node("scalar", draw(st.sampled_from(SCHEMA_KEYS))), draw(NODES_SMALL))
                    for _ in range(draw(st.integers(0, 4)))
                ]
                components.append(
                    (Node("scalar", json.dumps(name)), Node("map", items=settings_, flow=draw(st.booleans())))
                )
            value = Node("map", items=components, anchor=draw(_maybe(ANCHORS)))
        else:
            value = draw(NODES_MEDIUM)
        entries.append((Node("scalar", top), value))
    return Node("map", items=entries)


@st.composite
def deep_documents(draw: st.DrawFn) -> str:
    """Nesting up to and beyond the parsers' limits (libyaml: 1,000 levels; ours: 64)."""
    # libyaml stops at 1,000 levels; the pure-Python parser recurses (about 490 levels
    # with the interpreter's recursion limit); ours stops at 64
    limits = st.sampled_from([250, 480, 500, 600, 999, 1000, 1001, 2000, 5000])
    depth = draw(st.one_of(limits, limits, st.integers(1, 5000), st.integers(60, 70)))
    style = draw(st.sampled_from(["flow-seq", "flow-map", "block-map", "block-seq", "alias"]))
    key = draw(st.sampled_from(["x", "sources", "routes"]))
    if style == "flow-seq":
        return f"{key}: " + "[" * depth + "]" * depth + "\n"
    if style == "flow-map":
        return f"{key}: " + "{a: " * depth + "1" + "}" * depth + "\n"
    depth = min(depth, 600)  # block style: the text grows as depth squared
    if style == "block-map":
        return "".join(" " * i + "a:\n" for i in range(depth)) + " " * depth + "1\n"
    if style == "block-seq":
        return f"{key}:\n" + "".join(" " * (2 * i) + "-\n" for i in range(depth)) + " " * (2 * depth) + "x\n"
    # an alias to a nested node, used inside a nested node: nesting once expanded
    return f"a: &a {'[' * (depth // 2)}x{']' * (depth // 2)}\n{key}: {'[' * (depth // 2)}*a{']' * (depth // 2)}\n"


@st.composite
def alias_bombs(draw: st.DrawFn) -> str:
    """Billion laughs: each level is ``width`` uses of the one before, optionally
    wrapped in lists or mappings (values deeper in the tree), and the last level used
    where the loader goes on building (a source's on_connect, a filter, headers)."""
    width = draw(st.integers(2, 10))
    levels = draw(st.integers(1, 10))
    wrap = draw(st.integers(0, 8))
    container = draw(st.sampled_from(["seq", "map"]))

    def group(items: list[str]) -> str:
        if container == "seq":
            return "[" + ", ".join(items) + "]"
        return "{" + ", ".join(f"k{i}: {x}" for i, x in enumerate(items)) + "}"

    lines = [f"l0: &l0 {group(['x'] * width)}"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} " + "[" * wrap + group([f"*l{i - 1}"] * width) + "]" * wrap)
    last = f"*l{levels}"
    where = draw(st.sampled_from(["top", "on_connect", "filter", "headers", "include"]))
    defs = "\n".join(f"  {line}" for line in lines)
    if where == "top":
        return "\n".join(lines) + f"\nx: {last}\n"
    if where == "on_connect":
        return f"x-defs:\n{defs}\nsources:\n  s: {{url: 'ws://127.0.0.1:9/', on_connect: [{last}]}}\n"
    if where == "headers":
        return f"x-defs:\n{defs}\nsources:\n  s: {{url: 'ws://127.0.0.1:9/', headers: {last}}}\n"
    if where == "include":
        return f"x-defs:\n{defs}\ninclude: {last}\n"
    return (
        f"x-defs:\n{defs}\nsources: {{s: {{url: 'ws://127.0.0.1:9/'}}}}\n"
        f"endpoints: {{e: {{websocket: {{port: 8765}}}}}}\n"
        f"routes: {{r: {{from: s, to: e, filter: {{any: [{{type: text}}, {{not: {{json: {{path: a, in: {last}}}}}}}]}}}}}}\n"
    )


# ------------------------------------------------------------------ damage


SPECIAL_BYTES = [
    b"\x00",
    b"\x07",
    b"\x1b[31m",
    b"\x7f",
    b"\xc2\x85",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\t",
    b"\r",
    b"\r\n",
    "\u2028".encode(),
    "\u202e".encode(),
    b"\n---\n",
    b"\n...\n",
    b"%YAML 1.1\n",
    b": ",
    b" #",
    b"&a ",
    b"*a",
    b"!!binary ",
    b"<<: *a\n",
    b"${",
    b"}",
    b"[",
    b"{",
    b"'",
    b'"',
    b"\\",
    b"- ",
    b"? ",
]


@st.composite
def damaged(draw: st.DrawFn, blob: bytes, most: int = 3) -> bytes:
    """``blob`` with up to ``most`` byte-level mutations."""
    for _ in range(draw(st.integers(0, most))):
        op = draw(
            st.sampled_from(["cut", "insert", "insert", "flip", "delete", "dup-line", "swap-lines", "tabs"])
        )
        at = draw(st.integers(0, len(blob)))
        if op == "cut":
            blob = blob[:at]
        elif op == "insert":
            extra = draw(st.one_of(st.sampled_from(SPECIAL_BYTES), st.binary(min_size=1, max_size=6)))
            blob = blob[:at] + extra + blob[at:]
        elif op == "flip" and blob:
            at = min(at, len(blob) - 1)
            blob = blob[:at] + bytes([blob[at] ^ (1 << draw(st.integers(0, 7)))]) + blob[at + 1 :]
        elif op == "delete":
            blob = blob[:at] + blob[at + draw(st.integers(1, 40)) :]
        elif op in ("dup-line", "swap-lines"):
            lines = blob.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                j = draw(st.integers(0, len(lines) - 1))
                if op == "dup-line":
                    lines.insert(j, lines[i])
                else:
                    lines[i], lines[j] = lines[j], lines[i]
                blob = b"".join(lines)
        elif op == "tabs":
            blob = blob.replace(b"\n  ", b"\n\t", draw(st.integers(1, 3)))
    return blob


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    """A random document, as the bytes of a file."""
    kind = draw(st.sampled_from(["config", "config", "any", "deep"]))
    if kind == "config":
        text = render(draw(config_like()))
    elif kind == "any":
        root = draw(NODES_LARGE)
        text = render(root) if draw(st.booleans()) else inline(root) + "\n"
    else:
        text = draw(deep_documents())
    head = draw(st.sampled_from(["", "", "", "\ufeff", "%YAML 1.1\n---\n", "--- !!map\n", "# a comment\n"]))
    tail = draw(st.sampled_from(["", "", "", "...\n", "---\n", "--- x\n", "# end"]))
    return draw(damaged((head + text + tail).encode()))


# ------------------------------------------------------------------ mutations of valid files


V11 = """\
# Veylor 1.1
sources:
  - url: wss://stream.binance.com:9443/ws/btcusdt@trade
    headers:
      X-MBX-APIKEY: abc
    websocket_port: 8765
    unix_socket_path: /tmp/binance.sock
  - url: wss://ws.kraken.com
    websocket_host: 127.0.0.1
    websocket_port: 8766
  - url: wss://ws.kraken.com
    unix_socket_path: /tmp/kraken2.sock
performance:
  max_queue_size: 500
  reconnect_delay: 2
  reconnect_max_attempts: 10
"""

V10 = """\
sources:
  - url: wss://stream.binance.com:9443/ws
    name: binance
    headers: {X-MBX-APIKEY: abc}
  - url: wss://ws.kraken.com/v2
rebroadcast:
  websocket:
    enabled: true
    host: 0.0.0.0
    port: 9000
  unix_socket:
    enabled: true
    path: /tmp/veylor.sock
performance:
  reconnect_delay: 45
"""


def seeds() -> list[tuple[str, str, list[str]]]:
    """``(name, main file, drop-ins)``: valid configurations to mutate."""
    example = (REPO / "config.yaml.example").read_text()
    dropins = [p.read_text() for p in sorted((REPO / "routes.d").glob("*.yaml.example"))]
    demo = DEMO_CONFIG.format(upstream_port=9, port=8765, sock="/tmp/veylor-fuzz-demo.sock", admin_port=9900)
    return [
        ("example with its drop-ins", example, dropins),
        ("example", example, []),
        ("demo", demo, []),
        (
            "demo with the example's drop-ins",
            demo.replace("demo:", "ticker:").replace("from: demo", "from: ticker"),
            dropins,
        ),
        ("Veylor 1.1", V11, []),
        ("Veylor 1.0", V10, []),
        # (those that bring their own source: the others route the example's "ticker")
        ("Veylor 1.1 with the example's drop-ins", V11, [d for d in dropins if "\nsources:" in d]),
    ]


SEEDS = seeds()

PyPath = tuple[Any, ...]


def _paths(data: Any, here: PyPath = ()) -> Iterator[PyPath]:
    yield here
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _paths(v, (*here, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _paths(v, (*here, i))


def _get(data: Any, path: PyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: PyPath, value: Any) -> Any:
    if not path:
        return value
    _get(data, path[:-1])[path[-1]] = value
    return data


def yaml_only() -> st.SearchStrategy[Any]:
    """Values YAML carries and JSON does not: dates and times (``2024-01-01``), bytes
    (``!!binary``), sets (``!!set``), NaN and infinities, integers beyond 64 bits."""
    return st.one_of(
        st.dates(),
        st.datetimes(),
        st.binary(max_size=8),
        st.sets(st.text(PLAIN, max_size=4), max_size=3),
        st.sampled_from([float("nan"), float("inf"), float("-inf"), 2**64, -(2**63) - 1, 10**30]),
    )


def values() -> st.SearchStrategy[Any]:
    """Values of every type YAML can carry (dates, bytes and sets included)."""
    scalar = st.one_of(
        yaml_only(),
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=2**63 - 2, max_value=2**70),
        st.floats(),
        st.text(TEXT, max_size=12),
        st.sampled_from(
            [
                "0660",
                "64KiB",
                "1GiB",
                "-1",
                "ws://127.0.0.1:9/",
                "wss://u:p@h:1/x?token=secret0123456789",
                "http://x/",
                "*",
                "/",
                "/x",
                "fifo",
                "missing.pem",
                "127.0.0.1:9900",
                "[::1]:0",
                "${SET}",
                "${UNSET}",
                "${PORT}",
                "$${X}",
                "(a+)+$",
                "[",
                *SCHEMA_KEYS,
                *SCHEMA_ENUMS,
                *NAMES,
            ]
        ),
        st.binary(max_size=8),
        st.dates(),
        st.datetimes(),
    )
    return st.one_of(
        scalar,
        st.lists(scalar, max_size=3),
        st.dictionaries(st.sampled_from(SCHEMA_KEYS), scalar, max_size=3),
        st.sets(st.text(PLAIN, max_size=4), max_size=3),
    )


@st.composite
def mutated(draw: st.DrawFn, data: Any, others: list[Any]) -> Any:
    """``data`` (parsed YAML) after a few structural mutations; ``others``: the parsed
    other files, which some mutations copy components from."""
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(data))
        leaves = [p for p in paths if not isinstance(_get(data, p), dict | list)] or paths
        op = draw(
            st.sampled_from(
                [
                    *("delete", "retype", "retype", "yaml-only", "yaml-only", "swap", "share"),
                    *("rename", "copy", "wrap", "add", "import"),
                ]
            )
        )
        # Values more often than sections: most of what the loader checks is in leaves.
        leafy = op == "yaml-only" or (op == "retype" and draw(st.booleans()))
        path = draw(st.sampled_from(leaves if leafy else paths))
        parent = _get(data, path[:-1]) if path else None
        if op == "delete" and path:
            del parent[path[-1]]
        elif op == "retype":
            data = _set(data, path, draw(values()))
        elif op == "yaml-only":
            data = _set(data, path, draw(yaml_only()))
        elif op in ("swap", "share"):
            other = draw(st.sampled_from(paths))
            related = other[: len(path)] == path or path[: len(other)] == other
            if not related:
                a, b = _get(data, path), _get(data, other)
                data = _set(data, path, b)
                if op == "swap":  # else: one object in two places, dumped as an anchor and an alias
                    data = _set(data, other, a)
        elif op == "rename" and isinstance(parent, dict):
            new = draw(
                st.one_of(st.sampled_from(SCHEMA_KEYS + NAMES), st.text(TEXT, max_size=8), st.integers())
            )
            parent[new] = parent.pop(path[-1])
        elif op == "copy" and isinstance(parent, dict):
            parent[draw(st.sampled_from(NAMES + SCHEMA_KEYS))] = copy.deepcopy(_get(data, path))
        elif op == "wrap":
            data = _set(data, path, [_get(data, path)])
        elif op == "add" and isinstance(_get(data, path), dict):
            _get(data, path)[draw(st.sampled_from(SCHEMA_KEYS + TOP_KEYS))] = draw(values())
        elif op == "import" and others and isinstance(data, dict):
            # a component of another file defined here too (or a section replaced)
            other = draw(st.sampled_from(others))
            if isinstance(other, dict) and other:
                section = draw(st.sampled_from(sorted(other, key=str)))
                if (
                    isinstance(other[section], dict)
                    and other[section]
                    and isinstance(data.get(section), dict)
                ):
                    name = draw(st.sampled_from(sorted(other[section], key=str)))
                    data[section][name] = copy.deepcopy(other[section][name])
                else:
                    data[section] = copy.deepcopy(other[section])
    return data


@st.composite
def dumped(draw: st.DrawFn, data: Any) -> str:
    return yaml.safe_dump(
        data,
        default_flow_style=draw(st.sampled_from([False, True, None])),
        allow_unicode=draw(st.booleans()),
        sort_keys=False,
        width=draw(st.sampled_from([80, 2**20])),
    )


@st.composite
def mutated_configurations(draw: st.DrawFn) -> tuple[str, bytes, list[bytes]]:
    name, main, dropins = draw(st.sampled_from(SEEDS))
    texts = [main, *dropins]
    parsed = [yaml.safe_load(t) for t in texts]
    out = []
    for i, text in enumerate(texts):
        how = draw(st.sampled_from(["keep", "structure", "structure", "bytes"]))
        if how == "structure":
            others = parsed[:i] + parsed[i + 1 :]
            text = draw(dumped(draw(mutated(parsed[i], others))))
        blob = text.encode()
        if how != "keep":
            blob = draw(damaged(blob, most=3 if how == "bytes" else 1))
        out.append(blob)
    return name, out[0], out[1:]


# ------------------------------------------------------------------ the tests


def test_the_seeds_are_valid() -> None:
    """The mutations start from configurations that load: the fuzzing is not vacuous."""
    for name, main, dropins in SEEDS:
        with config_tree(main.encode(), [d.encode() for d in dropins]) as (path, files):
            result = load_checked(path, files)
            assert isinstance(result, Config), f"{name}: {result}"


@settings(phases=PHASES, suppress_health_check=SLOW)
@given(main=documents(), dropins=st.lists(documents(), max_size=2))
def test_random_documents(main: bytes, dropins: list[bytes]) -> None:
    """Random documents as the main file and as drop-ins."""
    show("main", main)
    for i, blob in enumerate(dropins):
        show(f"drop-in {i}", blob)
    with config_tree(main, dropins) as (path, files):
        load_checked(path, files)


@settings(phases=PHASES, suppress_health_check=SLOW)
@given(dropins=st.lists(documents(), min_size=1, max_size=3), fifo=st.booleans())
def test_random_dropins_beside_a_valid_main_file(dropins: list[bytes], fifo: bool) -> None:
    """Random drop-ins beside the example's main file (its include takes routes.d/*.yaml);
    one of them may be a FIFO, which must be refused, not read (reading would hang)."""
    _, main, _ = SEEDS[1]
    for i, blob in enumerate(dropins):
        show(f"drop-in {i}", blob)
    with config_tree(main.encode(), dropins) as (path, files):
        if fifo:
            os.mkfifo(path.parent / "routes.d" / "99-fifo.yaml")
            os.mkfifo(path.parent / "fifo")  # a file some values name (a tokens file, a certificate...)
        load_checked(path, files)


@settings(phases=PHASES, suppress_health_check=SLOW)
@given(case=mutated_configurations())
def test_mutated_valid_configurations(case: tuple[str, bytes, list[bytes]]) -> None:
    """Valid configurations after structural and byte-level mutations."""
    name, main, dropins = case
    note(f"seed: {name}")
    show("main", main)
    for i, blob in enumerate(dropins):
        show(f"drop-in {i}", blob)
    with config_tree(main, dropins) as (path, files):
        load_checked(path, files)


@settings(phases=NO_SHRINK, suppress_health_check=SLOW)
@given(
    blob=st.one_of(
        deep_documents().map(str.encode), documents(), mutated_configurations().map(lambda c: c[1])
    ),
    in_dropin=st.booleans(),
)
def test_the_reload_parser(blob: bytes, in_dropin: bool) -> None:
    """The pure-Python parser a reload uses for large files, on random documents, deep
    nesting and mutated configurations (as the main file or a drop-in)."""
    show("file", blob)
    _, main, _ = SEEDS[1]
    main_blob, dropins = (main.encode(), [blob]) if in_dropin else (blob, [])
    with config_tree(main_blob, dropins) as (path, files):
        load_checked(path, files, "python")


@settings(max_examples=budget(10), phases=NO_SHRINK, suppress_health_check=SLOW)
@given(bomb=alias_bombs())
def test_alias_bombs_are_refused_in_bounded_time_and_memory(bomb: str) -> None:
    """Billion-laughs documents, wide or deep, in the places the loader builds from.
    A few examples only: one at the 250,000-value cap costs seconds (traced)."""
    show("main", bomb.encode())
    with config_tree(bomb.encode()) as (path, files):
        load_checked(path, files)


# ------------------------------------------------------------------ regressions (found by the above)


PAD = "#" + "p" * (C_PARSER_MAX + 1) + "\n"  # a file over 256 KiB: a reload parses it in Python
ONE_ROUTE = "endpoints:\n  e: {websocket: {port: 8765}}\nroutes:\n  r: {from: s, to: e}\n"

# (name, the main file, how it is loaded)
REGRESSIONS: list[tuple[str, str, Mode]] = [
    # TypeError from json.dumps: a YAML date in an on_connect message.
    (
        "date-in-on_connect",
        "sources:\n  s:\n    url: ws://127.0.0.1:9/\n    on_connect:\n      - {op: subscribe, since: 2024-01-01}\n"
        + ONE_ROUTE,
        "check",
    ),
    # The same with !!binary: TypeError.
    (
        "binary-in-on_connect",
        "sources:\n  s:\n    url: ws://127.0.0.1:9/\n    on_connect: [{data: !!binary AAAA}]\n" + ONE_ROUTE,
        "check",
    ),
    # An explicit tag on a scalar it does not fit: PyYAML's constructors raise more than the
    # ValueError, TypeError and OverflowError the loader catches.
    ("timestamp-tag", "version: !!timestamp x\n", "check"),  # AttributeError
    ("bool-tag", "version: !!bool maybe\n", "check"),  # KeyError
    ("int-tag", 'version: !!int "-"\n', "check"),  # IndexError
    ("float-tag", 'version: !!float "_"\n', "check"),  # IndexError
    # A control character: "YAML error: unacceptable character #x0001 ... position 44", no line.
    ("control-character", "sources:\n  s: {url: ws://127.0.0.1:9/}\n  t: \x01\n", "check"),
    # A reload of a file over 256 KiB (pure-Python parser): a control character, ReaderError
    # (the pure-Python reader checks the text before read_yaml's try).
    (
        "control-character-on-reload",
        "sources:\n  s: {url: ws://127.0.0.1:9/}\n  t: \x1b[31m\n" + PAD,
        "reload",
    ),
    # A reload of a file over 256 KiB (pure-Python parser): 500 levels of nesting, RecursionError.
    ("deep-nesting-on-reload", PAD + "x: " + "[" * 500 + "]" * 500 + "\n", "reload"),
    # An alias bomb of 320 bytes whose values sit deep in the tree: refused at 250,000 values,
    # but only once they are built: some 110 MiB.
    (
        "deep-alias-bomb",
        "l0: &l0 [x, x, x, x]\n"
        + "".join(
            f"l{i}: &l{i} [[[[[*l{i - 1}, *l{i - 1}, *l{i - 1}, *l{i - 1}]]]]]\n" for i in range(1, 10)
        ),
        "check",
    ),
]


@pytest.mark.parametrize(
    ("text", "mode"), [(t, m) for _, t, m in REGRESSIONS], ids=[n for n, _, _ in REGRESSIONS]
)
def test_regression(text: str, mode: Mode) -> None:
    """Inputs the fuzzing found, kept as plain examples (each checks every property)."""
    with config_tree(text.encode()) as (path, files):
        load_checked(path, files, mode)
