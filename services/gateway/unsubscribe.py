"""One-click unsubscribe from the links in every email (RFC 8058), authorised by a signed token only.

GET only shows a confirmation page, because mail scanners prefetch links; POST unsubscribes.
"""

from __future__ import annotations

import html
from urllib.parse import quote

import asyncpg
import structlog
from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery

from services.gateway.errors import html_page
from shared.settings import Settings
from shared.tokens import UNSUBSCRIBE, InvalidToken, verify

log = structlog.get_logger()

DISABLE_NOTIFICATIONS = "UPDATE app_user SET notifications_enabled = false WHERE id = $1"

INVALID_LINK = (
    "<p>This unsubscribe link is invalid or has expired. Log in to PickMyClass and delete your watches, "
    'or use the link in a more recent email.</p><p><a href="/">Go to PickMyClass</a></p>'
)


def token_user(settings: Settings, token: str | None) -> int | None:
    if not token:
        return None
    try:
        return int(verify(settings.require_secret_key(), UNSUBSCRIBE, token))
    except (InvalidToken, ValueError):
        return None


@get("/unsubscribe")
async def unsubscribe_page(
    settings: NamedDependency[Settings], token: FromQuery[str | None] = None
) -> Response[str]:
    """Confirmation page with a button that POSTs the same token; 400 page for an invalid or expired token."""
    if token_user(settings, token) is None:
        return html_page("Link expired", INVALID_LINK, status_code=400)
    action = html.escape(f"/unsubscribe?token={quote(token or '', safe='')}")
    form = (
        "<p>Stop all PickMyClass emails to this address? Your watches stay, and you can turn emails "
        "back on from your watch list at any time.</p>"
        f'<form method="post" action="{action}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        "<button type=submit>Unsubscribe</button></form>"
    )
    return html_page("Unsubscribe", form)


@post("/unsubscribe", status_code=200)
async def unsubscribe(
    pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
    token: FromQuery[str | None] = None,
) -> Response[str]:
    """Turn off the token's user's emails (RFC 8058 one-click: form body `List-Unsubscribe=One-Click`, no
    session): 200 page; 400 page for an invalid or expired token."""
    user_id = token_user(settings, token)
    if user_id is None:
        return html_page("Link expired", INVALID_LINK, status_code=400)
    await pool.execute(DISABLE_NOTIFICATIONS, user_id)
    log.info("user unsubscribed", user_id=user_id)
    return html_page("You're unsubscribed", "<p>You will get no more emails from PickMyClass.</p>")
