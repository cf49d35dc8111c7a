"""Every configuration and command the docs show works as shown.

- Each ```yaml block of README.md and docs/*.md is loaded with the real loader, with
  the files it names (tokens files, certificates and keys, CA files, NATS credentials)
  made in a temporary directory that stands for /etc/veylor, /run/veylor and
  /var/lib/veylor, and the variables it uses set. A block whose first line is a comment
  naming a file in `routes.d/` is a drop-in: it is loaded beside the page's first
  configuration. A block marked `<!-- fragment -->` on the line before it is not a
  configuration and is skipped (none is today).
- Each example of the configuration reference (docs/configuration.md, one per key) is
  put in a complete configuration at its key's path and loaded the same way.
- Each `veylor ...` command line of a ```sh block (also after `podman exec NAME`,
  `sudo`, or in `sh -c '...'`) is parsed with Veylor's own argparse parser.

The demo's printed commands are run as pasted in test_process.py
(test_printed_demo_commands_run_as_printed).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import docs_generator

from veylor.cliparser import build_parser
from veylor.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


gen = docs_generator()
PAGES = [REPO / "README.md", *sorted(p for p in DOCS.glob("*.md") if p != gen.INTRO)]
TOKEN = "0123456789abcdef0123456789abcdef"  # what a ${VAR} the docs use stands for
DIRS = ("/etc/veylor/", "/run/veylor/", "/var/lib/veylor/")  # made under the test's directory


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    text: str
    fragment: bool

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def dropin(self) -> str | None:
        """``routes.d/NAME.yaml`` when the block's first line names a drop-in file."""
        first = self.text.splitlines()[0] if self.text else ""
        match = re.match(r"#\s*\S*?(routes\.d/[\w.-]+\.yaml)\s*$", first)
        return match.group(1) if match else None


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page (indented ones dedented)."""
    out: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"(\s*)```(\w*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        indent, lang, start = len(match.group(1)), match.group(2), i
        i += 1
        body = []
        while i < len(lines) and not re.match(r"\s*```\s*$", lines[i]):
            body.append(lines[i][indent:])
            i += 1
        fragment = start > 0 and lines[start - 1].strip() == "<!-- fragment -->"
        out.append(Block(page, start + 1, lang, "\n".join(body) + "\n", fragment))
        i += 1
    return out


ALL = [b for page in PAGES for b in blocks(page)]
CONFIGS = [b for b in ALL if b.lang == "yaml" and not b.fragment]
SHELL = [b for b in ALL if b.lang == "sh"]


# ---------------------------------------------------------------- files a configuration names


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate and its key, and a NATS credentials file."""
    from helpers import make_ca, make_cert
    from natscreds import Authority

    where = tmp_path_factory.mktemp("pki")
    ca = make_ca(where)
    cert, key = make_cert(where, ca, "server")
    creds, _ = Authority(where / "nats").user("edge")
    return {"ca": ca, "cert": cert, "key": key, "creds": Path(creds)}


def _provide(data: Any, base: Path, pki: dict[str, Path]) -> None:
    """Make every file ``data`` names (relative paths: to ``base``)."""
    if isinstance(data, list):
        for item in data:
            _provide(item, base, pki)
        return
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        if isinstance(value, str) and "${" not in value:
            path = base / value
            if key == "tokens_file":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"# a token\n{TOKEN}\n")
                path.chmod(0o600)
            elif key in ("cert", "key") and {"cert", "key"} <= data.keys():
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(pki[key], path)
            elif key == "ca_file":
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(pki["ca"], path)
            elif key == "credentials":
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(pki["creds"], path)
            elif key == "position_file":
                path.parent.mkdir(parents=True, exist_ok=True)
        _provide(value, base, pki)


def load(tmp_path: Path, main: str, pki: dict[str, Path], monkeypatch, dropins: dict[str, str] | None = None):
    """Write ``main`` (and drop-ins) under ``tmp_path`` as the docs show them, with what
    they name; load them with the real loader."""
    files = {"config.yaml": main, **(dropins or {})}
    env: dict[str, str] = {}  # the variables the files use, and nothing of this process's
    for name, text in files.items():
        for prefix in DIRS:
            text = text.replace(prefix, f"{tmp_path}{prefix}")
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        env.update((var, TOKEN) for var in re.findall(r"\$\{(\w+)\}", text))
        _provide(yaml.safe_load(text), tmp_path, pki)
    monkeypatch.chdir(tmp_path)
    try:
        return load_config(str(tmp_path / "config.yaml"), env=env)
    except ConfigError as exc:
        pytest.fail("\n".join(map(str, exc.problems)) + f"\n--- config.yaml\n{main}")


# ---------------------------------------------------------------- the pages' configurations


def test_the_pages_show_configurations_and_drop_ins():
    # A check that finds nothing proves nothing.
    assert len(CONFIGS) >= 10
    assert sum(b.dropin is not None for b in CONFIGS) >= 2
    assert {b.page.name for b in CONFIGS} >= {"README.md", "configuration.md", "scale-out.md", "security.md"}


@pytest.mark.parametrize("block", CONFIGS, ids=lambda b: b.id)
def test_each_configuration_shown_loads(block: Block, tmp_path, pki, monkeypatch):
    if block.dropin is None:
        config = load(tmp_path, block.text, pki, monkeypatch)
        assert config.shape, block.id
        return
    main = next((b for b in CONFIGS if b.page == block.page and b.dropin is None), None)
    assert main is not None, f"{block.id}: a drop-in with no configuration before it on its page"
    config = load(tmp_path, main.text, pki, monkeypatch, {block.dropin: block.text})
    names = yaml.safe_load(block.text)
    for kind in ("sources", "endpoints", "routes"):
        for name in names.get(kind) or {}:
            assert name in getattr(config, kind), f"{block.id}: {kind}.{name} was not loaded"


# ---------------------------------------------------------------- the reference's examples

BASE: dict[str, Any] = {
    "sources": {"ticker": {"url": "wss://stream.example.com/ws"}},
    "endpoints": {"public": {"websocket": {"port": 8765}}, "ipc": {"unix": {"path": "/run/veylor/ipc.sock"}}},
    "routes": {"everything": {"from": "ticker", "to": ["public", "ipc"]}},
}
LEGACY_11: dict[str, Any] = {"sources": [{"url": "wss://stream.example.com/ws", "websocket_port": 8765}]}
LEGACY_10: dict[str, Any] = {"sources": [{"url": "wss://stream.example.com/ws"}], "rebroadcast": {}}
# Settings that mean something only beside another (the loader says so otherwise).
COMPANIONS = {"sources.NAME.nats.position_file": {"stream": "TICKER"}}


def _choose(schema: Any, node: dict[str, Any], doc: dict[str, Any], key: str) -> dict[str, Any]:
    """``doc`` without the alternatives to ``key`` when ``key`` is one of the node's
    exclusive choices (url | nats, websocket | unix | nats, equals | in | ...)."""
    groups = [o["required"] for o in schema.resolve(node).get("oneOf", []) if "required" in o]
    if not any(key in group for group in groups):
        return doc
    others = {k for group in groups if key not in group for k in group}
    return {k: v for k, v in doc.items() if k not in others}


def _merge(schema: Any, node: dict[str, Any], old: Any, new: Any) -> Any:
    """``new`` merged into ``old``, mappings key by key (a key replaces its alternatives)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return copy.deepcopy(new)
    out = dict(old)
    for key, value in new.items():
        out = _choose(schema, node, out, key)
        out[key] = _merge(schema, schema.child(node, key) or {}, out.get(key), value)
    return out


def _place(
    schema: Any, doc: Any, node: dict[str, Any], parts: list[str], value: Any, parent: str = ""
) -> Any:
    """``doc`` with ``value`` at the key path ``parts`` (``NAME``: the sample name of its
    map; ``[]``: the first item), what is missing on the way made with what it requires."""
    if not parts:
        return _merge(schema, node, doc, value)
    key, rest = parts[0], parts[1:]
    child = schema.child(node, key) or {}
    if key == "[]":
        items = list(doc) if isinstance(doc, list) and doc else [gen.minimal(schema, child)]
        items[0] = _place(schema, items[0], child, rest, value, parent)
        return items
    name = gen.SAMPLE_NAMES[parent] if key == "NAME" else key
    doc = _choose(schema, node, dict(doc) if isinstance(doc, dict) else {}, name)
    current = doc.get(name)
    if rest and not isinstance(current, dict | list):
        current = {} if rest[0] == "NAME" else gen.minimal(schema, child, key=rest[0])
    doc[name] = _place(schema, current, child, rest, value, key)
    return doc


def _complete(schema: Any, entry: Any) -> dict[str, Any]:
    """A whole configuration with ``entry``'s example at its path."""
    value = gen.example_value(schema, entry.node)
    if entry.section == "Veylor 1.x keys":
        doc = copy.deepcopy(LEGACY_10 if entry.path.startswith("rebroadcast") else LEGACY_11)
        root, path = schema.defs["legacy"], entry.path
    else:
        doc, root = copy.deepcopy(BASE), schema.defs["config"]
        path = entry.path.replace("FILTER", "routes.NAME.filter", 1)
    parts = re.findall(r"\[\]|[^.\[\]]+", path)
    doc = _place(schema, doc, root, parts, value)
    if entry.path in COMPANIONS:
        doc = _place(schema, doc, root, parts[:-1], COMPANIONS[entry.path])
    return doc


SCHEMA = gen.Schema(json.loads(gen.SCHEMA.read_text()))
ENTRIES = gen.entries(SCHEMA)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.section.split()[0]}:{e.path}")
def test_each_example_of_the_reference_loads_in_a_whole_configuration(entry, tmp_path, pki, monkeypatch):
    doc = _complete(SCHEMA, entry)
    text = yaml.safe_dump(doc, sort_keys=False)
    config = load(tmp_path, text, pki, monkeypatch)
    assert config.shape


# ---------------------------------------------------------------- the pages' command lines


def _commands(tokens: list[str]) -> list[list[str]]:
    """The argument lists of ``veylor`` in a shell command's tokens."""
    found: list[list[str]] = []
    segment: list[str] = []
    for token in [*tokens, ";"]:
        if token not in (";", "&&", "||", "|", "&"):
            segment.append(token)
            continue
        while segment and (re.match(r"\w+=", segment[0]) or segment[0] in ("sudo", "exec", "env")):
            segment = segment[1:]
        if segment[:2] == ["podman", "exec"]:
            rest = segment[2:]
            while rest and rest[0].startswith("-"):
                rest = rest[1:]
            segment = rest[1:]  # after the container's name
        if segment and segment[0] in ("sh", "bash") and "-c" in segment:
            inner = segment[segment.index("-c") + 1]
            found += _commands(_split(inner))
        elif segment and os.path.basename(segment[0]) == "veylor":
            found.append(segment[1:])
        segment = []
    return found


def _split(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


COMMANDS = [
    (f"{b.id}+{n}", args)
    for b in SHELL
    for n, line in enumerate(b.text.replace("\\\n", " ").splitlines())
    for args in _commands(_split(line))
]


def test_the_pages_show_veylor_commands():
    assert len(COMMANDS) >= 20
    shown = {args[0] if args and not args[0].startswith("-") else "run" for _, args in COMMANDS}
    assert shown >= {"run", "check", "reload", "status", "health", "top", "demo"}


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_each_veylor_command_shown_parses(where: str, args: list[str]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            assert exc.code == 0, f"{where}: veylor {shlex.join(args)}: {err.getvalue()}"
