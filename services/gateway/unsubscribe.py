"""The links in every alert email, authorised by a signed token only (no session): one-click unsubscribe
(RFC 8058) with its undo, and "stop watching this section".

GET only shows a confirmation page, because mail scanners prefetch links; POST acts. They are pages, not
API: the OpenAPI document leaves them out. Each token has its own purpose, so a token for one action never
authorises another:

- `unsubscribe` (`shared.tokens.UNSUBSCRIBE`): the user id, from the email.
- `resubscribe`: the user id, signed here into the page that confirms an unsubscribe, for its undo button.
- `stop-watching`: the watch id, from the email (`shared.tokens.stop_watching_url`, which the notifier signs).
"""

from __future__ import annotations

import html
from urllib.parse import quote

import asyncpg
import structlog
from litestar import MediaType, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery
from nats.aio.client import Client

from services.gateway.errors import html_page
from services.gateway.watches import announce_watches_changed
from shared.asu import term_label
from shared.settings import Settings
from shared.streams import Topology
from shared.tokens import STOP_WATCHING, UNSUBSCRIBE, InvalidToken, sign, verify

log = structlog.get_logger()

RESUBSCRIBE = "resubscribe"
# The undo button lives on a page someone just opened; a week covers a tab left open.
RESUBSCRIBE_TTL = 7 * 24 * 3600

SET_NOTIFICATIONS = "UPDATE app_user SET notifications_enabled = $2 WHERE id = $1 RETURNING id"
SELECT_WATCH = """
SELECT w.term, w.class_nbr, s.subject, s.catalog_nbr, s.title
FROM watch AS w
LEFT JOIN section AS s ON s.term = w.term AND s.class_nbr = w.class_nbr
WHERE w.id = $1
"""
DELETE_WATCH = """
WITH gone AS (DELETE FROM watch WHERE id = $1 RETURNING user_id, term, class_nbr)
SELECT g.user_id, g.term, g.class_nbr, s.subject, s.catalog_nbr, s.title
FROM gone AS g
LEFT JOIN section AS s ON s.term = g.term AND s.class_nbr = g.class_nbr
"""

HOME = '<p><a href="/">Go to PickMyClass</a></p>'
INVALID_LINK = (
    "<p>This link is invalid or has expired. Log in to PickMyClass to change your emails and watches, "
    f"or use the link in a more recent email.</p>{HOME}"
)
NOT_WATCHING = f"<p>You no longer watch this section: no more emails will come about it.</p>{HOME}"


def token_id(settings: Settings, purpose: str, token: str | None) -> int | None:
    """The id a valid, unexpired token of `purpose` carries, or None."""
    if not token:
        return None
    try:
        value = int(verify(settings.require_secret_key(), purpose, token))
    except (InvalidToken, ValueError):
        return None
    return value if 1 <= value < 2**63 else None


def token_user(settings: Settings, token: str | None) -> int | None:
    return token_id(settings, UNSUBSCRIBE, token)


def post_form(path: str, token: str, button: str, fields: str = "") -> str:
    """A form that POSTs `token` back to `path`: the token is the whole authorisation."""
    action = html.escape(f"{path}?token={quote(token, safe='')}")
    submit = f'<button type="submit">{html.escape(button)}</button>'
    return f'<form method="post" action="{action}">{fields}{submit}</form>'


def invalid_link() -> Response[str]:
    return html_page("Link expired", INVALID_LINK, status_code=400)


def section_words(row: asyncpg.Record) -> str:
    """`CSE 310 Data Structures (class 12345, Spring 2027)`; a section never found by number and term."""
    where = f"class {row['class_nbr']}, {term_label(row['term'])}"
    if row["subject"] is None:
        return where
    return f"{row['subject']} {row['catalog_nbr']} {row['title']} ({where})"


@get("/unsubscribe", media_type=MediaType.HTML, include_in_schema=False)
async def unsubscribe_page(
    settings: NamedDependency[Settings], token: FromQuery[str | None] = None
) -> Response[str]:
    """Confirmation page with a button that POSTs the same token; 400 page for an invalid or expired token."""
    if token is None or token_user(settings, token) is None:
        return invalid_link()
    form = post_form(
        "/unsubscribe",
        token,
        "Unsubscribe",
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">',
    )
    body = (
        "<p>Stop all PickMyClass emails to this address? Your watches stay, and you can turn emails "
        f"back on at any time.</p>{form}{HOME}"
    )
    return html_page("Unsubscribe", body)


@post("/unsubscribe", status_code=200, media_type=MediaType.HTML, include_in_schema=False)
async def unsubscribe(
    pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
    token: FromQuery[str | None] = None,
) -> Response[str]:
    """Turn off the token's user's emails (RFC 8058 one-click: form body `List-Unsubscribe=One-Click`, no
    session): 200 page with a button to turn them back on; 400 page for an invalid or expired token."""
    user_id = token_user(settings, token)
    if user_id is None:
        return invalid_link()
    await pool.execute(SET_NOTIFICATIONS, user_id, False)
    log.info("user unsubscribed", user_id=user_id)
    undo = sign(settings.require_secret_key(), RESUBSCRIBE, str(user_id), RESUBSCRIBE_TTL)
    body = (
        "<p>You will get no more emails from PickMyClass. Your watches stay.</p>"
        f"{post_form('/resubscribe', undo, 'Turn emails back on')}{HOME}"
    )
    return html_page("You're unsubscribed", body)


@post("/resubscribe", status_code=200, media_type=MediaType.HTML, include_in_schema=False)
async def resubscribe(
    pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
    token: FromQuery[str | None] = None,
) -> Response[str]:
    """Undo an unsubscribe (the button on the page `POST /unsubscribe` answers): 200 page; 400 page for an
    invalid or expired token, or an account that is gone."""
    user_id = token_id(settings, RESUBSCRIBE, token)
    if user_id is None or await pool.fetchval(SET_NOTIFICATIONS, user_id, True) is None:
        return invalid_link()
    log.info("user resubscribed", user_id=user_id)
    return html_page("Emails are back on", f"<p>You will get alerts about your watches again.</p>{HOME}")


@get("/stop-watching", media_type=MediaType.HTML, include_in_schema=False)
async def stop_watching_page(
    pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
    token: FromQuery[str | None] = None,
) -> Response[str]:
    """Confirmation page naming the section, with a button that POSTs the same token; a page saying so when
    the watch is already gone; 400 page for an invalid or expired token."""
    watch_id = token_id(settings, STOP_WATCHING, token)
    if token is None or watch_id is None:
        return invalid_link()
    row = await pool.fetchrow(SELECT_WATCH, watch_id)
    if row is None:
        return html_page("Not watching", NOT_WATCHING)
    body = (
        f"<p>Stop watching {html.escape(section_words(row))}? You will get no more emails about it; "
        f"your other watches stay.</p>{post_form('/stop-watching', token, 'Stop watching')}"
        '<p><a href="/">Keep watching: go to PickMyClass</a></p>'
    )
    return html_page("Stop watching", body)


@post("/stop-watching", status_code=200, media_type=MediaType.HTML, include_in_schema=False)
async def stop_watching(
    pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
    nc: NamedDependency[Client],
    topology: NamedDependency[Topology],
    token: FromQuery[str | None] = None,
) -> Response[str]:
    """Delete the token's watch: 200 page (also when it was already gone); 400 page for an invalid or
    expired token."""
    watch_id = token_id(settings, STOP_WATCHING, token)
    if watch_id is None:
        return invalid_link()
    row = await pool.fetchrow(DELETE_WATCH, watch_id)
    if row is None:
        return html_page("Not watching", NOT_WATCHING)
    log.info("watch deleted from an email link", user_id=row["user_id"], watch_id=watch_id)
    await announce_watches_changed(nc, topology, row["user_id"])
    body = (
        f"<p>You no longer watch {html.escape(section_words(row))}. "
        "To watch it again, add it from your watch list.</p>"
        f"{HOME}"
    )
    return html_page("Stopped watching", body)
