"""The docs hold together: docs/configuration.md is what docs/gen_configuration.py writes
from the schema (so a schema change comes with its docs), every schema key has a
description, every relative link in the README and docs/ leads to a file (and heading)
that exists, the README stays short and links to every page, and each page starts by
saying what it covers. The configurations and commands the docs show are run in
tests/integration/test_docs_examples.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import docs_generator

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


gen = docs_generator()

# The pages that are read as they are (the intro is an input of configuration.md).
PAGES = sorted(p for p in DOCS.glob("*.md") if p != gen.INTRO)
MARKDOWN = [REPO / "README.md", REPO / "CHANGELOG.md", *PAGES]
# The pages this project writes by hand or generates with a summary first.
SUMMARIZED = ["README.md", "configuration.md", "operations.md", "observability.md", "security.md"]
SUMMARIZED += ["scale-out.md", "performance.md", "architecture.md"]


def test_configuration_reference_is_what_the_generator_writes():
    expected = gen.generate()
    actual = gen.OUT.read_text() if gen.OUT.exists() else ""
    assert actual == expected, (
        "docs/configuration.md is out of date with schema/veylor.schema.json or "
        "docs/configuration-intro.md: run .venv/bin/python docs/gen_configuration.py"
    )


def test_every_schema_key_has_a_description():
    schema = gen.Schema(json.loads(gen.SCHEMA.read_text()))
    missing = gen.undocumented(schema)
    assert not missing, (
        "schema keys without a description (add one in schema/veylor.schema.json, then run "
        f".venv/bin/python docs/gen_configuration.py): {missing}"
    )


def test_every_key_of_every_shape_is_in_the_reference():
    # The main file's keys, the filters' and the 1.x keys: each documented once per shape,
    # with its type and an example (the generator refuses a key it cannot give one).
    schema = gen.Schema(json.loads(gen.SCHEMA.read_text()))
    entries = gen.entries(schema)
    text = gen.OUT.read_text()
    paths = {e.path for e in entries}
    for path in (
        "sources.NAME.url",
        "endpoints.NAME.unix.framing",
        "FILTER.json.in",
        "admin.auth.tokens_file",
    ):
        assert path in paths
    assert {"sources[].websocket_port", "rebroadcast.unix_socket.path", "performance.max_queue_size"} <= paths
    for entry in entries:
        assert f"### `{entry.path}`" in text
    facts = re.findall(r"^Type: .*Example: `.*`\.$", text, re.M)
    assert len(facts) == len(entries)


def _without_code(text: str) -> str:
    """Markdown with its fenced blocks and inline code spans blanked out (line count kept)."""
    text = re.sub(r"(?ms)^\s*```.*?^\s*```", lambda m: "\n" * m.group(0).count("\n"), text)
    return re.sub(r"`[^`\n]*`", "``", text)


def slug(title: str) -> str:
    """GitHub's anchor for a heading (punctuation dropped, spaces to hyphens)."""
    title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a Markdown file (duplicates numbered as GitHub does)."""
    out: set[str] = set()
    counts: dict[str, int] = {}
    in_code = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            base = slug(line.lstrip("#"))
            n = counts.get(base, 0)
            counts[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and image in a Markdown file, outside code."""
    text = _without_code(path.read_text())
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
            found.append((number, match.group(1)))
    return found


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_to_a_file_and_heading_that_exist(page: Path):
    broken = []
    for number, target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        where = f"{page.relative_to(REPO)}:{number}: {target}"
        if not dest.exists():
            broken.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where}: no heading with that anchor in {dest.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


def test_the_link_check_sees_links_and_anchors():
    # A check that finds nothing proves nothing: the README links into docs/ with anchors.
    found = links(REPO / "README.md")
    assert len(found) >= 15
    assert ("docs/operations.md#reloading") in [target for _, target in found]
    assert "reloading" in anchors(DOCS / "operations.md")
    assert "sourcesnameurl" in anchors(DOCS / "configuration.md")
    assert slug("What is guaranteed, and what is not") == "what-is-guaranteed-and-what-is-not"


def test_readme_is_short_and_links_to_every_page():
    readme = REPO / "README.md"
    assert len(readme.read_text().splitlines()) <= 250, "the README is the front page: move detail to docs/"
    targets = {target.partition("#")[0] for _, target in links(readme)}
    for page in PAGES:
        if page.name != "README.md":
            assert f"docs/{page.name}" in targets, f"README.md does not link to docs/{page.name}"
    for page in PAGES:
        to_readme = {t.partition("#")[0] for _, t in links(page)} & {"../README.md"}
        index = {t.partition("#")[0] for _, t in links(DOCS / "README.md")}
        assert to_readme or page.name in index, (
            f"docs/{page.name}: neither links to the README nor is indexed"
        )


@pytest.mark.parametrize("name", SUMMARIZED)
def test_each_page_starts_with_a_summary(name: str):
    page = REPO / name if name == "README.md" else DOCS / name
    blocks = [b for b in re.split(r"\n\s*\n", page.read_text()) if not b.startswith("<!--")]
    title, summary = blocks[0], blocks[1]
    assert title.startswith("# ") and "\n" not in title
    assert summary[0].isalpha() and len(summary.split()) >= 40, (
        f"{name}: the first paragraph is not a summary"
    )
