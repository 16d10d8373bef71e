"""Which checks a scheduling window asks for (pure)."""

from __future__ import annotations

import math
from collections import defaultdict

from services.scheduler.sections import WatchedSection
from shared.events import CheckCourse, CheckSection, encode
from shared.messaging import Outgoing
from shared.streams import Topology


def seconds_until_next_window(now: float, interval: int) -> float:
    return (math.floor(now / interval) + 1) * interval - now


def check_messages(
    topology: Topology, sections: list[WatchedSection], window: int, now: float
) -> list[Outgoing]:
    """One check per course with watched sections (one search answers for all of its sections), and one
    per section not seen yet (its course is unknown until then).

    The message ids name (course or section, window), so every scheduler replica publishing the same
    window produces the same ids and JetStream keeps one of each.
    """
    courses: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    unseen: set[tuple[str, str]] = set()
    for section in sections:
        if section.subject and section.catalog_nbr:
            courses[(section.term, section.subject, section.catalog_nbr)].add(section.class_nbr)
        else:
            unseen.add((section.term, section.class_nbr))
    messages = [
        Outgoing(
            topology.check_course_subject,
            encode(
                CheckCourse(
                    term=term,
                    subject=subject,
                    catalog_nbr=catalog_nbr,
                    class_nbrs=tuple(sorted(class_nbrs)),
                    window=window,
                    requested_at=now,
                )
            ),
            topology.check_course_msg_id(term, subject, catalog_nbr, window),
        )
        for (term, subject, catalog_nbr), class_nbrs in sorted(courses.items())
    ]
    messages.extend(
        Outgoing(
            topology.check_subject,
            encode(CheckSection(term=term, class_nbr=class_nbr, window=window, requested_at=now)),
            topology.check_msg_id(term, class_nbr, window),
        )
        for term, class_nbr in sorted(unseen)
    )
    return messages
