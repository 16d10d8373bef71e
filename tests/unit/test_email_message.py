from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from html.parser import HTMLParser
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import pytest

from services.notifier import email as email_module
from services.notifier.email import Email, Recipient, arizona_time, render, render_account
from shared.asu import catalog_url
from shared.events import AccountEmail, AccountEmailKind, ChangeKind, SectionChange, SectionState
from shared.tokens import (
    RESET_PASSWORD,
    STOP_WATCHING,
    UNSUBSCRIBE,
    UNSUBSCRIBE_TTL,
    VERIFY_EMAIL,
    ExpiredToken,
    InvalidToken,
    verify,
)

SECRET = "unit-secret-key-0123456789"
SITE = "https://pickmyclass.test"
SENDER = "PickMyClass <alerts@pickmyclass.test>"
TRICKY_NAME = "'YZ' <b>Yang</b>"
DETECTED_AT = 1_790_000_000.0
# 2026-11-24 22:04:30 UTC: 3:04 PM in Arizona, which keeps MST (UTC-7) all year.
SCRAPED_AT = 1_795_557_870.0
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


def _change(
    kind: ChangeKind,
    old_instructors: tuple[str, ...] = (),
    *,
    scraped_at: float = 0.0,
    old_open_seats: int = 0,
    **state: object,
) -> SectionChange:
    return SectionChange(
        kind=kind,
        change_key="snap-1",
        detected_at=DETECTED_AT,
        old_open_seats=old_open_seats,
        old_instructors=old_instructors,
        state=msgspec.structs.replace(BASE_STATE, **state),
        scraped_at=scraped_at,
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


def test_each_alert_offers_to_stop_watching_just_this_section() -> None:
    email = _render(_change("seat_opened"))

    match = re.search(rf"{re.escape(SITE)}/stop-watching\?token=(\S+)", email.text)
    assert match is not None
    # The watch's id, not the user's: it ends this watch only.
    assert verify(SECRET, STOP_WATCHING, match.group(1), now=DETECTED_AT) == "7"
    assert match.group(0) in _parse(email.html).hrefs


def _visible_text(email: Email) -> str:
    return " ".join(_parse(email.html).text)


def test_seat_filled_says_the_seat_is_gone() -> None:
    email = _render(_change("seat_filled", old_open_seats=1, open_seats=0, enrl_tot=150))

    assert email.subject == "The seat in CSE 310 (66445) is gone"
    for part in (email.text, _visible_text(email)):
        assert "The seat we told you about in CSE 310 (66445) was taken" in part
        assert "We will email you when a seat opens again" in part
        assert "0 of 150 seats open" in part
    several = _render(_change("seat_filled", old_open_seats=3, open_seats=0, enrl_tot=150))
    assert "The 3 seats we told you about in CSE 310 (66445) were taken" in several.text


def test_waitlist_opened_counts_the_open_spots() -> None:
    email = _render(_change("waitlist_opened", open_seats=0, enrl_tot=150, wait_cap=10, wait_tot=8))

    assert email.subject == "Waitlist open: CSE 310 (66445)"
    for part in (email.text, _visible_text(email)):
        assert "its waitlist has room again: 2 spots are open" in part
        assert "2 of 10 waitlist spots open" in part


def test_section_cancelled_points_to_other_sections() -> None:
    email = _render(_change("section_cancelled", class_status="X", reserved_seats=True))

    assert email.subject == "Cancelled: CSE 310 (66445)"
    assert "Look for another section of CSE 310 in the catalog" in email.text
    # Seats of a cancelled section are nobody's: no reserved-seat note.
    assert "reserved" not in email.text


def test_section_gone_says_it_is_no_longer_checked_and_what_to_do() -> None:
    email = _render(_change("section_gone", reserved_seats=True, title="Ethics & <Society>"))

    assert email.subject == "CSE 310 (class 66445) is no longer listed"
    assert email.idempotency_id == "7:section_gone:snap-1"
    for part in (email.text, _visible_text(email)):
        assert "CSE 310 (class 66445) is no longer listed" in part
        assert "The last 3 checks of ASU's class search did not list CSE 310 (class 66445)" in part
        assert "so we stopped checking it" in part
        assert "If it comes back, we will check it again" in part
        assert "Remove the watch if you no longer need it, or keep it" in part
        assert "Ethics & <Society>" in part
        assert "Ruben Acuna" in part
        assert "You are watching CSE 310 (66445) on PickMyClass" in part
        # The last seat counts are no longer true, and reserved seats are nobody's.
        assert "seats open" not in part
        assert "reserved" not in part
    assert "<Society>" not in email.html
    assert catalog_url("2267", "66445") in _parse(email.html).hrefs


def test_section_gone_of_a_section_never_found_names_its_number_and_term() -> None:
    unknown = SectionState(
        term="2267",
        class_nbr="66445",
        subject="",
        catalog_nbr="",
        title="",
        enrl_cap=0,
        enrl_tot=0,
        open_seats=0,
    )
    email = _render(
        SectionChange(
            kind="section_gone",
            change_key="m3",
            detected_at=DETECTED_AT,
            old_open_seats=0,
            old_instructors=(),
            state=unknown,
        )
    )

    assert email.subject == "Class 66445 in Fall 2026 is no longer listed"
    for part in (email.text, _visible_text(email)):
        assert "did not list class 66445 in Fall 2026, so we stopped checking it" in part
        assert "You are watching class 66445 in Fall 2026 on PickMyClass" in part
        assert "Class number" in part
        # Nothing else is known: no empty course, title or seat rows.
        for row in ("Course", "Title", "Instructor", "Seats", "Staff", "()"):
            assert row not in part


@pytest.mark.parametrize(
    "kind", ["seat_opened", "seat_filled", "instructor_changed", "waitlist_opened", "section_gone"]
)
def test_every_kind_keeps_the_unsubscribe_headers_and_link(kind: ChangeKind) -> None:
    email = _render(_change(kind, old_instructors=("Staff",), instructors=("Ada Lovelace",)))

    assert email.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = email.headers["List-Unsubscribe"].strip("<>")
    assert unsubscribe_url in email.text
    assert unsubscribe_url in _parse(email.html).hrefs
    assert email.idempotency_id == f"7:{kind}:snap-1"


def test_the_email_says_when_the_class_search_was_read_in_arizona_time() -> None:
    email = _render(_change("seat_opened", scraped_at=SCRAPED_AT))

    for part in (email.text, _visible_text(email)):
        assert "Checked at 3:04 PM Arizona time on Tue, Nov 24." in part


def test_without_a_scrape_time_the_detection_time_is_shown() -> None:
    email = _render(_change("seat_opened"))

    assert f"Checked at {arizona_time(DETECTED_AT)}." in email.text
    assert arizona_time(DETECTED_AT) == "7:13 AM Arizona time on Mon, Sep 21"


def test_arizona_time_has_no_daylight_saving() -> None:
    # 2026-07-20 00:00 UTC: Phoenix is still UTC-7 (5 PM) while the rest of Mountain time is UTC-6 (6 PM).
    assert arizona_time(1_784_505_600.0) == "5:00 PM Arizona time on Sun, Jul 19"
    assert arizona_time(1_784_462_400.0).startswith("5:00 AM")


def test_without_a_time_zone_database_arizona_is_mst(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(key: str) -> ZoneInfo:
        raise ZoneInfoNotFoundError(key)

    monkeypatch.setattr(email_module, "ZoneInfo", missing)
    zone = email_module.arizona.__wrapped__()
    for month in (1, 7):
        assert zone.utcoffset(datetime(2026, month, 1)) == timedelta(hours=-7)


def test_text_has_no_html_entities_and_html_has_no_raw_markup() -> None:
    email = _render(_change("seat_opened", title="Ethics & <Society>", location="A&B"))

    assert "Ethics & <Society>" in email.text
    assert "&amp;" not in email.text
    assert "<Society>" not in email.html
    assert "Ethics & <Society>" in _visible_text(email)


ACCOUNT_EXPIRES = SCRAPED_AT + 3600


def _account(kind: AccountEmailKind, to: str = "sparky@asu.edu") -> AccountEmail:
    linked = kind != "already_registered"
    return AccountEmail(
        kind=kind,
        user_id=42,
        to=to,
        nonce="n0nce-abc" if linked else "",
        expires_at=ACCOUNT_EXPIRES if linked else 0.0,
        requested_at=SCRAPED_AT,
    )


def _render_account(event: AccountEmail) -> Email:
    return render_account(event, site_url=SITE + "/", secret_key=SECRET, sender=SENDER)


@pytest.mark.parametrize(
    ("kind", "path", "purpose", "subject"),
    [
        ("verify", "/verify", VERIFY_EMAIL, "Verify your email for PickMyClass"),
        ("reset", "/reset", RESET_PASSWORD, "Reset your PickMyClass password"),
    ],
)
def test_an_account_link_carries_the_signed_nonce_until_it_expires(
    kind: AccountEmailKind, path: str, purpose: str, subject: str
) -> None:
    email = _render_account(_account(kind))

    assert email.subject == subject
    assert email.to == "sparky@asu.edu"
    assert email.sender == SENDER
    # Named by the nonce's digest: the id is logged and stored, the nonce is half of the link.
    assert email.idempotency_id == f"account-{kind}-42-{hashlib.sha256(b'n0nce-abc').hexdigest()[:32]}"
    assert "n0nce" not in email.idempotency_id
    [link] = [href for href in _parse(email.html).hrefs if href.startswith(f"{SITE}{path}?token=")]
    assert link in email.text
    token = link.split("token=")[1]
    assert verify(SECRET, purpose, token, now=ACCOUNT_EXPIRES - 1) == "n0nce-abc"
    with pytest.raises(ExpiredToken):
        verify(SECRET, purpose, token, now=ACCOUNT_EXPIRES + 1)
    other = RESET_PASSWORD if purpose == VERIFY_EMAIL else VERIFY_EMAIL
    with pytest.raises(InvalidToken, match="bad signature"):
        verify(SECRET, other, token, now=ACCOUNT_EXPIRES - 1)
    assert "The link works once, until 4:04 PM Arizona time on Tue, Nov 24." in email.text
    # Transactional: nothing to unsubscribe from, and alerts being off must not block it.
    assert email.headers == {}


def test_already_registered_points_to_log_in_and_reset_and_carries_no_token() -> None:
    email = _render_account(_account("already_registered"))

    assert email.subject == "Someone tried to register with your address"
    assert email.idempotency_id == f"account-already_registered-42-{int(SCRAPED_AT * 1000)}"
    assert "token=" not in email.text + email.html
    assert _parse(email.html).hrefs == [f"{SITE}/", f"{SITE}/#forgot"]
    for part in (email.text, _visible_text(email)):
        assert "Someone tried to create a PickMyClass account with sparky@asu.edu" in part
        assert "log in with your password, or reset your password" in part


def test_account_emails_escape_the_address_in_html() -> None:
    email = _render_account(_account("verify", to="<b>x</b>@asu.edu"))

    assert "<b>x</b>@asu.edu" in email.text
    assert "b" not in _parse(email.html).tags
    assert "<b>x</b>@asu.edu" in _visible_text(email)


@pytest.mark.parametrize("kind", ["verify", "reset", "already_registered"])
def test_account_rendering_is_deterministic(kind: AccountEmailKind) -> None:
    assert _render_account(_account(kind)) == _render_account(_account(kind))


def test_rendering_is_deterministic_so_a_retry_sends_the_same_bytes() -> None:
    change = _change("seat_opened")

    assert _render(change) == _render(change)


def test_unsubscribe_link_lives_sixty_days_from_the_change() -> None:
    token = _render(_change("seat_opened")).headers["List-Unsubscribe"].split("token=")[1].rstrip(">")

    assert verify(SECRET, UNSUBSCRIBE, token, now=DETECTED_AT + UNSUBSCRIBE_TTL - 1) == "42"
    with pytest.raises(InvalidToken, match="expired"):
        verify(SECRET, UNSUBSCRIBE, token, now=DETECTED_AT + UNSUBSCRIBE_TTL + 1)
