"""What a notification email says: subject, plain-text and HTML parts, and one-click unsubscribe headers.

Pure: `render` turns a change and a recipient into an `Email`; sending is the backends' business.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import msgspec

from shared.asu import catalog_url, instructor_label, rate_my_professor_url, term_label
from shared.events import SectionChange, SectionState
from shared.tokens import UNSUBSCRIBE, UNSUBSCRIBE_TTL, sign

_BRAND = "#8c1d40"
_MUTED = "#6b6b6b"
_RESERVED_WARNING = "Some seats may be reserved for specific student groups."


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
class _Link:
    label: str
    url: str


@dataclass(frozen=True)
class _Content:
    subject: str
    headline: str
    lead: str
    rows: list[tuple[str, str]]
    warnings: list[str] = field(default_factory=list)
    # Rows whose value is a list of instructors: each named one gets a Rate My Professors link.
    people: dict[str, tuple[str, ...]] = field(default_factory=dict)


def section_label(state: SectionState) -> str:
    return f"{state.course} ({state.class_nbr})"


def render(
    change: SectionChange, recipient: Recipient, *, site_url: str, secret_key: str, sender: str
) -> Email:
    """The email telling `recipient` about `change`; raises ValueError for kinds that are not emailed."""
    if change.kind == "seat_opened":
        content = _seat_opened(change.state)
    elif change.kind == "instructor_changed":
        content = _instructor_changed(change.state, change.old_instructors)
    else:
        raise ValueError(f"{change.kind} changes are not emailed")
    site = site_url.rstrip("/")
    # Dated from the change, not the clock: a retry renders byte-identical emails, which Resend requires
    # for a reused idempotency key (a different body under the same key is rejected with 409).
    token = sign(secret_key, UNSUBSCRIBE, str(recipient.user_id), UNSUBSCRIBE_TTL, now=change.detected_at)
    unsubscribe_url = f"{site}/unsubscribe?token={token}"
    action = _Link(
        "View the section in the ASU catalog", catalog_url(change.state.term, change.state.class_nbr)
    )
    reason = f"You are watching {section_label(change.state)} on PickMyClass."
    return Email(
        idempotency_id=f"{recipient.watch_id}:{change.kind}:{change.change_key}",
        sender=sender,
        to=recipient.email,
        subject=content.subject,
        text=_text(content, action, reason, unsubscribe_url, site),
        html=_html(content, action, reason, unsubscribe_url, site),
        headers={
            "List-Unsubscribe": f"<{unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def _section_rows(state: SectionState) -> list[tuple[str, str]]:
    rows = [
        ("Course", state.course),
        ("Title", state.title),
        ("Class number", state.class_nbr),
    ]
    if state.section:
        rows.append(("Section", state.section))
    rows += [
        ("Term", term_label(state.term)),
        ("Instructor", instructor_label(state.instructors)),
        ("Seats", f"{state.open_seats} of {state.enrl_cap} seats open"),
    ]
    when = _when(state)
    if when:
        rows.append(("When", when))
    if state.location:
        rows.append(("Where", state.location))
    return rows


def _when(state: SectionState) -> str:
    times = f"{state.start_time}–{state.end_time}" if state.start_time and state.end_time else ""
    return " ".join(part for part in (state.days, times) if part)


def _seat_opened(state: SectionState) -> _Content:
    label = section_label(state)
    seats = "A seat" if state.open_seats == 1 else f"{state.open_seats} seats"
    return _Content(
        subject=f"Seat available: {label}",
        headline=f"Seat available in {label}",
        lead=f"{seats} just opened in {label}. Register soon: open seats go fast.",
        rows=_section_rows(state),
        warnings=[_RESERVED_WARNING] if state.reserved_seats else [],
        people={"Instructor": state.instructors},
    )


def _instructor_changed(state: SectionState, old_instructors: tuple[str, ...]) -> _Content:
    label = section_label(state)
    verb = "assigned" if not old_instructors else "changed"
    old, new = instructor_label(old_instructors), instructor_label(state.instructors)
    rows = [("Was", old), ("Now", new), *(row for row in _section_rows(state) if row[0] != "Instructor")]
    return _Content(
        subject=f"Instructor {verb}: {label}",
        headline=f"Instructor {verb} for {label}",
        lead=(
            f"{new} was assigned to teach {label}."
            if verb == "assigned"
            else f"The instructor of {label} changed from {old} to {new}."
        ),
        rows=rows,
        warnings=[_RESERVED_WARNING] if state.reserved_seats and state.open_seats > 0 else [],
        people={"Was": old_instructors, "Now": state.instructors},
    )


def _text(content: _Content, action: _Link, reason: str, unsubscribe_url: str, site: str) -> str:
    lines = [content.headline, "", content.lead, ""]
    width = max(len(label) for label, _ in content.rows)
    for label, value in content.rows:
        lines.append(f"{label + ':':<{width + 1}} {value}")
        for name in content.people.get(label, ()):
            url = rate_my_professor_url(name)
            if url:
                lines.append(f"  {name} on Rate My Professors: {url}")
    if content.warnings:
        lines.append("")
        lines += [f"Note: {warning}" for warning in content.warnings]
    lines += [
        "",
        f"{action.label}: {action.url}",
        "",
        "-- ",
        reason,
        f"Unsubscribe from all PickMyClass emails: {unsubscribe_url}",
        f"Manage your watches: {site}",
        "",
    ]
    return "\n".join(lines)


def _anchor(link: _Link, text: str, style: str = f"color:{_BRAND}") -> str:
    return f'<a href="{html.escape(link.url)}" style="{style}">{html.escape(text)}</a>'


def _html_value(label: str, value: str, content: _Content) -> str:
    names = content.people.get(label)
    if not names:
        return html.escape(value)
    parts = []
    for name in names:
        url = rate_my_professor_url(name)
        parts.append(_anchor(_Link(name, url), name) if url else html.escape(name))
    return ", ".join(parts)


def _html(content: _Content, action: _Link, reason: str, unsubscribe_url: str, site: str) -> str:
    rows = "".join(
        f'<tr><td style="padding:4px 12px 4px 0;color:{_MUTED};vertical-align:top">{html.escape(label)}</td>'
        f'<td style="padding:4px 0">{_html_value(label, value, content)}</td></tr>'
        for label, value in content.rows
    )
    warnings = "".join(
        '<p style="margin:16px 0;padding:10px 12px;background:#fff4e5;border-left:4px solid #ffb020">'
        f"{html.escape(warning)}</p>"
        for warning in content.warnings
    )
    button = _anchor(
        action,
        action.label,
        f"display:inline-block;padding:12px 20px;background:{_BRAND};color:#ffffff;"
        "text-decoration:none;border-radius:4px;font-weight:bold",
    )
    unsubscribe = _anchor(_Link("Unsubscribe", unsubscribe_url), "Unsubscribe from all PickMyClass emails")
    home = _anchor(_Link("PickMyClass", site), "Manage your watches")
    return (
        "<!DOCTYPE html>"
        '<html><head><meta charset="utf-8"><title>'
        f"{html.escape(content.subject)}</title></head>"
        '<body style="margin:0;padding:24px;background:#f6f6f6;font-family:Arial,Helvetica,sans-serif;'
        'color:#222222">'
        '<div style="max-width:560px;margin:0 auto;padding:24px;background:#ffffff;border-radius:6px">'
        f'<h1 style="margin:0 0 12px;font-size:20px;color:{_BRAND}">{html.escape(content.headline)}</h1>'
        f'<p style="margin:0 0 16px">{html.escape(content.lead)}</p>'
        f'<table style="border-collapse:collapse;font-size:14px">{rows}</table>'
        f"{warnings}"
        f'<p style="margin:24px 0">{button}</p>'
        f'<hr style="border:none;border-top:1px solid #e5e5e5;margin:24px 0 12px">'
        f'<p style="margin:0;font-size:12px;color:{_MUTED}">'
        f"{html.escape(reason)}<br>{unsubscribe} · {home}</p>"
        "</div></body></html>"
    )
