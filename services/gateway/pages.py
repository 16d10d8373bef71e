"""The student's pages, rendered on the server with Jinja2 (`templates/`); scripts in `static/` only add
behaviour (forms that post JSON to the API, live updates, ticking times).

Every change a page makes goes through the JSON API, so the API's CSRF rule (JSON bodies only) guards the
pages too, and there is one implementation of each rule. The pages read what they show directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import asyncpg
from jinja2 import Environment
from litestar import MediaType, Request, Response, Router, get
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromQuery
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig
from markupsafe import Markup
from redis.asyncio import Redis

from services.gateway.account_api import default_alerts
from services.gateway.history import Sample, seat_history, sparkline_svg
from services.gateway.notifications import encode_cursor, notification_page, parse_before
from services.gateway.sessions import session_user
from services.gateway.terms import arizona_today, upcoming_terms
from services.gateway.watches import SELECT_WATCH, SELECT_WATCHES, WatchId, WatchOut, watch_out
from shared.alerts import ALERT_KINDS
from shared.settings import Settings

STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
# Class times and alert times are ASU's: Arizona keeps no daylight saving time.
ARIZONA = ZoneInfo("America/Phoenix")

# What the page says about an address the provider stopped accepting (`app_user.email_status`).
EMAIL_PROBLEMS = {
    "bounced": "bounced our emails",
    "complained": "marked our emails as spam",
    "rejected": "was refused by our email provider",
}
ALERT_LABELS = {
    "seat_opened": ("A seat opens", "The section had no open seat and now has one."),
    "instructor_changed": ("The instructor changes", "Staff becomes a named person, or one name another."),
    "closed_again": ("The seat is gone again", "After we told you of an opening, the section filled up."),
    "waitlist_opened": (
        "The waitlist has room",
        "The section and its waitlist were full; the waitlist opened.",
    ),
}
# History: the change an email told about (`user_notification.kind`), and what became of the email.
NOTIFICATION_KINDS = {
    "seat_opened": "Seat opened",
    "instructor_changed": "Instructor changed",
    "seat_filled": "Closed again",
    "waitlist_opened": "Waitlist opened",
    "section_cancelled": "Section cancelled",
    "section_gone": "No longer listed",
}
DELIVERY = {
    "sending": ("Sending", "We are handing it to our email provider."),
    "sent": ("Sent", "Our email provider accepted it."),
    "delivered": ("Delivered", "Your mail server took it."),
    "bounced": ("Bounced", "It did not arrive: we send nothing more to this address."),
    "refused": ("Refused", "Our email provider would not send it."),
}


class Viewer(NamedTuple):
    """The logged-in student, as every page's header and notices need them."""

    id: int
    email: str
    notifications_enabled: bool
    email_status: str
    is_admin: bool


SELECT_VIEWER = "SELECT id, email, notifications_enabled, email_status, is_admin FROM app_user WHERE id = $1"


async def provide_viewer(
    request: Request[Any, Any, Any],
    pool: NamedDependency[asyncpg.Pool],
    redis: NamedDependency[Redis],
    settings: NamedDependency[Settings],
) -> Viewer | None:
    """Dependency `viewer`: the logged-in student, or None (no session, or the account is gone)."""
    user_id = await session_user(redis, settings, request)
    row = await pool.fetchrow(SELECT_VIEWER, user_id) if user_id is not None else None
    return Viewer(*row.values()) if row is not None else None


# ---- The dashboard: what each card says, pure functions of a watch and the time.

CardState = Literal["open", "full", "checking", "not_found", "gone", "ended"]
Sort = Literal["course", "seats", "added"]
Show = Literal["all", "open", "full", "problems"]
SORTS: dict[Sort, str] = {"course": "Course", "seats": "Open seats", "added": "Recently added"}
SHOWS: dict[Show, str] = {"all": "All", "open": "Open", "full": "Full", "problems": "Problems"}
SPARK_DAYS, SPARK_WIDTH, SPARK_HEIGHT = 14, 240, 36
HISTORY_PAGE = 50
ChoiceT = TypeVar("ChoiceT", bound=str)
PROBLEMS: frozenset[CardState] = frozenset({"not_found", "gone", "ended"})


@dataclass(frozen=True)
class Card:
    watch: WatchOut
    state: CardState
    # The one line that says what will happen, then what it means in a sentence (may be empty).
    headline: str
    detail: str
    # Checks of this section are late: its data is older than two check intervals.
    stale: bool
    # When the data becomes stale, for the page's clock to say so without a reload; None when not checked.
    stale_at: datetime | None
    name: str
    # Seats over the last SPARK_DAYS days (SVG), for a section found at least once.
    sparkline: Markup | None = None


def card_state(watch: WatchOut) -> CardState:
    if watch.status == "found" and watch.section is not None:
        return "open" if watch.section.open_seats > 0 else "full"
    # "found" without a section cannot come from the query; shown as a look-up still to happen.
    return "checking" if watch.status == "found" else watch.status


def card_name(watch: WatchOut) -> str:
    """How a student names the watch: "CSE 310 (12345)", or "class 12345" before the first look-up."""
    return f"{watch.section.course} ({watch.class_nbr})" if watch.section else f"class {watch.class_nbr}"


def headline(state: CardState, watch: WatchOut, *, emails_on: bool) -> tuple[str, str]:
    """What the card promises, honestly: a full section says "we'll email you" only when we will."""
    section = watch.section
    if state == "open":
        reserved = section is not None and section.reserved_seats
        return (
            "Open now — register",
            "Some of these seats may be reserved for certain students." if reserved else "",
        )
    if state == "full":
        if not emails_on:
            return "Full — emails are off", "Turn emails back on to hear when a seat opens."
        if not watch.alerts.get("seat_opened", True):
            return "Full — seat alerts are off", "You chose not to hear about openings of this section."
        return "Full — we'll email you when a seat opens", ""
    if state == "checking":
        return "Checking…", "We are looking this section up in the class search."
    if state == "not_found":
        return f"Not found in {watch.term_label}", "The class search does not list this class number now."
    if state == "gone":
        return "Gone", "The class search stopped listing this section, so we stopped checking it."
    return "Term ended", f"{watch.term_label} is over: we no longer check this section."


def card_of(
    watch: WatchOut, *, now: datetime, interval: timedelta, emails_on: bool, sparkline: Markup | None = None
) -> Card:
    state = card_state(watch)
    title, detail = headline(state, watch, emails_on=emails_on)
    checked = watch.section is not None and state in ("open", "full", "not_found")
    stale_at = watch.section.last_checked + 2 * interval if checked and watch.section else None
    return Card(
        watch=watch,
        state=state,
        headline=title,
        detail=detail,
        stale=stale_at is not None and now > stale_at,
        stale_at=stale_at,
        name=card_name(watch),
        sparkline=sparkline,
    )


def shown(card: Card, show: Show) -> bool:
    if show == "all":
        return True
    if show == "problems":
        return card.state in PROBLEMS or card.stale
    return card.state == show


def _course_key(card: Card) -> tuple[int, str, str]:
    section = card.watch.section
    return (0, section.course, card.watch.class_nbr) if section else (1, "", card.watch.class_nbr)


def _seats_key(card: Card) -> tuple[int, int, str]:
    section = card.watch.section
    seats = section.open_seats if section is not None and card.state in ("open", "full") else -1
    return (-seats, 0 if seats >= 0 else 1, card.watch.class_nbr)


def arrange(cards: Sequence[Card], sort: Sort, show: Show) -> list[Card]:
    """The cards to show, in order: by course (then class number), by open seats (most first), or newest
    watch first."""
    kept = [card for card in cards if shown(card, show)]
    if sort == "added":
        return sorted(kept, key=lambda card: (card.watch.created_at, card.watch.id), reverse=True)
    return sorted(kept, key=_seats_key if sort == "seats" else _course_key)


def choice(value: str | None, options: Mapping[ChoiceT, str], default: ChoiceT) -> ChoiceT:
    """A query parameter limited to its options: anything else (hostile or stale links) means the default."""
    return next((option for option in options if option == value), default)


# ---- Rendering helpers shared by the templates.


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """ "just now", "4 min ago", "3 h ago", "2 days ago": the same words the page's clock ticks through."""
    if moment is None:
        return "never"
    seconds = max(0.0, ((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    return f"{days} day{'s' if days > 1 else ''} ago"


def arizona(moment: datetime | None) -> str:
    """A moment in Arizona time, as a student reads it: "Mar 3, 2026, 2:15 PM"."""
    if moment is None:
        return ""
    local = moment.astimezone(ARIZONA)
    return f"{local:%b} {local.day}, {local.year}, {local:%I:%M %p}".replace(" 0", " ")


def _configure(engine: JinjaTemplateEngine) -> None:
    env: Environment = engine.engine
    env.filters["ago"] = ago
    env.filters["arizona"] = arizona
    env.globals.update(
        EMAIL_PROBLEMS=EMAIL_PROBLEMS,
        ALERT_KINDS=ALERT_KINDS,
        ALERT_LABELS=ALERT_LABELS,
        NOTIFICATION_KINDS=NOTIFICATION_KINDS,
        DELIVERY=DELIVERY,
        SORTS=SORTS,
        SHOWS=SHOWS,
    )
    env.trim_blocks = True
    env.lstrip_blocks = True


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """The app's `template_config`: autoescaped Jinja2 templates from `templates/`."""
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=_configure)


# Personal pages are never stored by a browser or proxy (the back button after logging out shows nothing).
PRIVATE = {"Cache-Control": "no-store"}
PUBLIC = {"Cache-Control": "no-cache"}


def page(
    name: str, viewer: Viewer | None, *, active: str = "", status_code: int = 200, **context: Any
) -> Template:
    headers = PRIVATE if viewer is not None else PUBLIC
    return Template(
        template_name=name,
        context={"viewer": viewer, "active": active, **context},
        headers=headers,
        status_code=status_code,
        media_type=MediaType.HTML,
    )


def not_found_page(viewer: Viewer | None = None) -> Template:
    """The friendly 404: names no path, offers the way back."""
    return page("404.html", viewer, status_code=404)


# A page for students, opened without a session: the start page says why it is showing instead.
LOG_IN_FIRST = "/?bye=login#login"
# `?bye=` on the start page: how the student got here.
_NOTICES = {
    "login": "Log in to see that page.",
    "deleted": "Your account is deleted, with your watches and alert history. Thank you for using it.",
    "everywhere": "You are logged out on every device.",
    "expired": "Your session ended. Log in again to see your watches.",
}


@get("/")
async def landing(
    viewer: NamedDependency[Viewer | None],
    verified: FromQuery[str | None] = None,
    bye: FromQuery[str | None] = None,
) -> Response[Any]:
    """The landing page, or the dashboard for a student who is logged in."""
    if viewer is not None:
        return Redirect("/dashboard?verified=1" if verified == "1" else "/dashboard", status_code=303)
    return page("landing.html", None, notice=_NOTICES.get(bye or ""))


def _sparkline(history: dict[tuple[str, str], list[Sample]], watch: WatchOut, now: datetime) -> Markup | None:
    if watch.section is None:
        return None
    samples = history.get((watch.term, watch.class_nbr), [])
    # history.py builds the SVG from numbers and an escaped summary: safe to place as it is.
    return Markup(sparkline_svg(samples, SPARK_WIDTH, SPARK_HEIGHT, days=SPARK_DAYS, now=now))


async def _cards(
    pool: asyncpg.Pool, settings: Settings, viewer: Viewer, rows: list[asyncpg.Record]
) -> list[Card]:
    """The cards of these watch rows, each with the sparkline of its section's seats (one query for all)."""
    now = datetime.now(UTC)
    interval = timedelta(seconds=settings.check_interval_seconds)
    watches = [watch_out(row) for row in rows]
    found = [(watch.term, watch.class_nbr) for watch in watches if watch.section is not None]
    history = await seat_history(pool, found, now - timedelta(days=SPARK_DAYS))
    return [
        card_of(
            watch,
            now=now,
            interval=interval,
            emails_on=viewer.notifications_enabled,
            sparkline=_sparkline(history, watch, now),
        )
        for watch in watches
    ]


def _arrangement(sort: str | None, show: str | None) -> tuple[Sort, Show]:
    return choice(sort, SORTS, "course"), choice(show, SHOWS, "all")


@get("/dashboard")
async def dashboard(
    viewer: NamedDependency[Viewer | None],
    pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
    sort: FromQuery[str | None] = None,
    show: FromQuery[str | None] = None,
    verified: FromQuery[str | None] = None,
) -> Response[Any]:
    """Every watch as a card, sorted and filtered by `?sort=course|seats|added&show=all|open|full|problems`,
    with the form to add more."""
    if viewer is None:
        return Redirect(LOG_IN_FIRST, status_code=303)
    order, which = _arrangement(sort, show)
    cards = await _cards(pool, settings, viewer, await pool.fetch(SELECT_WATCHES, viewer.id))
    return page(
        "dashboard.html",
        viewer,
        active="/dashboard",
        cards=arrange(cards, order, which),
        total=len(cards),
        sort=order,
        show=which,
        terms=upcoming_terms(arizona_today()),
        verified=verified == "1",
    )


@get("/dashboard/cards")
async def dashboard_cards(
    viewer: NamedDependency[Viewer | None],
    pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
    sort: FromQuery[str | None] = None,
    show: FromQuery[str | None] = None,
) -> Template:
    """The list of cards alone (HTML fragment), for the page to refresh in place; 404 when logged out."""
    if viewer is None:
        raise NotFoundException()
    order, which = _arrangement(sort, show)
    cards = await _cards(pool, settings, viewer, await pool.fetch(SELECT_WATCHES, viewer.id))
    return page(
        "partials/cards.html", viewer, cards=arrange(cards, order, which), total=len(cards), show=which
    )


@get("/dashboard/cards/{watch_id:int}")
async def dashboard_card(
    watch_id: WatchId,
    viewer: NamedDependency[Viewer | None],
    pool: NamedDependency[asyncpg.Pool],
    settings: NamedDependency[Settings],
) -> Template:
    """One card (HTML fragment), for the page to replace after a live update; 404 when not the viewer's."""
    row = await pool.fetchrow(SELECT_WATCH, viewer.id, watch_id) if viewer is not None else None
    if viewer is None or row is None:
        raise NotFoundException()
    [card] = await _cards(pool, settings, viewer, [row])
    return page("partials/card.html", viewer, card=card)


@get("/history")
async def history(
    viewer: NamedDependency[Viewer | None],
    pool: NamedDependency[asyncpg.Pool],
    before: FromQuery[str | None] = None,
) -> Response[Any]:
    """Every alert we sent the student, newest first, with what became of each email; 50 a page, older
    pages by `?before=` (the cursor of `GET /api/v1/notifications`; a malformed one is a 422 page)."""
    if viewer is None:
        return Redirect(LOG_IN_FIRST, status_code=303)
    items, next_cursor = await notification_page(pool, viewer.id, HISTORY_PAGE, parse_before(before))
    older = f"/history?{urlencode({'before': encode_cursor(next_cursor)})}" if next_cursor else None
    return page(
        "history.html", viewer, active="/history", notifications=items, older=older, first=before is None
    )


@get("/settings")
async def settings_page(
    viewer: NamedDependency[Viewer | None], pool: NamedDependency[asyncpg.Pool]
) -> Response[Any]:
    """Alerts (default and per watch), emails on or off, export, delete, log out everywhere."""
    if viewer is None:
        return Redirect(LOG_IN_FIRST, status_code=303)
    watches = [watch_out(row) for row in await pool.fetch(SELECT_WATCHES, viewer.id)]
    defaults = await default_alerts(pool, viewer.id)
    return page("settings.html", viewer, active="/settings", watches=watches, defaults=defaults)


@get("/privacy")
async def privacy(viewer: NamedDependency[Viewer | None]) -> Template:
    return page("privacy.html", viewer, active="/privacy")


@get("/terms")
async def terms_of_use(viewer: NamedDependency[Viewer | None]) -> Template:
    return page("terms.html", viewer, active="/terms")


router = Router(
    path="/",
    route_handlers=[
        landing,
        dashboard,
        dashboard_cards,
        dashboard_card,
        history,
        settings_page,
        privacy,
        terms_of_use,
    ],
    dependencies={"viewer": Provide(provide_viewer)},
    include_in_schema=False,
)
