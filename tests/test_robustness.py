"""The corpus summary of ``make robustness``: each case classified by its own declared expectation."""

from __future__ import annotations

import pytest

from robustness_plugin import EXPECTATIONS, classify, summary_lines


@pytest.mark.parametrize("expect", EXPECTATIONS)
def test_a_passing_case_counts_as_what_it_expects(expect):
    assert classify(expect, passed=True) == expect


def test_a_failing_case_is_a_crash_silent_wrong_or_lost():
    assert classify("clear error", False, exc_type=AssertionError, message="assert 'a.png' in 'bad'") == "silent wrong"
    assert classify("clear error", False, exc_type=Exception, message="DID NOT RAISE <class 'ImageError'>") \
        == "silent wrong"  # the bad input was accepted
    assert classify("handled", False, exc_type=AssertionError, message="assert 46 == 48") == "silent wrong"
    assert classify("nothing lost", False, exc_type=AssertionError, message="assert False") == "lost"
    assert classify("clear error", False, exc_type=ZeroDivisionError, message="division by zero") == "crash"
    assert classify("clear error", False, exc_type=AssertionError,
                    message="Regex pattern did not match.\n Regex: 'a.png'") == "crash"  # an unclear error
    assert classify("handled", False, skipped=True) == "skipped"


def test_the_summary_counts_every_outcome_and_names_what_went_wrong():
    lines = summary_lines({"t::a": ("clear error", "clear error", ""), "t::b": ("handled", "silent wrong", "assert 1 == 2"),
                           "t::c": ("nothing lost", "lost", "gone")})
    text = "\n".join(lines)
    assert lines[0].endswith(": 3 cases")
    for label, count in (("clear errors", 1), ("crashes", 0), ("silent wrong", 1), ("lost", 1)):
        assert any(line.split()[:len(label.split()) + 1] == [*label.split(), str(count)] for line in lines), label
    assert "SILENT WRONG: t::b: assert 1 == 2" in text and "LOST: t::c: gone" in text
