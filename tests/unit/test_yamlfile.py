"""Reading YAML with locations, duplicate keys and ${VAR} interpolation."""

from __future__ import annotations

import textwrap

import pytest

from veylor.config.yamlfile import read_yaml


def read(text: str, env: dict[str, str] | None = None):
    return read_yaml("f.yaml", textwrap.dedent(text).lstrip("\n"), env or {})


def test_locations_of_keys_and_values_are_one_based_lines():
    doc = read(
        """
        sources:
          binance:
            url: wss://x
        routes:
          - a
          - b
        """
    )
    assert doc.problems == []
    assert doc.where.key(("sources", "binance")).line == 2
    assert doc.where.value(("sources", "binance", "url")).line == 3
    assert doc.where.value(("routes", 1)).line == 6
    # An unknown deeper path falls back to its nearest ancestor.
    assert doc.where.value(("sources", "binance", "url", "nope")).line == 3


def test_duplicate_key_is_an_error_naming_both_lines():
    doc = read(
        """
        sources:
          a: {url: wss://x}
          a: {url: wss://y}
        """
    )
    (problem,) = doc.problems
    assert problem.location.line == 3
    assert problem.path == ("sources", "a")
    assert "first defined at line 2" in problem.message


def test_yaml11_boolean_words_stay_string_keys():
    doc = read("on: 1\nyes: 2\n")
    assert doc.data == {"on": 1, "yes": 2}


def test_syntax_error_gives_line_and_column():
    doc = read("a: [1, 2\nb: 3\n")
    assert doc.fatal
    (problem,) = doc.problems
    assert problem.location.line == 2
    assert "YAML syntax error, column" in problem.message


def test_env_interpolation_in_strings_whole_values_marked_for_the_schema():
    doc = read(
        """
        a: "key-${KEY}"
        port: ${PORT}
        quoted: "${PORT}"
        default: ${MISSING:-fallback}
        empty_default: ${EMPTY:-d}
        dash_keeps_empty: ${EMPTY-d}
        literal: "$${NOT_A_VAR}"
        dollars: "pa$$word"
        """,
        env={"KEY": "s3cret", "PORT": "8765", "EMPTY": ""},
    )
    assert doc.problems == []
    assert doc.data == {
        "a": "key-s3cret",
        "port": "8765",  # typed later, by what the schema expects there
        "quoted": "8765",
        "default": "fallback",
        "empty_default": "d",
        "dash_keeps_empty": "",
        "literal": "${NOT_A_VAR}",
        "dollars": "pa$$word",
    }
    assert doc.whole == {("port",), ("quoted",), ("default",), ("empty_default",), ("dash_keeps_empty",)}
    assert doc.variables[("a",)] == ("KEY",)
    assert doc.env_used == {"KEY": "s3cret", "PORT": "8765", "MISSING": None, "EMPTY": ""}


def test_unquoted_reference_in_flow_style_is_read():
    doc = read("e: {port: ${PORT}, path: /x${SUFFIX}}\n", env={"PORT": "1", "SUFFIX": "-a"})
    assert doc.problems == []
    assert doc.data == {"e": {"port": "1", "path": "/x-a"}}


def test_syntax_error_near_a_reference_says_to_quote_it():
    doc = read("e: {default: ${X:-a,b}}\n")
    (problem,) = doc.problems
    assert "must be quoted" in problem.message and problem.location.line == 1


def test_tab_indentation_says_indent_with_spaces():
    doc = read("sources:\n\ts: {url: ws://x}\n")
    (problem,) = doc.problems
    assert problem.location.line == 2
    assert "indent with spaces" in problem.message


def test_missing_env_variable_names_it_with_line_and_path():
    doc = read(
        """
        sources:
          s:
            headers: {X-Key: "${API_KEY}"}
        """
    )
    (problem,) = doc.problems
    assert (problem.location.line, problem.path) == (3, ("sources", "s", "headers", "X-Key"))
    assert "API_KEY is not set" in problem.message


def test_bad_variable_reference_is_an_error():
    doc = read('a: "${1X}"\n')
    (problem,) = doc.problems
    assert "not a variable reference" in problem.message


def test_anchors_and_merge_keys():
    doc = read(
        """
        base: &base {ping_interval: 5, open_timeout: 3}
        s: {<<: *base, open_timeout: 9}
        """
    )
    assert doc.problems == []
    assert doc.data["s"] == {"ping_interval": 5, "open_timeout": 9}


def test_empty_document_is_none():
    doc = read("# only a comment\n")
    assert doc.problems == [] and doc.data is None


def test_unknown_tag_is_a_located_problem():
    doc = read("a: !weird 1\n")
    (problem,) = doc.problems
    assert problem.location.line == 1 and problem.path == ("a",)


@pytest.mark.timeout(30)
def test_an_alias_bomb_is_refused_in_bounded_time():
    """548 bytes of YAML aliases took about 1 GB and froze every client for 24 s."""
    from veylor.config.yamlfile import MAX_VALUES

    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    doc = read("\n".join(lines) + "\n")
    assert doc.fatal and doc.data is None
    (problem,) = doc.problems
    assert f"more than {MAX_VALUES:,} values (each use of an alias" in problem.message


def test_ten_thousand_levels_of_nesting_are_a_problem_not_a_crash():
    doc = read("x: " + "[" * 10000 + "]" * 10000 + "\n")
    assert doc.fatal
    (problem,) = doc.problems
    assert "nesting" in problem.message and problem.location.line == 1


def test_anchors_used_many_times_within_the_bound_still_work():
    lines = ["base: &base {ping_interval: 5, open_timeout: 3}"]
    lines += [f"s{i}: {{<<: *base, url: ws://x/{i}}}" for i in range(2000)]
    doc = read("\n".join(lines) + "\n")
    assert doc.problems == [] and doc.data["s1999"]["ping_interval"] == 5


def test_a_file_of_too_many_values_is_refused_before_it_is_parsed():
    """2.6 MB of '1,' parsed for 8 s (libyaml holds the interpreter lock) before the value
    limit refused it: counting separators refuses it at once."""
    doc = read("x: [" + ",".join(["1"] * 600_000) + "]\n")
    assert doc.fatal
    (problem,) = doc.problems
    assert "lines and commas: refused unread" in problem.message


def test_beside_a_live_relay_large_files_are_parsed_by_the_python_parser():
    from veylor.config.yamlfile import C_PARSER_MAX, RESPONSIVE

    text = "a: [" + ", ".join(f"v{i}" for i in range(C_PARSER_MAX // 5)) + "]\n"
    token = RESPONSIVE.set(True)
    try:
        slow = read(text)
    finally:
        RESPONSIVE.reset(token)
    fast = read(text)
    assert slow.problems == fast.problems == [] and slow.data == fast.data
