"""What a course answer proves about the watched sections it was asked about (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from services.scraper.source import CourseAnswer


@dataclass(frozen=True)
class CourseVerdict:
    # Watched class numbers the class search does not list.
    missing: frozenset[str]
    # Watched class numbers the answer says nothing certain about (unreadable rows, pages not read).
    unknown: frozenset[str]
    # No section of the course at all: a source fault, not a fact (no section is reported missing).
    course_vanished: bool


def judge(watched: tuple[str, ...], answer: CourseAnswer) -> CourseVerdict:
    listed = {state.class_nbr for state in answer.sections}
    absent = frozenset(watched) - listed
    vanished = not answer.sections and not answer.unreadable
    if vanished or not answer.complete:
        return CourseVerdict(frozenset(), absent, vanished)
    return CourseVerdict(absent - answer.unreadable, absent & answer.unreadable, False)
