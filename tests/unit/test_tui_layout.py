"""The dashboard's fit to a terminal (veylor.tui.layout): which columns a table keeps in
the width it has, and how the height is shared, as pure functions."""

from __future__ import annotations

import pytest

from veylor.tui.layout import GAP, MIN_CUT, Want, fit, heights

# name, state, msgs/s, fails, last error (text), url (text)
WIDTHS = [10, 20, 9, 5, 30, 40]
PRIORITY = [0, 1, 2, 4, 3, 5]
FLEXIBLE = [False, False, False, False, True, True]


def width(shown: list[tuple[int, int]]) -> int:
    return sum(w for _, w in shown) + GAP * len(shown)


def test_everything_fits_in_a_wide_table():
    assert fit(WIDTHS, PRIORITY, FLEXIBLE, 500) == list(enumerate(WIDTHS))


def test_the_least_important_columns_go_first_and_text_is_cut_before_it_goes():
    # 70 columns: the url (least important) cannot be cut to 8 characters: left out;
    # the fails (4) go before the error (3), which is cut short to what is left
    shown = fit(WIDTHS, PRIORITY, FLEXIBLE, 70)
    assert shown == [(0, 10), (1, 20), (2, 9), (4, 23)] and width(shown) == 70
    assert fit(WIDTHS, PRIORITY, FLEXIBLE, 80) == [(0, 10), (1, 20), (2, 9), (4, 30)]  # room for all of it
    assert fit(WIDTHS, PRIORITY, FLEXIBLE, 54) == [(0, 10), (1, 20), (2, 9)]  # not MIN_CUT of it: out
    assert MIN_CUT == 8


@pytest.mark.parametrize("room", [20, 30, 45, 60, 80, 100, 131, 200])
def test_whatever_the_width_the_name_is_shown_and_nothing_is_wider_than_the_room(room):
    shown = fit(WIDTHS, PRIORITY, FLEXIBLE, room)
    assert shown[0][0] == 0
    assert width(shown) <= max(room, 1 + GAP)
    assert [i for i, _ in shown] == sorted(i for i, _ in shown)  # in their order


def test_the_sorted_column_is_never_left_out():
    shown = fit(WIDTHS, PRIORITY, FLEXIBLE, 40, keep=5)  # sorted by url, the least important
    assert 5 in dict(shown) and width(shown) <= 40


def test_a_name_wider_than_the_room_is_cut():
    assert fit([100, 5], [0, 1], [False, False], 30) == [(0, 28)]


def test_short_tables_show_all_their_rows_and_the_long_ones_share_the_rest():
    # 80x24 with the fixed view: 3 sources, 4 endpoints, 5 edges, 1 client; 21 lines
    wants = [Want("sources", 3, 2), Want("endpoints", 4, 2), Want("graph", 5, 2), Want("bottom", 1, 2)]
    got = heights(21, wants, {"graph": 1, "bottom": 1})
    assert got is not None and sum(got.values()) == 21
    assert got["sources"] == 5 and got["endpoints"] == 6 and got["graph"] >= 7 and got["bottom"] >= 3


def test_when_there_is_not_room_for_all_rows_each_table_keeps_its_first_and_sources_come_first():
    wants = [Want("sources", 50, 2), Want("endpoints", 50, 2), Want("graph", 500, 2), Want("bottom", 900, 2)]
    got = heights(15, wants, {"graph": 1})
    assert got == {"sources": 4, "endpoints": 4, "graph": 4, "bottom": 3}


def test_no_room_even_for_one_row_each_is_said():
    wants = [Want("a", 5, 3), Want("b", 5, 3)]
    assert heights(7, wants, {}) is None
    assert heights(8, wants, {}) == {"a": 4, "b": 4}


def test_an_empty_table_takes_only_its_border_and_header():
    got = heights(30, [Want("a", 0, 3), Want("b", 2, 3)], {"b": 1})
    assert got == {"a": 3, "b": 27}
