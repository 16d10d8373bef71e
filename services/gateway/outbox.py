"""The development email outbox: what the notifier would have sent, readable in a browser or by scripts.

Registered only when EMAIL_BACKEND=outbox.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Response, get
from litestar.di import NamedDependency

from services.gateway.errors import html_page

SELECT_OUTBOX = """
SELECT id, to_addr, subject, text_body, html_body, headers::text AS headers, created_at
FROM outbox_email ORDER BY created_at DESC, id DESC LIMIT 100
"""


class OutboxEmail(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    to: str
    subject: str
    created_at: datetime
    text_body: str
    html_body: str
    headers: dict[str, Any]


async def latest_emails(pool: asyncpg.Pool) -> list[OutboxEmail]:
    return [
        OutboxEmail(
            id=row["id"],
            to=row["to_addr"],
            subject=row["subject"],
            created_at=row["created_at"],
            text_body=row["text_body"],
            html_body=row["html_body"],
            headers=msgspec.json.decode(row["headers"]),
        )
        for row in await pool.fetch(SELECT_OUTBOX)
    ]


def render_email(email: OutboxEmail) -> str:
    # The HTML body is shown in a sandboxed frame: no scripts, no access to this page.
    return (
        '<section class="mail">'
        f"<h2>{html.escape(email.subject)}</h2>"
        f'<p class="meta">To {html.escape(email.to)} · {html.escape(email.created_at.isoformat())}</p>'
        f"<pre>{html.escape(email.text_body)}</pre>"
        f'<iframe sandbox="" title="HTML body" srcdoc="{html.escape(email.html_body, quote=True)}"></iframe>'
        "</section>"
    )


@get("/dev/outbox")
async def outbox_page(pool: NamedDependency[asyncpg.Pool]) -> Response[str]:
    """The latest 100 emails in the development outbox, newest first, as HTML."""
    emails = await latest_emails(pool)
    body = "".join(render_email(email) for email in emails) or "<p>No emails yet.</p>"
    return html_page("Outbox", '<p><a href="/dev/outbox.json">JSON</a></p>' + body)


@get("/dev/outbox.json")
async def outbox_json(pool: NamedDependency[asyncpg.Pool]) -> list[OutboxEmail]:
    """The latest 100 emails in the development outbox, newest first: `[{"id", "to", "subject",
    "created_at", "text_body", "html_body", "headers"}]`."""
    return await latest_emails(pool)
