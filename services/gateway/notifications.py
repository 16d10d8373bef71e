"""`GET /api/v1/notifications`: the alerts a student was sent, newest first, and what became of each.

Read through the `user_notification` view (migration 0006): the notifier owns the notification table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec
from litestar import Request, get
from litestar.di import NamedDependency

from services.gateway.bodies import UnprocessableContent
from shared.asu import term_label

MAX_LIMIT = 100

# Unsent claims first sort by when they were claimed, so an email going out now is at the top.
SELECT_NOTIFICATIONS = """
SELECT n.watch_id, n.kind, n.term, n.class_nbr, n.sent_at, n.status, s.subject, s.catalog_nbr, s.title
FROM user_notification AS n
LEFT JOIN section AS s ON s.term = n.term AND s.class_nbr = n.class_nbr
WHERE n.user_id = $1
ORDER BY COALESCE(n.sent_at, n.claimed_at) DESC, n.watch_id DESC, n.kind, n.change_key DESC
LIMIT $2
"""

Status = Literal["sending", "sent", "delivered", "bounced"]


class NotificationView(msgspec.Struct, frozen=True, kw_only=True):
    watch_id: int
    # The change it told about: seat_opened, instructor_changed, seat_filled (the "closed again" alert),
    # waitlist_opened, section_cancelled, section_gone (no longer listed by the class search).
    kind: str
    term: str
    term_label: str
    class_nbr: str
    # From the latest stored state of the section; null when it was never found.
    course: str | None
    title: str | None
    sent_at: datetime | None
    status: Status


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return MAX_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise UnprocessableContent(detail=f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def notification_view(row: asyncpg.Record) -> NotificationView:
    known = row["subject"] is not None
    return NotificationView(
        watch_id=row["watch_id"],
        kind=row["kind"],
        term=row["term"],
        term_label=term_label(row["term"]),
        class_nbr=row["class_nbr"],
        course=f"{row['subject']} {row['catalog_nbr']}" if known else None,
        title=row["title"] if known else None,
        sent_at=row["sent_at"],
        status=row["status"],
    )


@get("/api/v1/notifications")
async def list_notifications(
    request: Request[Any, Any, Any], user_id: NamedDependency[int], pool: NamedDependency[asyncpg.Pool]
) -> list[NotificationView]:
    """The logged-in user's alerts, newest first: 200 `[notification]` (at most `?limit=`, 1 to 100,
    default 100); 422 for another limit; 401 when not logged in.

    A notification is `{"watch_id", "kind", "term", "term_label", "class_nbr", "course", "title",
    "sent_at", "status"}`; `status` is `sending` (claimed, not sent yet), `sent` (the provider accepted it),
    `delivered` (the recipient's server took it) or `bounced` (it bounced or was marked as spam; no more
    email goes to the address, see `email_status` in `GET /api/v1/auth/me`).
    """
    limit = parse_limit(request.query_params.get("limit"))
    return [notification_view(row) for row in await pool.fetch(SELECT_NOTIFICATIONS, user_id, limit)]
