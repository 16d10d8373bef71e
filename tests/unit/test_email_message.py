from __future__ import annotations

import re
from html.parser import HTMLParser

import msgspec
import pytest

from services.notifier.email import Email, Recipient, render
from shared.asu import catalog_url
from shared.events import ChangeKind, SectionChange, SectionState
from shared.tokens import UNSUBSCRIBE, UNSUBSCRIBE_TTL, InvalidToken, verify

SECRET = "unit-secret-key-0123456789"
SITE = "https://pickmyclass.test"
SENDER = "PickMyClass <alerts@pickmyclass.test>"
TRICKY_NAME = "'YZ' <b>Yang</b>"
DETECTED_AT = 1_790_000_000.0
RECIPIENT = Recipient(watch_id=7, user_id=42, email="sparky@asu.edu")


BASE_STATE = SectionState(
    term="2267",
    class_nbr="66445",
    subject="CSE",
    catalog_nbr="310",
    title="Data Structures and Algorithms",
    section="1011",
    instructors=("Ruben Acuna",),
    enrl_cap=150,
    enrl_tot=147,
    open_seats=3,
    days="M W",
    start_time="4:30 PM",
    end_time="5:45 PM",
    location="PSH153",
)


def _change(kind: ChangeKind, old_instructors: tuple[str, ...] = (), **state: object) -> SectionChange:
    return SectionChange(
        kind=kind,
        change_key="snap-1",
        detected_at=DETECTED_AT,
        old_open_seats=0,
        old_instructors=old_instructors,
        state=msgspec.structs.replace(BASE_STATE, **state),
    )


def _render(change: SectionChange) -> Email:
    return render(change, RECIPIENT, site_url=SITE, secret_key=SECRET, sender=SENDER)


class _Visible(HTMLParser):
    """The text a mail client shows and the tags it builds, to check what the HTML really contains."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.hrefs += [value for name, value in attrs if name == "href" and value]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Visible:
    parser = _Visible()
    parser.feed(html)
    return parser


def test_seat_opened_subject_and_both_parts() -> None:
    email = _render(_change("seat_opened"))

    assert email.subject == "Seat available: CSE 310 (66445)"
    assert email.to == "sparky@asu.edu"
    assert email.sender == SENDER
    assert email.idempotency_id == "7:seat_opened:snap-1"
    for part in (email.text, " ".join(_parse(email.html).text)):
        for fact in ("CSE 310", "Data Structures and Algorithms", "1011", "Fall 2026", "Ruben Acuna"):
            assert fact in part
        assert "3 of 150 seats open" in part
        assert "M W 4:30 PM–5:45 PM" in part
        assert "PSH153" in part
        assert "You are watching CSE 310 (66445) on PickMyClass" in part


def test_seat_opened_links_to_the_catalog_in_both_parts() -> None:
    email = _render(_change("seat_opened"))
    link = catalog_url("2267", "66445")

    assert link in email.text
    assert link in _parse(email.html).hrefs


def test_reserved_warning_only_when_seats_may_be_reserved() -> None:
    warning = "Some seats may be reserved for specific student groups"
    reserved = _render(_change("seat_opened", reserved_seats=True))
    unreserved = _render(_change("seat_opened", reserved_seats=False))

    assert warning in reserved.text
    assert warning in reserved.html
    assert warning not in unreserved.text
    assert warning not in unreserved.html


def test_dynamic_values_are_escaped_in_html() -> None:
    email = _render(
        _change("instructor_changed", old_instructors=("Staff Person",), instructors=(TRICKY_NAME,))
    )
    page = _parse(email.html)

    assert "<b>Yang</b>" not in email.html
    assert "b" not in page.tags
    assert TRICKY_NAME in "".join(page.text)
    assert TRICKY_NAME in email.text


def test_instructor_assigned_when_it_was_staff() -> None:
    email = _render(_change("instructor_changed", old_instructors=(), instructors=("Yezhou Yang",)))

    assert email.subject == "Instructor assigned: CSE 310 (66445)"
    assert "Staff" in email.text
    assert "Yezhou Yang" in email.text
    assert "ratemyprofessors.com" in email.text
    assert any("ratemyprofessors.com" in href and "Yezhou" in href for href in _parse(email.html).hrefs)


def test_instructor_changed_between_named_people() -> None:
    email = _render(
        _change("instructor_changed", old_instructors=("Ruben Acuna",), instructors=("Yezhou Yang",))
    )

    assert email.subject == "Instructor changed: CSE 310 (66445)"
    assert "from Ruben Acuna to Yezhou Yang" in email.text
    hrefs = _parse(email.html).hrefs
    assert any("Ruben" in href for href in hrefs)
    assert any("Yezhou" in href for href in hrefs)


def test_list_unsubscribe_headers_carry_a_token_for_the_user() -> None:
    email = _render(_change("seat_opened"))

    assert email.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(
        rf"<{re.escape(SITE)}/unsubscribe\?token=([^>]+)>", email.headers["List-Unsubscribe"]
    )
    assert match is not None
    token = match.group(1)
    assert verify(SECRET, UNSUBSCRIBE, token, now=DETECTED_AT) == "42"
    unsubscribe_url = f"{SITE}/unsubscribe?token={token}"
    assert unsubscribe_url in email.text
    assert unsubscribe_url in _parse(email.html).hrefs


def test_seat_filled_is_not_emailed() -> None:
    with pytest.raises(ValueError, match="seat_filled"):
        _render(_change("seat_filled", open_seats=0, enrl_tot=150))


def test_rendering_is_deterministic_so_a_retry_sends_the_same_bytes() -> None:
    change = _change("seat_opened")

    assert _render(change) == _render(change)


def test_unsubscribe_link_lives_sixty_days_from_the_change() -> None:
    token = _render(_change("seat_opened")).headers["List-Unsubscribe"].split("token=")[1].rstrip(">")

    assert verify(SECRET, UNSUBSCRIBE, token, now=DETECTED_AT + UNSUBSCRIBE_TTL - 1) == "42"
    with pytest.raises(InvalidToken, match="expired"):
        verify(SECRET, UNSUBSCRIBE, token, now=DETECTED_AT + UNSUBSCRIBE_TTL + 1)
