"""What an email says: subject, plain-text and HTML parts, and (for alerts) one-click unsubscribe headers.

Pure: `render` turns a change and a recipient into an `Email`, `render_account` an account request; the
words and layouts are Jinja2 templates (`services/notifier/templates/`, see `templates.py`); sending is the
backends' business. Rendering depends only on its inputs, never on the clock: a retry renders the same
bytes, which Resend requires for a reused idempotency key (a different body under the same key is refused).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from services.notifier import templates
from shared.asu import catalog_url, instructor_label, rate_my_professor_url, term_label
from shared.events import AccountEmail, SectionChange, SectionState
from shared.tokens import UNSUBSCRIBE, UNSUBSCRIBE_TTL, account_link, sign, stop_watching_url


class Email(msgspec.Struct, frozen=True, kw_only=True):
    """One message to one person. `idempotency_id` names it stably, so a retried send is recognisable."""

    idempotency_id: str
    sender: str
    to: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]


class Recipient(msgspec.Struct, frozen=True, kw_only=True):
    watch_id: int
    user_id: int
    email: str


@dataclass(frozen=True)
class Person:
    name: str
    # Rate My Professors search for a named instructor; None for Staff and other placeholders.
    url: str | None


@dataclass(frozen=True)
class Row:
    label: str
    value: str
    # For rows listing instructors: each one, linked where a link makes sense.
    people: list[Person] = field(default_factory=list)


@cache
def arizona() -> tzinfo:
    """ASU's time zone. Arizona keeps MST all year (no daylight saving), so a fixed offset is exact where
    the system has no time zone database (slim images without tzdata)."""
    try:
        return ZoneInfo("America/Phoenix")
    except ZoneInfoNotFoundError:
        return timezone(timedelta(hours=-7), "MST")


def arizona_time(timestamp: float) -> str:
    """`3:04 PM Arizona time on Tue, Nov 24`: how students at ASU read a time."""
    moment = datetime.fromtimestamp(timestamp, UTC).astimezone(arizona())
    hour = moment.hour % 12 or 12
    half = "AM" if moment.hour < 12 else "PM"
    return f"{hour}:{moment.minute:02d} {half} Arizona time on {moment:%a}, {moment:%b} {moment.day}"


def section_label(state: SectionState) -> str:
    """`CSE 310 (12345)`; a section never found (only a `section_gone` tells of one) by number and term."""
    if not state.subject:
        return f"class {state.class_nbr} in {term_label(state.term)}"
    return f"{state.course} ({state.class_nbr})"


def _people(names: tuple[str, ...]) -> list[Person]:
    return [Person(name, rate_my_professor_url(name)) for name in names]


def _when(state: SectionState) -> str:
    times = f"{state.start_time}–{state.end_time}" if state.start_time and state.end_time else ""
    return " ".join(part for part in (state.days, times) if part)


def _rows(change: SectionChange) -> list[Row]:
    state = change.state
    if not state.subject:
        return [Row("Class number", state.class_nbr), Row("Term", term_label(state.term))]
    rows = [Row("Course", state.course), Row("Title", state.title), Row("Class number", state.class_nbr)]
    if state.section:
        rows.append(Row("Section", state.section))
    rows.append(Row("Term", term_label(state.term)))
    if change.kind == "instructor_changed":
        rows[:0] = [
            Row("Was", instructor_label(change.old_instructors), _people(change.old_instructors)),
            Row("Now", instructor_label(state.instructors), _people(state.instructors)),
        ]
    else:
        rows.append(Row("Instructor", instructor_label(state.instructors), _people(state.instructors)))
    # A section no longer listed has no seats now: its last counts would mislead.
    if change.kind != "section_gone":
        rows.append(Row("Seats", f"{state.open_seats} of {state.enrl_cap} seats open"))
    if change.kind in ("waitlist_opened", "seat_filled") and state.wait_cap > 0:
        spots = max(0, state.wait_cap - state.wait_tot)
        rows.append(Row("Waitlist", f"{spots} of {state.wait_cap} waitlist spots open"))
    if when := _when(state):
        rows.append(Row("When", when))
    if state.location:
        rows.append(Row("Where", state.location))
    return rows


def render(
    change: SectionChange, recipient: Recipient, *, site_url: str, secret_key: str, sender: str
) -> Email:
    """The email telling `recipient` about `change` (every kind of change has one)."""
    state = change.state
    label = section_label(state)
    words = templates.wording(
        f"alert/{change.kind}.j2",
        label=label,
        state=state,
        change=change,
        term=term_label(state.term),
        old=instructor_label(change.old_instructors),
        new=instructor_label(state.instructors),
    )
    site = site_url.rstrip("/")
    # Dated from the change, not the clock (see the module's docstring).
    token = sign(secret_key, UNSUBSCRIBE, str(recipient.user_id), UNSUBSCRIBE_TTL, now=change.detected_at)
    unsubscribe_url = f"{site}/unsubscribe?token={token}"
    rows = _rows(change)
    values = {
        **words,
        "label": label,
        "rows": rows,
        "width": max(len(row.label) for row in rows),
        # When the class search was read, which is what the seat count is as of; older publishers
        # did not send scraped_at.
        "checked_at": arizona_time(change.scraped_at or change.detected_at),
        # Open seats someone may not be able to take; a cancelled or vanished section has none worth a
        # warning.
        "reserved": state.reserved_seats
        and state.open_seats > 0
        and change.kind not in ("section_cancelled", "section_gone"),
        "catalog_url": catalog_url(state.term, state.class_nbr),
        "unsubscribe_url": unsubscribe_url,
        "stop_watching_url": stop_watching_url(secret_key, site, recipient.watch_id, now=change.detected_at),
        "site": site,
    }
    return Email(
        idempotency_id=f"{recipient.watch_id}:{change.kind}:{change.change_key}",
        sender=sender,
        to=recipient.email,
        subject=words["subject"],
        text=templates.render("alert.txt", **values),
        html=templates.render("alert.html", **values),
        headers={
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def account_idempotency_id(event: AccountEmail) -> str:
    """What is sent, named: a link email by its nonce, a notice by when it was asked for. The nonce is
    hashed: this id is logged and stored (outbox), and the nonce is half of a link."""
    what = hashlib.sha256(event.nonce.encode()).hexdigest()[:32] if event.nonce else ""
    return f"account-{event.kind}-{event.user_id}-{what or int(event.requested_at * 1000)}"


def render_account(event: AccountEmail, *, site_url: str, secret_key: str, sender: str) -> Email:
    """A verification link, a password reset link, or "someone tried to register with your address"."""
    site = site_url.rstrip("/")
    if event.kind == "already_registered":
        action_url, second_url = f"{site}/", f"{site}/#forgot"
    else:
        action_url = account_link(secret_key, site, event.kind, event.nonce, event.expires_at)
        second_url = ""
    words = templates.wording(
        f"account/{event.kind}.j2",
        to=event.to,
        site=site,
        expires=arizona_time(event.expires_at) if event.expires_at else "",
    )
    values = {**words, "action_url": action_url, "second_url": second_url, "site": site}
    return Email(
        idempotency_id=account_idempotency_id(event),
        sender=sender,
        to=event.to,
        subject=words["subject"],
        text=templates.render("account.txt", **values),
        html=templates.render("account.html", **values),
        # Transactional: no List-Unsubscribe, since turning alerts off must not stop a password reset.
        headers={},
    )
