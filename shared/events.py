"""Event structs on the wire. Each carries a schema version `v`; a consumer rejects versions it does not know.

Encoding is JSON (msgspec): readable with `nats sub` and on the NATS monitoring pages.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import msgspec

SCHEMA_VERSION = 1

# seat_opened: 0 → >0 open seats in an active section; seat_filled: >0 → 0; instructor_changed: Staff →
# named, or the names change; waitlist_opened: a full section's full waitlist gets room; section_cancelled:
# an active section turns inactive (CLASSSTAT other than A), told once, then no longer checked;
# section_gone: the class search has not listed the section in 3 consecutive windows (and that was no
# not-found storm), told once, then no longer checked until it is seen again.
ChangeKind = Literal[
    "seat_opened",
    "seat_filled",
    "instructor_changed",
    "waitlist_opened",
    "section_cancelled",
    "section_gone",
]


class Event(msgspec.Struct, frozen=True, kw_only=True):
    v: int = SCHEMA_VERSION


class CheckSection(Event, frozen=True, kw_only=True):
    """Scheduler → scraper: look this section up now. `window` is the scheduling window it belongs to."""

    term: str
    class_nbr: str
    window: int
    requested_at: float


class CheckCourse(Event, frozen=True, kw_only=True):
    """Scheduler → scraper: look the whole course up now (one search, every page), and report every section
    of it. `class_nbrs` are the watched sections due in it: those the answer lacks are reported missing."""

    term: str
    subject: str
    catalog_nbr: str
    class_nbrs: tuple[str, ...]
    window: int
    requested_at: float


class SectionState(msgspec.Struct, frozen=True, kw_only=True):
    """What the class search says about one section at one moment."""

    term: str
    class_nbr: str
    subject: str
    catalog_nbr: str
    title: str
    section: str = ""
    component: str = ""
    instructors: tuple[str, ...] = ()
    enrl_cap: int
    enrl_tot: int
    open_seats: int
    wait_cap: int = 0
    wait_tot: int = 0
    reserved_seats: bool = False
    days: str = ""
    start_time: str | None = None
    end_time: str | None = None
    location: str = ""
    instruction_mode: str = ""
    class_status: str = "A"
    # The term's last day as the class search lists it (`TERMENDDATE`, "2026-12-14"); "" when not given.
    term_end: str = ""

    @property
    def course(self) -> str:
        return f"{self.subject} {self.catalog_nbr}"


class SectionSnapshot(Event, frozen=True, kw_only=True):
    """Scraper → detector: a section was found. `snapshot_id` is unique per observation."""

    snapshot_id: str
    scraped_at: float
    state: SectionState


class SectionNotFound(Event, frozen=True, kw_only=True):
    """Scraper → detector: the class search has no row with this class number in this term."""

    snapshot_id: str
    scraped_at: float
    term: str
    class_nbr: str


class SectionChange(Event, frozen=True, kw_only=True):
    """Detector → notifier: something a watcher cares about happened.

    `change_key` identifies this transition (the snapshot that observed it), so every retry and every
    replica names the same change the same way: it is the Nats-Msg-Id suffix and part of the claim key.
    """

    kind: ChangeKind
    change_key: str
    detected_at: float
    old_open_seats: int
    old_instructors: tuple[str, ...]
    state: SectionState
    # When the snapshot that saw the change was taken (the start of "seat open → email" latency);
    # 0 from publishers that predate the field.
    scraped_at: float = 0.0


AccountEmailKind = Literal["verify", "reset", "already_registered"]


class AccountEmail(Event, frozen=True, kw_only=True):
    """Gateway → notifier: an account email to send (the notifier is the only sender).

    `nonce` names a single-use token the gateway stored; the notifier signs it with SECRET_KEY into the
    link, so the stream never holds a usable link on its own. `already_registered` carries no token.
    """

    kind: AccountEmailKind
    user_id: int
    to: str
    nonce: str = ""
    expires_at: float = 0.0
    requested_at: float


class ProviderEvent(Event, frozen=True, kw_only=True):
    """Gateway → notifier: a verified webhook from the email provider (Resend, Svix-signed).

    `svix_id` is the webhook's id (the Nats-Msg-Id, so a replay is stored once); `email_id` is the
    provider's id of the email (`notification.provider_id`); `bounce_type` is Resend's (`Permanent`,
    `Transient`, ...) for `email.bounced`.
    """

    svix_id: str
    type: str
    email_id: str
    to: tuple[str, ...] = ()
    bounce_type: str = ""
    created_at: float


class SectionLive(Event, frozen=True, kw_only=True):
    """Detector → gateway (core NATS, not persisted): the latest state of a section, for live pages."""

    checked_at: float
    state: SectionState | None
    term: str
    class_nbr: str
    found: bool


class WatchesChanged(Event, frozen=True, kw_only=True):
    """Gateway → gateway (core NATS): a user's set of watches changed; open live streams refresh theirs."""

    user_id: int


class DeadLetter(Event, frozen=True, kw_only=True):
    """A message that could not be handled, kept for an operator with the reason."""

    subject: str
    consumer: str
    deliveries: int
    error: str
    failed_at: float
    data: str


E = TypeVar("E", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()


class UnknownSchemaVersion(ValueError):
    pass


def encode(event: msgspec.Struct) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes, kind: type[E]) -> E:
    """Decode `data` as `kind`; raises msgspec.ValidationError/DecodeError or UnknownSchemaVersion."""
    event = msgspec.json.decode(data, type=kind)
    version = getattr(event, "v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise UnknownSchemaVersion(
            f"{kind.__name__} schema version {version} (this build reads {SCHEMA_VERSION})"
        )
    return event
