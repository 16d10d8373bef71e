"""`GET /api/v1/notifications`: the alerts a student was sent, newest first, a page at a time, and what
became of each.

Read through the `user_notification` view (migration 0006): the notifier owns the notification table.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import asyncpg
import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency

from services.gateway.account_api import NOT_LOGGED_IN, problem
from services.gateway.bodies import UnprocessableContent
from shared.asu import term_label

MAX_LIMIT = 100
MAX_CURSOR = 512
PATH = "/api/v1/notifications"

# Newest first by when it was sent (unsent claims by when they were claimed, so an email going out now is
# at the top); the rest of the key makes the order total, so a page starts exactly where the last ended.
SELECT_NOTIFICATIONS = """
SELECT n.watch_id, n.kind, n.change_key, n.term, n.class_nbr, COALESCE(n.sent_at, n.claimed_at) AS at,
       n.sent_at, n.status, s.subject, s.catalog_nbr, s.title
FROM user_notification AS n
LEFT JOIN section AS s ON s.term = n.term AND s.class_nbr = n.class_nbr
WHERE n.user_id = $1
  AND ($3::timestamptz IS NULL
       OR (COALESCE(n.sent_at, n.claimed_at), n.watch_id, n.kind, n.change_key) < ($3, $4, $5, $6))
ORDER BY COALESCE(n.sent_at, n.claimed_at) DESC, n.watch_id DESC, n.kind DESC, n.change_key DESC
LIMIT $2
"""

Status = Literal["sending", "sent", "delivered", "bounced", "refused"]


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


_Text = Annotated[str, msgspec.Meta(max_length=200, pattern="^[^\x00]*$")]


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    """Where a page ended: the sort key of its last notification."""

    at: Annotated[datetime, msgspec.Meta(tz=True)]
    watch_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    kind: _Text
    change_key: _Text


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return MAX_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise UnprocessableContent(detail=f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).rstrip(b"=").decode()


def parse_before(raw: str | None) -> Cursor | None:
    """`?before=`: the cursor from the previous page's `Link: <...>; rel="next"` header, or None."""
    if raw is None or raw == "":
        return None
    try:
        if len(raw) > MAX_CURSOR or not raw.isascii():
            raise ValueError
        return msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), type=Cursor)
    except (ValueError, binascii.Error, msgspec.DecodeError):
        # msgspec.ValidationError is a DecodeError: a well-formed cursor with values out of range.
        raise UnprocessableContent(
            detail='before must be the cursor from the previous page\'s Link header (rel="next")'
        ) from None


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


async def notification_page(
    pool: asyncpg.Pool, user_id: int, limit: int, before: Cursor | None
) -> tuple[list[NotificationView], Cursor | None]:
    """Up to `limit` of the user's alerts after `before` (from the newest when None), and the cursor of
    the next page (None on the last one)."""
    key = (before.at, before.watch_id, before.kind, before.change_key) if before else (None,) * 4
    rows = await pool.fetch(SELECT_NOTIFICATIONS, user_id, limit + 1, *key)
    page = rows[:limit]
    if len(rows) <= limit:
        return [notification_view(row) for row in page], None
    last = page[-1]
    return [notification_view(row) for row in page], Cursor(
        last["at"], last["watch_id"], last["kind"], last["change_key"]
    )


@get(
    PATH,
    responses={
        401: NOT_LOGGED_IN,
        422: problem("limit is not a whole number from 1 to 100, or before is not a cursor"),
    },
)
async def list_notifications(
    request: Request[Any, Any, Any], user_id: NamedDependency[int], pool: NamedDependency[asyncpg.Pool]
) -> Response[list[NotificationView]]:
    """The logged-in user's alerts, newest first: 200 `[notification]`, at most `?limit=` (1 to 100,
    default 100). When there are more, a `Link: </api/v1/notifications?limit=…&before=…>; rel="next"`
    header names the next page (`before` is an opaque cursor). 422 for another limit or a cursor that is
    not one; 401 when not logged in.

    A notification is `{"watch_id", "kind", "term", "term_label", "class_nbr", "course", "title",
    "sent_at", "status"}`; `course` and `title` are null for a section never found; `status` is `sending`
    (claimed, not sent yet), `sent` (the provider accepted it), `delivered` (the recipient's server took
    it), `bounced` (it bounced or was marked as spam; no more email goes to the address, see `email_status`
    in `GET /api/v1/auth/me`) or `refused` (the provider refused the address).
    """
    limit = parse_limit(request.query_params.get("limit"))
    before = parse_before(request.query_params.get("before"))
    items, next_cursor = await notification_page(pool, user_id, limit, before)
    headers = {}
    if next_cursor is not None:
        query = urlencode({"limit": limit, "before": encode_cursor(next_cursor)})
        headers["Link"] = f'<{PATH}?{query}>; rel="next"'
    return Response(items, headers=headers)
