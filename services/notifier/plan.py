"""Who gets which email for a batch of changes, and how emails are grouped per provider call (pure)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple, TypeVar

from services.notifier.backends import MAX_BATCH
from services.notifier.claims import ClaimKey
from services.notifier.email import Email, Recipient
from services.notifier.recipients import Watcher
from shared.alerts import wants
from shared.events import SectionChange


class Notice(NamedTuple):
    key: ClaimKey
    recipient: Recipient
    change: SectionChange


def plan(
    changes: Sequence[SectionChange],
    watchers: dict[tuple[str, str], list[Watcher]],
    told: set[tuple[int, str]],
) -> list[Notice]:
    """One notice per (watch, kind, change) that the watch wants, whatever duplicates the batch holds.

    A fill (`seat_filled`) is news only to a watch that chose "closed again" and was told about the
    opening it ends (`told`: (watch, change key) pairs); otherwise it just re-arms every watcher, since
    the next opening is a new change.
    """
    notices: dict[ClaimKey, Notice] = {}
    for change in changes:
        for watcher in watchers.get((change.state.term, change.state.class_nbr), []):
            recipient = watcher.recipient
            if not wants(watcher.alerts, change.kind):
                continue
            if change.kind == "seat_filled" and (recipient.watch_id, change.change_key) not in told:
                continue
            key = ClaimKey(recipient.watch_id, change.kind, change.change_key)
            notices.setdefault(key, Notice(key, recipient, change))
    return [notices[key] for key in sorted(notices)]


T = TypeVar("T")


def chunks(items: Sequence[T], size: int = MAX_BATCH) -> list[Sequence[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def idempotency_key(emails: Sequence[Email]) -> str:
    """A function of what is sent: the same emails always get the same key, so a provider call repeated
    after a crash is recognised by the provider (Resend keeps keys 24 h) instead of sending twice."""
    digest = hashlib.sha256("\n".join(sorted(email.idempotency_id for email in emails)).encode()).hexdigest()
    return f"pmc-{digest}"
