"""Every page of the web app in real Chromium, at desktop (1280×800) and phone (390×844) sizes, against
every service running as its own process: the start page with its forms and their errors, the dashboard
(add one, several, a link; a term that is no longer offered; a seat opening live; sort and filter; stop
watching and undo), history, settings (switches, export, delete the account), admin, the legal pages and
the 404 page. Each page passes axe (nothing serious or critical), does not scroll sideways and has nothing
inline (tests/e2e/test_browser.py: Student.audit).

`PMC_SCREENSHOTS=1` also saves the dashboard at both sizes to docs/screenshots/ for the README.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import ViewportSize, expect

from devtools import resend_fake
from services.gateway.pages import SORTS, Card, arrange, card_of, choice
from services.gateway.sections import section_view
from services.gateway.watches import WatchOut
from shared.asu import catalog_url, term_label
from shared.events import SectionState
from tests.e2e.system import TERM, World, add_section, change_section, eventually
from tests.e2e.test_browser import (
    DESKTOP,
    MOBILE,
    PASSWORD,
    OpenStudent,
    browser,  # noqa: F401 (fixture)
    chromium,  # noqa: F401 (fixture)
    open_student_fixture,  # noqa: F401 (fixture)
)
from tests.infra import REPO

pytestmark = pytest.mark.e2e

SIZES = [pytest.param(DESKTOP, id="desktop"), pytest.param(MOBILE, id="mobile")]
# A look-up goes page → gateway → NATS → scraper → simulator → detector → NATS → gateway → page; checks
# run every second in this system, so a few seconds is the norm and this is the ceiling.
PIPELINE_MS = 20_000
SCREENSHOTS = REPO / "docs" / "screenshots"


def size_name(viewport: ViewportSize) -> str:
    return "desktop" if viewport == DESKTOP else "mobile"


def numbers(base: int) -> list[str]:
    """Class numbers of their own for one run of a test (the two sizes share the simulator)."""
    return [str(base + n) for n in range(6)]


async def test_the_start_page_explains_and_its_forms_say_what_is_wrong(
    open_student: OpenStudent, viewport: ViewportSize
) -> None:
    student = await open_student(viewport)
    page = student.page
    await page.goto("/")
    await expect(page.get_by_role("heading", name="How it works")).to_be_visible()
    await expect(page.get_by_role("img", name=re.compile("class number 12345"))).to_be_visible()
    await expect(page.get_by_role("heading", name="Your privacy")).to_be_visible()
    await student.audit("start page")

    signup = student.form("signup")
    await signup.get_by_label("Email").fill("not an address")
    await signup.get_by_label("Password", exact=True).fill("short")
    await signup.get_by_role("button", name="Create account").click()
    email = signup.get_by_label("Email")
    await expect(email).to_have_attribute("aria-invalid", "true")
    await expect(email).to_be_focused()
    await expect(page.locator("#signup-email-error")).to_have_text("Enter an address like name@asu.edu.")
    await expect(page.locator("#signup-password-error")).to_have_text("Use at least 8 characters.")
    await student.audit("start page with field errors")

    # "Show" reveals the password, and says it is pressed.
    password = signup.get_by_label("Password", exact=True)
    await signup.get_by_role("button", name="Show password").click()
    await expect(password).to_have_attribute("type", "text")
    await expect(signup.get_by_role("button", name="Show password")).to_have_attribute("aria-pressed", "true")

    await email.fill(student.email)
    await password.fill(PASSWORD)
    await signup.get_by_label("Repeat the password", exact=True).fill(PASSWORD + "x")
    await signup.get_by_role("button", name="Create account").click()
    await expect(page.locator("#signup-confirm-error")).to_have_text("The two passwords are not the same.")
    await expect(email).not_to_have_attribute("aria-invalid", "true")

    await student.log_in("wrong password 1", email=f"nobody-{student.email}")
    error = page.locator("#login-form-error")
    await expect(error).to_have_text("Wrong email or password")
    await expect(error).to_be_focused()
    await student.audit("start page after a wrong password")

    # Pages for students send a visitor to log in.
    await page.goto("/settings")
    await expect(page).to_have_url(re.compile(r"/\?bye=login#login$"))
    await expect(page.get_by_text("Log in to see that page.")).to_be_visible()
    assert student.unexpected_errors(("/api/v1/auth/login", 401)) == []


async def test_a_student_watches_sections_and_sees_a_seat_open_live(
    open_student: OpenStudent, viewport: ViewportSize, world: World
) -> None:
    one, two, three, link, bad, _ = numbers(72000 if viewport == DESKTOP else 73000)
    # A course of its own per size: the scraper looks up whole courses, so a shared one would be known.
    catalog_nbr = "355" if viewport == DESKTOP else "365"
    course = f"CSE {catalog_nbr}"
    for class_nbr in (one, two, three, link):
        await add_section(
            world,
            class_nbr,
            catalog_nbr=catalog_nbr,
            title="Introduction to Theoretical Computer Science",
            instructors=["Ada Lovelace"],
            days="M W F",
            start_time="10:30 AM",
            end_time="11:20 AM",
        )
    student = await open_student(viewport)
    page = student.page
    await student.create_account(world)
    await expect(page.get_by_text("You are not watching any section yet.")).to_be_visible()
    await student.audit("empty dashboard")

    text = page.get_by_label("Class numbers or a class search link")
    term = page.get_by_label("Term")
    await expect(term).to_have_value(TERM)  # the term students register for is preselected
    watch = page.get_by_role("button", name="Watch", exact=True)

    # Nothing to add, then text that holds no class number: the field says so.
    await watch.click()
    await expect(text).to_have_attribute("aria-invalid", "true")
    await expect(text).to_be_focused()
    await text.fill("hello")
    await watch.click()
    await expect(page.locator("#add-text-error")).to_have_text(
        "Paste one or more 5-digit class numbers or class search links"
    )
    await student.audit("dashboard with a field error")

    # A term no longer offered (a page left open since the term ended): the term field says so.
    await page.locator("#add-term option:checked").evaluate("option => { option.value = '2261'; }")
    await text.fill(bad)
    await watch.click()
    await expect(term).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#add-term-error")).to_contain_text("Spring 2026 (2261) has ended")
    await page.reload()

    # One class number: a preview says we have not seen it, then its card tells what will happen.
    await text.fill(one)
    await expect(page.locator("#preview")).to_contain_text(
        f"We have not seen class {one} in {term_label(TERM)} yet."
    )
    await watch.click()
    await expect(student.status).to_have_text(re.compile(rf"Watching ({course} \()?{one}"))
    card = page.locator(f'.card[data-class-nbr="{one}"]')
    await expect(card).to_be_focused()
    await expect(card.locator(".state")).to_have_text(
        "Full — we'll email you when a seat opens", timeout=PIPELINE_MS
    )
    await expect(card.get_by_role("heading")).to_have_text(f"{course} {one}")
    await expect(card.locator(".seats")).to_have_text("0 of 100 seats open")
    await expect(card.get_by_role("link", name="Ada Lovelace on Rate My Professors")).to_have_attribute(
        "href", re.compile(r"ratemyprofessors\.com/.*Ada\+Lovelace")
    )
    await expect(card).to_contain_text("M W F 10:30 AM–11:20 AM")
    await expect(
        card.get_by_role("img", name=re.compile("Open seats over the last 14 days"))
    ).to_be_attached()
    await expect(card.locator("time[data-ago]")).to_have_text("just now")

    # Several at once, and a class search link.
    await text.fill(f"{two}, {three}\n{one}")
    await watch.click()
    await expect(student.status).to_have_text(
        re.compile(rf"Watching 2 more sections.*Already watching {one}")
    )
    await text.fill(catalog_url(TERM, link))
    await watch.click()
    await expect(page.locator(".card")).to_have_count(4)
    for class_nbr in (two, three, link):
        await expect(page.locator(f'.card[data-class-nbr="{class_nbr}"] .state')).to_have_text(
            "Full — we'll email you when a seat opens", timeout=PIPELINE_MS
        )

    # A known section is previewed before it is added.
    await text.fill(one)
    await expect(page.locator("#preview")).to_contain_text(f"{course} ({one}): Introduction to Theoretical")
    preview = page.locator("#preview")
    await expect(preview).to_contain_text("Ada Lovelace · M W F 10:30 AM–11:20 AM · 0 of 100 seats")
    await text.fill("")
    await student.audit("dashboard with cards")

    # Two students drop: the card changes in place, on the same page (no reload, no navigation).
    await page.evaluate("window.sameDocument = true")
    await change_section(world, one, enrl_tot=98)
    await expect(card.locator(".state")).to_have_text(re.compile("^Open now — register"), timeout=PIPELINE_MS)
    await expect(card.get_by_role("link", name=re.compile("Open now — register"))).to_have_attribute(
        "href", catalog_url(TERM, one)
    )
    await expect(card.locator(".seats")).to_have_text("2 of 100 seats open")
    assert await page.evaluate("window.sameDocument") is True

    # Filter and sort.
    await page.get_by_label("Show").select_option("open")
    await expect(page.locator(".card")).to_have_count(1)
    await expect(page.locator("#count")).to_have_text("Showing 1 of 4 watched sections. Show all")
    await expect(page).to_have_url(re.compile(r"show=open"))
    await page.get_by_label("Show").select_option("all")
    await page.get_by_label("Sort by").select_option("seats")
    await expect(page.locator(".card").first).to_have_attribute("data-class-nbr", one)
    await page.get_by_label("Sort by").select_option("added")
    await expect(page.locator(".card").first).to_have_attribute("data-class-nbr", link)

    if os.environ.get("PMC_SCREENSHOTS") == "1":  # after the same-document check: this reloads
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        # The page at rest, as a student opens it: no message of a last action, no focus ring.
        await page.goto("/dashboard")
        await expect(page.locator("#live-text")).to_have_text("Live")
        await page.screenshot(
            path=SCREENSHOTS / f"dashboard-{size_name(viewport)}.png", full_page=viewport == DESKTOP
        )

    # Stop watching names the class, offers undo, and undo brings the card back (focused).
    await page.get_by_role("button", name=f"Stop watching {course} ({two})").click()
    await expect(page.locator(f'.card[data-class-nbr="{two}"]')).to_have_count(0)
    undo = page.get_by_role("button", name="Undo")
    await expect(undo).to_be_focused()
    await expect(page.locator("#undo-text")).to_have_text(f"Stopped watching {course} ({two}).")
    await student.audit("dashboard with undo")
    await undo.click()
    await expect(page.locator(f'.card[data-class-nbr="{two}"]')).to_be_focused()
    await expect(student.status).to_have_text(f"Watching {course} ({two}) again.")
    await expect(page.locator(".card")).to_have_count(4)

    # The seat that opened was emailed: History says so, with what became of the email.
    async def seat_email() -> bool:
        emails = await resend_fake.fetch_emails(world.resend_url)
        return any(e["to"] == [student.email] and one in e["subject"] for e in emails)

    await eventually(seat_email, "the seat-available email")
    await page.get_by_role("link", name="History").click()
    entry = page.locator(".entry").filter(has_text=f"{course} ({one})")
    await expect(entry.locator(".kind")).to_have_text("Seat opened")
    await expect(entry.locator(".badge")).to_have_text(re.compile("Sent|Delivered"))
    await student.audit("history")
    assert (
        student.unexpected_errors(("/api/v1/watches/bulk", 422), (f"/api/v1/sections/{TERM}/{one}", 404))
        == []
    )


async def test_settings_change_alerts_export_and_delete_the_account(
    open_student: OpenStudent, viewport: ViewportSize, world: World
) -> None:
    student = await open_student(viewport)
    page = student.page
    await student.create_account(world)
    watched = numbers(74000 if viewport == DESKTOP else 75000)[0]
    await add_section(world, watched)
    await page.get_by_label("Class numbers or a class search link").fill(watched)
    await page.get_by_role("button", name="Watch", exact=True).click()
    await expect(page.locator(".card .state")).to_have_text(
        "Full — we'll email you when a seat opens", timeout=PIPELINE_MS
    )

    await page.get_by_role("link", name="Settings").click()
    await expect(page.get_by_role("link", name="Settings")).to_have_attribute("aria-current", "page")
    await student.audit("settings")

    emails = page.get_by_label("Email me about my watches")
    await emails.uncheck()
    await expect(student.status).to_have_text("Emails are off: we will send you no alerts.")
    await page.get_by_role("link", name="Watches").click()
    await expect(page.locator(".card .state")).to_have_text("Full — emails are off")
    await expect(page.locator("#emails-off")).to_be_visible()
    await page.get_by_role("link", name="Settings").click()
    await page.get_by_label("Email me about my watches").check()
    await expect(student.status).to_have_text("Emails are on: we'll tell you when seats open.")

    await page.locator("#defaults").get_by_label("The seat is gone again").check()
    await expect(student.status).to_have_text("New watches will email you when the seat is gone again.")
    assert (await (await page.request.get("/api/v1/me/alerts")).json())["closed_again"] is True
    per_watch = page.locator("fieldset[data-watch]")
    await per_watch.get_by_label("A seat opens").uncheck()
    await expect(student.status).to_have_text(f"CSE 310 ({watched}): we won't email you when a seat opens.")
    [stored] = await (await page.request.get("/api/v1/watches")).json()
    assert stored["alerts"]["seat_opened"] is False

    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download my data").click()
    download = await download_info.value
    exported = json.loads(await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8"))
    assert student.email in json.dumps(exported)
    assert watched in json.dumps(exported)

    await page.get_by_role("button", name="Delete my account…").click()
    password = page.get_by_label("Your password, to confirm", exact=True)
    await expect(password).to_be_focused()
    await password.fill("not my password")
    await page.get_by_role("button", name="Delete everything").click()
    await expect(password).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#delete-password-error")).to_have_text(
        "Wrong password: your account was not deleted"
    )
    await student.audit("settings with a wrong password")
    await password.fill(PASSWORD)
    await page.get_by_role("button", name="Delete everything").click()
    await expect(page.get_by_text("Your account is deleted")).to_be_visible()
    await student.audit("start page after deletion")
    assert (await page.request.get("/api/v1/auth/me")).status == 401
    assert student.unexpected_errors(("/api/v1/me", 403)) == []


async def test_log_out_everywhere_ends_every_session(open_student: OpenStudent, world: World) -> None:
    phone = await open_student(MOBILE)
    await phone.create_account(world)
    laptop = await open_student(DESKTOP)
    await laptop.page.goto("/")
    await laptop.log_in(PASSWORD, email=phone.email)
    await expect(laptop.page).to_have_url(re.compile(r"/dashboard$"))

    await phone.page.goto("/settings")
    await phone.page.get_by_role("button", name="Log out everywhere").click()
    await expect(phone.page.get_by_text("You are logged out on every device.")).to_be_visible()
    await laptop.page.goto("/history")
    await expect(laptop.page).to_have_url(re.compile(r"/\?bye=login#login$"))
    assert phone.unexpected_errors() == []
    assert laptop.unexpected_errors() == []


async def test_an_admin_sees_totals_students_and_health(
    open_student: OpenStudent, viewport: ViewportSize, world: World
) -> None:
    admin = await open_student(viewport)
    await admin.create_account(world)
    other = await open_student(viewport)
    await other.register()

    # Not an admin yet: the page is not there at all.
    response = await admin.page.goto("/admin")
    assert response is not None
    assert response.status == 404
    await expect(admin.page.get_by_role("heading", name="We can't find that page")).to_be_visible()
    await expect(admin.page.get_by_role("link", name="Admin")).to_have_count(0)

    promote = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pmc",
        "admin",
        "promote",
        admin.email,
        cwd=REPO,
        env=world.system.env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await promote.communicate()
    assert promote.returncode == 0, stderr.decode()
    await admin.page.goto("/dashboard")
    await admin.page.get_by_role("link", name="Admin").click()
    page = admin.page
    await expect(page.locator('[data-total="students"]')).to_have_text(re.compile(r"^[1-9][0-9]*$"))
    await expect(page.locator("#health-state")).to_have_text(re.compile("Healthy|Needs attention"))

    await page.get_by_label("Email contains").fill(other.email)
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("#students-count")).to_have_text("1 student")
    await page.get_by_role("button", name=f"Disable {other.email}").click()
    await expect(admin.status).to_have_text(
        f"{other.email} is disabled: logged out everywhere, no more email."
    )
    await expect(page.get_by_role("button", name=f"Enable {other.email}")).to_be_focused()
    await admin.audit("admin")
    await page.get_by_role("button", name=f"Enable {other.email}").click()
    await expect(admin.status).to_have_text(f"{other.email} is enabled again.")
    assert admin.unexpected_errors(("/admin", 404)) == []


async def test_legal_pages_and_the_404_page(open_student: OpenStudent, viewport: ViewportSize) -> None:
    visitor = await open_student(viewport)
    page = visitor.page
    await page.goto("/")
    await page.get_by_role("link", name="Privacy", exact=True).click()
    await expect(page.get_by_role("heading", name="What we store, and why")).to_be_visible()
    await visitor.audit("privacy")
    await page.get_by_role("link", name="Terms", exact=True).click()
    await expect(page.get_by_role("heading", name="What it cannot promise")).to_be_visible()
    await visitor.audit("terms")

    response = await page.goto("/no/such/page-here")
    assert response is not None
    assert response.status == 404
    assert "no/such" not in await page.content()
    await expect(page.get_by_role("heading", name="We can't find that page")).to_be_visible()
    await visitor.audit("404 page")
    assert visitor.unexpected_errors(("/no/such/page-here", 404)) == []


async def test_a_guesser_is_slowed_and_told_so(open_student: OpenStudent, world: World) -> None:
    """Last in this module: the throttle it sets off counts this network address."""
    guesser = await open_student(MOBILE)
    await guesser.page.goto("/")
    target = f"someone-{guesser.email}"
    error = guesser.page.locator("#login-form-error")
    for attempt in range(30):
        await guesser.log_in(f"guess number {attempt}", email=target)
        await expect(error).not_to_have_text("")
        if (await error.text_content() or "") != "Wrong email or password":
            break
    await expect(error).to_have_text(re.compile("too many", re.IGNORECASE))
    await expect(error).to_be_focused()
    await guesser.audit("start page, throttled")
    assert guesser.unexpected_errors(("/api/v1/auth/login", 401), ("/api/v1/auth/login", 429)) == []


@pytest.fixture(params=SIZES)
def viewport(request: pytest.FixtureRequest) -> ViewportSize:
    size: ViewportSize = request.param
    return size


# ---- What a card says, and the order of the cards: pure functions, no system needed.


def _watch(
    class_nbr: str, *, status: str = "found", open_seats: int = 0, checked_ago: float = 10, **alerts: bool
) -> WatchOut:
    now = datetime.now(UTC)
    state = SectionState(
        term=TERM,
        class_nbr=class_nbr,
        subject="CSE",
        catalog_nbr=class_nbr[-3:],
        title="T",
        section="1",
        component="LEC",
        instructors=(),
        enrl_cap=10,
        enrl_tot=10 - open_seats,
        open_seats=open_seats,
        wait_cap=0,
        wait_tot=0,
        reserved_seats=False,
        days="",
        start_time=None,
        end_time=None,
        location="",
        instruction_mode="P",
        class_status="A",
    )
    section = section_view(
        state, found=status != "not_found", checked_at=now - timedelta(seconds=checked_ago)
    )
    return WatchOut(
        id=int(class_nbr),
        term=TERM,
        term_label="Spring 2027",
        class_nbr=class_nbr,
        created_at=now - timedelta(seconds=int(class_nbr) % 100),
        catalog_url="https://x",
        status=status,  # type: ignore[arg-type]
        section=None if status == "checking" else section,
        alerts={"seat_opened": True, **alerts},
    )


def _card(watch: WatchOut, *, emails_on: bool = True) -> Card:
    return card_of(watch, now=datetime.now(UTC), interval=timedelta(seconds=60), emails_on=emails_on)


def test_a_card_promises_an_email_only_when_one_will_be_sent() -> None:
    assert _card(_watch("10001")).headline == "Full — we'll email you when a seat opens"
    assert _card(_watch("10001"), emails_on=False).headline == "Full — emails are off"
    assert _card(_watch("10001", seat_opened=False)).headline == "Full — seat alerts are off"
    assert _card(_watch("10001", open_seats=3)).headline == "Open now — register"
    assert _card(_watch("10001", status="checking")).headline == "Checking…"
    assert _card(_watch("10001", status="not_found")).headline == "Not found in Spring 2027"
    assert _card(_watch("10001", status="gone")).headline == "Gone"
    assert _card(_watch("10001", status="ended")).headline == "Term ended"


def test_a_card_warns_once_its_data_is_older_than_two_check_intervals() -> None:
    assert not _card(_watch("10001", checked_ago=119)).stale
    assert _card(_watch("10001", checked_ago=121)).stale
    # A section no longer checked is not late.
    assert not _card(_watch("10001", status="gone", checked_ago=10_000)).stale


def test_cards_sort_and_filter() -> None:
    cards = [
        _card(_watch("10003", open_seats=1)),
        _card(_watch("10001", status="not_found")),
        _card(_watch("10002", open_seats=5)),
        _card(_watch("10004", status="checking")),
    ]
    assert [c.watch.class_nbr for c in arrange(cards, "course", "all")] == [
        "10001",
        "10002",
        "10003",
        "10004",
    ]
    assert [c.watch.class_nbr for c in arrange(cards, "seats", "all")][:2] == ["10002", "10003"]
    assert [c.watch.class_nbr for c in arrange(cards, "added", "all")] == ["10001", "10002", "10003", "10004"]
    assert [c.watch.class_nbr for c in arrange(cards, "course", "open")] == ["10002", "10003"]
    assert [c.watch.class_nbr for c in arrange(cards, "course", "problems")] == ["10001"]
    assert choice("<script>", SORTS, "course") == "course"
