"""The terms a watch can be added for, and the default, on days around every boundary."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.gateway.terms import arizona_today, term_problem, upcoming_terms


@pytest.mark.parametrize(
    ("today", "codes", "default"),
    [
        # Spring: Jan 1 to May 15, its midpoint March 9.
        (date(2027, 1, 1), ["2271", "2274", "2277"], "2271"),
        (date(2027, 3, 9), ["2271", "2274", "2277"], "2271"),
        (date(2027, 3, 10), ["2271", "2274", "2277"], "2274"),
        (date(2027, 5, 15), ["2271", "2274", "2277"], "2274"),
        # Summer: May 16 to Aug 15, its midpoint June 30.
        (date(2027, 5, 16), ["2274", "2277", "2281"], "2274"),
        (date(2027, 6, 30), ["2274", "2277", "2281"], "2274"),
        (date(2027, 7, 1), ["2274", "2277", "2281"], "2277"),
        (date(2027, 8, 15), ["2274", "2277", "2281"], "2277"),
        # Fall: Aug 16 to Dec 31, its midpoint October 23; Spring registration opens around then.
        (date(2027, 8, 16), ["2277", "2281", "2284"], "2277"),
        (date(2027, 10, 23), ["2277", "2281", "2284"], "2277"),
        (date(2027, 10, 24), ["2277", "2281", "2284"], "2281"),
        (date(2027, 12, 31), ["2277", "2281", "2284"], "2281"),
        (date(2028, 2, 29), ["2281", "2284", "2287"], "2281"),
    ],
)
def test_the_current_term_the_next_two_and_one_default(today: date, codes: list[str], default: str) -> None:
    terms = upcoming_terms(today)
    assert [t.code for t in terms] == codes
    assert [t.code for t in terms if t.default] == [default]


def test_terms_are_labelled() -> None:
    assert [t.label for t in upcoming_terms(date(2026, 11, 25))] == [
        "Fall 2026",
        "Spring 2027",
        "Summer 2027",
    ]


def test_today_is_arizonas_day() -> None:
    # 06:59 UTC on Jan 1 is still Dec 31 in Arizona (UTC-7 all year).
    assert arizona_today(datetime(2027, 1, 1, 6, 59, tzinfo=UTC)) == date(2026, 12, 31)
    assert arizona_today(datetime(2027, 1, 1, 7, 0, tzinfo=UTC)) == date(2027, 1, 1)


@pytest.mark.parametrize(
    ("term", "today", "problem"),
    [
        ("2267", date(2026, 12, 31), None),
        ("2274", date(2026, 12, 31), None),
        (
            "2267",
            date(2027, 1, 1),
            "Fall 2026 (2267) has ended: choose Spring 2027 (2271), Summer 2027 (2274) or Fall 2027 (2277)",
        ),
        (
            "2264",
            date(2026, 11, 25),
            "Summer 2026 (2264) has ended: choose Fall 2026 (2267), Spring 2027 (2271) or Summer 2027 (2274)",
        ),
        (
            "2277",
            date(2026, 11, 25),
            "Fall 2027 (2277) is not open for watches yet: choose Fall 2026 (2267), Spring 2027 (2271) or"
            " Summer 2027 (2274)",
        ),
    ],
)
def test_ended_and_later_terms_are_refused_naming_the_terms_accepted(
    term: str, today: date, problem: str | None
) -> None:
    assert term_problem(term, today) == problem
