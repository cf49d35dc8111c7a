"""The watcher's scope: the main file and what the include patterns can match, nothing else."""

from __future__ import annotations

import glob
import os

import pytest

from veylor.watchscope import WatchScope, glob_regex


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/c/routes.d/*.yaml", "/c/routes.d/10-a.yaml", True),
        ("/c/routes.d/*.yaml", "/c/routes.d/.10-a.yaml", False),  # hidden: glob skips it
        ("/c/routes.d/*.yaml", "/c/routes.d/10-a.yaml.example", False),
        ("/c/routes.d/*.yaml", "/c/routes.d/10-a.yaml~", False),
        ("/c/routes.d/*.yaml", "/c/routes.d/.10-a.yaml.swp", False),
        ("/c/routes.d/*.yaml", "/c/routes.d/sub/10-a.yaml", False),
        ("/c/routes.d/*.yaml", "/c/veylor.log", False),
        ("/c/conf/**/*.yaml", "/c/conf/a.yaml", True),
        ("/c/conf/**/*.yaml", "/c/conf/x/y/a.yaml", True),
        ("/c/conf/**/*.yaml", "/c/conf/.git/a.yaml", False),
        ("/c/conf/*/r.yaml", "/c/conf/team/r.yaml", True),
        ("/c/conf/*/r.yaml", "/c/conf/team/x.yaml", False),
        ("/c/r/[0-9]*.yaml", "/c/r/1.yaml", True),
        ("/c/r/[0-9]*.yaml", "/c/r/a.yaml", False),
        ("/c/r/?.yaml", "/c/r/a.yaml", True),
    ],
)
def test_glob_regex_agrees_with_glob(pattern, path, matches):
    assert bool(glob_regex(pattern).fullmatch(path)) is matches


def test_glob_regex_agrees_with_glob_on_a_real_tree(tmp_path):
    names = ["a.yaml", ".h.yaml", "b.yml", "x/c.yaml", "x/y/d.yaml", "x/.g/e.yaml", "z.yaml.example"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    for pattern in ("*.yaml", "**/*.yaml", "x/*.yaml", "*/*.yaml", "[ab]*", "**/*"):
        full = f"{tmp_path}/{pattern}"
        found = {p for p in glob.glob(full, recursive=True) if os.path.isfile(p)}
        regex = glob_regex(full)
        matched = {str(tmp_path / n) for n in names if regex.fullmatch(str(tmp_path / n))}
        assert matched == found, pattern


def test_scope_watches_the_main_file_and_dropins_only(tmp_path):
    (tmp_path / "routes.d").mkdir()
    main = tmp_path / "config.yaml"
    scope = WatchScope.of(str(main), ["routes.d/*.yaml"])
    assert set(scope.roots) == {str(tmp_path), str(tmp_path / "routes.d")}
    assert not scope.recursive  # no subdirectory is watched: a log in one costs nothing
    assert scope.matters(str(main))
    assert scope.matters(str(tmp_path / "routes.d" / "10-x.yaml"))
    for other in ("veylor.log", "config.yaml.swp", ".config.yaml.swp", "config.yaml~", ".git/index"):
        assert not scope.matters(str(tmp_path / other)), other
    assert not scope.matters(str(tmp_path / "routes.d" / "10-x.yaml.example"))


def test_a_pattern_directory_that_does_not_exist_yet_is_awaited(tmp_path):
    scope = WatchScope.of(str(tmp_path / "config.yaml"), ["extra/routes/*.yaml"])
    assert str(tmp_path) in scope.roots
    assert scope.matters(str(tmp_path / "extra"))  # its creation re-derives the scope
    assert scope.matters(str(tmp_path / "extra" / "routes"))
    (tmp_path / "extra" / "routes").mkdir(parents=True)
    scope = WatchScope.of(str(tmp_path / "config.yaml"), ["extra/routes/*.yaml"])
    assert str(tmp_path / "extra" / "routes") in scope.roots and not scope.awaited


def test_recursive_patterns_watch_recursively_without_duplicate_roots(tmp_path):
    (tmp_path / "conf").mkdir()
    scope = WatchScope.of(str(tmp_path / "config.yaml"), ["conf/**/*.yaml", "*.yaml"])
    assert scope.recursive
    assert scope.roots == (str(tmp_path),)  # conf/ is inside the main directory
    assert scope.matters(str(tmp_path / "conf" / "a" / "b.yaml"))
