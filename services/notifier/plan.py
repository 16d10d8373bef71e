"""Who gets which email for a batch of changes, and how emails are grouped per provider call (pure)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple, TypeVar

from services.notifier.backends import MAX_BATCH
from services.notifier.claims import ClaimKey
from services.notifier.email import Email, Recipient
from shared.events import SectionChange

# seat_filled is not emailed: it ends an opening, so the next 0 → >0 is a new change_key and every
# watcher of the section is armed again for it without any state to reset.
EMAILED_KINDS = frozenset({"seat_opened", "instructor_changed"})


class Notice(NamedTuple):
    key: ClaimKey
    recipient: Recipient
    change: SectionChange


def plan(changes: Sequence[SectionChange], watchers: dict[tuple[str, str], list[Recipient]]) -> list[Notice]:
    """One notice per (watch, kind, change), whatever duplicates the batch holds."""
    notices: dict[ClaimKey, Notice] = {}
    for change in changes:
        if change.kind not in EMAILED_KINDS:
            continue
        for recipient in watchers.get((change.state.term, change.state.class_nbr), []):
            key = ClaimKey(recipient.watch_id, change.kind, change.change_key)
            notices.setdefault(key, Notice(key, recipient, change))
    return [notices[key] for key in sorted(notices)]


T = TypeVar("T")


def chunks(items: Sequence[T], size: int = MAX_BATCH) -> list[Sequence[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def idempotency_key(emails: Sequence[Email]) -> str:
    """The same set of emails always gets the same key, so a provider call repeated after a crash is
    recognised by the provider (Resend keeps keys 24 h) instead of sending twice."""
    digest = hashlib.sha256("\n".join(sorted(email.idempotency_id for email in emails)).encode()).hexdigest()
    return f"pmc-{digest}"
