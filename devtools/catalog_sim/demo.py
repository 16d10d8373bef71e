"""Made-up but plausible ASU sections for demos, and the drift that keeps them changing.

Everything here is generated (no real people): same seed, same catalog.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec

from devtools.catalog_sim.sections import SimSection

DEMO_TERMS = ("2271", "2274")
# Spotlight sections open a seat, then fill again, every this many drift ticks, staggered by one tick,
# so whoever watches the printed examples sees both transitions within a minute or two.
SPOTLIGHT_PERIOD = 6

_COURSES = (
    ("CSE", "110", "Principles of Programming"),
    ("CSE", "205", "Object-Oriented Programming and Data Structures"),
    ("CSE", "230", "Computer Organization and Assembly Language Programming"),
    ("CSE", "310", "Data Structures and Algorithms"),
    ("CSE", "340", "Principles of Programming Languages"),
    ("CSE", "360", "Introduction to Software Engineering"),
    ("CSE", "412", "Database Management"),
    ("CSE", "475", "Foundations of Machine Learning"),
    ("MAT", "265", "Calculus for Engineers I"),
    ("MAT", "266", "Calculus for Engineers II"),
    ("MAT", "343", "Applied Linear Algebra"),
    ("STP", "226", "Elements of Statistics"),
    ("PHY", "121", "University Physics I: Mechanics"),
    ("CHM", "113", "General Chemistry I"),
    ("BIO", "181", "General Biology I"),
    ("ENG", "101", "First-Year Composition"),
    ("ECN", "211", "Macroeconomic Principles"),
    ("PSY", "101", "Introduction to Psychology"),
)
_FIRST = (
    "Ana",
    "Wei",
    "Priya",
    "Marcus",
    "Elena",
    "Tomás",
    "Grace",
    "Omar",
    "Hana",
    "Devin",
    "Lucía",
    "Ravi",
)
_LAST = ("Whitfield", "Okafor", "Lindqvist", "Navarro", "Castellano", "Brandt", "Iwasaki", "Mehta", "Solano")
_CAPS = (25, 40, 75, 75, 150, 200)
_DAYS = ("M W", "T Th", "M W F", "T", "F")
_SLOTS = (
    ("9:00 AM", "10:15 AM"),
    ("10:30 AM", "11:45 AM"),
    ("12:00 PM", "1:15 PM"),
    ("1:30 PM", "2:45 PM"),
    ("4:30 PM", "5:45 PM"),
    ("7:30 PM", "8:45 PM"),
)
_CAMPUSES = ("TEMPE", "TEMPE", "TEMPE", "POLY", "DTPHX")


def demo_sections(seed: int = 7) -> list[SimSection]:
    """About 40 sections over two terms; roughly half full, some taught by Staff."""
    rng = random.Random(seed)
    used: set[str] = set()
    sections: list[SimSection] = []
    for term, course_count in zip(DEMO_TERMS, (13, 7), strict=True):
        for subject, catalog_nbr, title in rng.sample(_COURSES, course_count):
            # Two sections of a course get neighbouring class numbers, as at ASU: that is what makes the
            # class search return near misses.
            base = _free_base(rng, used)
            for offset in (0, rng.randint(1, 5)):
                class_nbr = str(base + offset)
                used.add(class_nbr)
                sections.append(_section(rng, term, class_nbr, subject, catalog_nbr, title))
    return sections


def spotlight(sections: Sequence[SimSection], size: int = 3) -> list[SimSection]:
    """Full sections, one per course where possible: the ones the demo keeps opening and filling."""
    chosen: list[SimSection] = []
    courses: set[tuple[str, str, str]] = set()
    for section in sorted(sections, key=lambda s: (s.term, s.class_nbr)):
        course = (section.term, section.subject, section.catalog_nbr)
        if section.enrl_tot >= section.enrl_cap and section.instructors and course not in courses:
            chosen.append(section)
            courses.add(course)
        if len(chosen) == size:
            break
    return chosen


def drift(
    sections: Sequence[SimSection], rng: random.Random, spotlit: Sequence[tuple[str, str]], tick: int
) -> list[SimSection]:
    """The sections that change at drift step `tick` (new values); the caller stores them."""
    changed: dict[tuple[str, str], SimSection] = {}
    by_key = {s.key: s for s in sections}
    for index, key in enumerate(spotlit):
        section = by_key.get(key)
        if section is not None and (tick - index) % SPOTLIGHT_PERIOD == 0:
            changed[key] = _toggle(section, rng)
    others = [s for s in sections if s.key not in set(spotlit)]
    for section in rng.sample(others, min(len(others), rng.randint(1, 3))):
        changed[section.key] = _wander(section, rng)
    staff = [s for s in others if not s.instructors and s.key not in changed]
    if staff and rng.random() < 0.2:
        section = rng.choice(staff)
        changed[section.key] = msgspec.structs.replace(section, instructors=[_name(rng)])
    return [section for key, section in changed.items() if section != by_key[key]]


def _toggle(section: SimSection, rng: random.Random) -> SimSection:
    if section.enrl_tot >= section.enrl_cap:
        return msgspec.structs.replace(section, enrl_tot=section.enrl_cap - rng.randint(1, 2))
    return msgspec.structs.replace(section, enrl_tot=section.enrl_cap)


def _wander(section: SimSection, rng: random.Random) -> SimSection:
    cap, total = section.enrl_cap, section.enrl_tot
    if total >= cap:
        total = cap - 1 if rng.random() < 0.5 else cap
    elif rng.random() < 0.5:
        total = cap
    else:
        total = max(0, min(cap, total + rng.choice((-2, -1, 1, 2))))
    return msgspec.structs.replace(section, enrl_tot=total)


def _section(
    rng: random.Random, term: str, class_nbr: str, subject: str, catalog_nbr: str, title: str
) -> SimSection:
    cap = rng.choice(_CAPS)
    roll = rng.random()
    if roll < 0.05:
        total = cap + rng.randint(1, 3)  # over-enrolled sections exist; they still have no open seat
    elif roll < 0.5:
        total = cap
    else:
        total = rng.randint(cap // 3, cap - 1)
    people = rng.random()
    instructors = [] if people < 0.2 else [_name(rng), _name(rng)] if people > 0.9 else [_name(rng)]
    online = rng.random() < 0.25 or (term.endswith("4") and rng.random() < 0.3)
    days, (start, end) = rng.choice(_DAYS), rng.choice(_SLOTS)
    return SimSection(
        term=term,
        class_nbr=class_nbr,
        subject=subject,
        catalog_nbr=catalog_nbr,
        title=title,
        enrl_cap=cap,
        enrl_tot=total,
        instructors=instructors,
        section=str(rng.randint(1001, 1099) if not online else rng.randint(2001, 2099)),
        days="" if online else days,
        start_time=None if online else start,
        end_time=None if online else end,
        location="ASUONLINE" if online else rng.choice(_CAMPUSES),
        instruction_mode="OL" if online else "P",
        reserved=rng.random() < 0.15,
    )


def _name(rng: random.Random) -> str:
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    # ASU shows nicknames in quotes ("'YZ' Yezhou Yang"); keep some so consumers meet them.
    if rng.random() < 0.1:
        initials = "".join(part[0] for part in name.split())
        return f"'{initials}' {name}"
    return name


def _free_base(rng: random.Random, used: set[str]) -> int:
    while True:
        base = rng.randrange(1000, 9999) * 10
        if not any(str(base + offset) in used for offset in range(10)):
            return base
