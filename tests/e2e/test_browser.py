"""The student's page in real Chromium against every service running as its own process: an account made
through the form, watches added and deleted, the seat count of a card updated live as the catalog changes."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Locator, Page, async_playwright, expect

from devtools.prepare_tests import APT_INSTALL
from devtools.prepare_tests import chromium as find_chromium
from shared.tokens import UNSUBSCRIBE, sign
from tests.e2e.system import TERM, World, add_section, change_section

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse 42"
# A look-up goes page → gateway → NATS → scraper → simulator → detector → NATS → gateway → page; checks
# run every second in this system, so a few seconds is the norm and this is the ceiling.
PIPELINE_MS = 20_000
# Chromium logs every HTTP error response of the page's own requests as a console error.
FAILED_RESOURCE = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")
# Requests that fail by design: the page asks who is logged in before anyone is (401).
EXPECTED_FAILURES = frozenset({("/api/v1/auth/me", 401)})


@dataclass
class Student:
    page: Page
    email: str = field(default_factory=lambda: f"student-{uuid.uuid4().hex[:8]}@asu.test")
    # (text, url) of every console error and uncaught exception.
    console_errors: list[tuple[str, str]] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append((message.text, message.location["url"]))

    def on_page_error(self, error: Error) -> None:
        self.console_errors.append((f"uncaught {error.name}: {error.message}", ""))

    def unexpected_errors(self, *also_expected: tuple[str, int]) -> list[tuple[str, str]]:
        """Console errors other than the failed requests expected, given as (path, status)."""
        expected = EXPECTED_FAILURES | set(also_expected)
        return [
            (text, url)
            for text, url in self.console_errors
            if not (
                (failed := FAILED_RESOURCE.match(text)) and (urlsplit(url).path, int(failed[1])) in expected
            )
        ]

    @property
    def message(self) -> Locator:
        return self.page.get_by_role("status")

    @property
    def cards(self) -> Locator:
        return self.page.locator("#watches article.card")

    def card(self, class_nbr: str) -> Locator:
        return self.cards.filter(has_text=class_nbr)

    async def create_account(self) -> None:
        await self.page.goto("/")
        await self.page.get_by_label("Email").fill(self.email)
        await self.page.get_by_label("Password").fill(PASSWORD)
        await self.page.get_by_role("button", name="Create account").click()
        await expect(self.message).to_have_text("Welcome! Add a class number to start watching.")
        await expect(self.page.locator("#account")).to_contain_text(f"Signed in as {self.email}")
        await expect(self.page.get_by_text("You are not watching any section yet.")).to_be_visible()
        # The live stream is open: from here on, no update of a watched section is missed.
        await expect(self.page.locator("#live-status")).to_have_text("live")

    async def watch(self, class_nbr: str, term: str = TERM) -> None:
        select = self.page.get_by_role("combobox", name="Term")
        await expect(select.locator('option[value="other"]')).to_be_attached()  # the terms have loaded
        if await select.locator(f'option[value="{term}"]').count():
            await select.select_option(term)
        else:  # the dropdown offers only the current and next terms: type older or later ones
            await select.select_option("other")
            await self.page.get_by_label("Term code").fill(term)
        await self.page.get_by_label("Class number").fill(class_nbr)
        await self.page.get_by_role("button", name="Watch", exact=True).click()

    async def delete(self, class_nbr: str) -> None:
        await self.card(class_nbr).get_by_role("button", name="Delete").click()
        await expect(self.card(class_nbr)).to_have_count(0)


@pytest.fixture(scope="module")
def chromium() -> Path:
    """The browser, which the run cannot download here: Debian's package (`make test` installs it as root).
    Missing is a failure, not a skip."""
    found = find_chromium()
    if found is None:
        pytest.fail(
            f"Chromium is missing: the browser tests need it; `sudo {APT_INSTALL}` (or set CHROMIUM_PATH)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, handle_sigint=False, handle_sigterm=False
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def student(browser: Browser, world: World) -> AsyncIterator[Student]:
    context = await browser.new_context(base_url=world.system.gateway_url)
    context.set_default_timeout(10_000)
    page = await context.new_page()
    someone = Student(page)
    page.on("console", someone.on_console)
    page.on("pageerror", someone.on_page_error)
    try:
        yield someone
    finally:
        await context.close()


async def test_a_student_sees_a_seat_open_live(student: Student, world: World, tmp_path: Path) -> None:
    await add_section(
        world, "71001", subject="CSE", catalog_nbr="355", title="Introduction to Theoretical Computer Science"
    )
    await student.create_account()

    await student.watch("71001")
    await expect(student.message).to_have_text("Watching class 71001. We'll look it up right away.")
    card = student.card("71001")
    await expect(card.locator(".seats")).to_have_text("0 of 100 open", timeout=PIPELINE_MS)
    await expect(card.get_by_role("heading")).to_have_text("CSE 355 · 71001")
    await expect(card.locator(".title")).to_have_text("Introduction to Theoretical Computer Science")
    await expect(card).to_contain_class("full")
    await expect(card).to_contain_text("Spring 2027 · Section")

    # Two students drop: the card changes in place, on the same page (no reload, no navigation).
    await student.page.evaluate("window.sameDocument = true")
    await change_section(world, "71001", enrl_tot=98)
    await expect(card.locator(".seats")).to_have_text("2 of 100 open", timeout=PIPELINE_MS)
    await expect(card).to_contain_class("open")
    assert await student.page.evaluate("window.sameDocument") is True
    await expect(student.cards).to_have_count(1)
    await student.page.screenshot(path=tmp_path / "seat-open.png", full_page=True)

    await student.delete("71001")
    await expect(student.page.get_by_text("You are not watching any section yet.")).to_be_visible()
    await student.page.screenshot(path=tmp_path / "deleted.png", full_page=True)
    assert student.unexpected_errors() == []


async def test_a_student_is_told_what_is_wrong_with_a_class_number(
    student: Student, world: World, tmp_path: Path
) -> None:
    await student.create_account()

    await student.watch("7100")
    await expect(student.message).to_have_text("Class number must be 5 digits")
    await expect(student.message).not_to_contain_class("ok")
    await expect(student.cards).to_have_count(0)
    await student.page.screenshot(path=tmp_path / "bad-number.png", full_page=True)

    # Well-formed but not offered this term: the card says so once the class search has been asked.
    await student.watch("71999")
    await expect(student.message).to_have_text("Watching class 71999. We'll look it up right away.")
    card = student.card("71999")
    await expect(card.get_by_role("heading")).to_have_text("Class 71999")
    await expect(card.locator(".seats")).to_have_text("No such section in this term", timeout=PIPELINE_MS)
    await student.page.screenshot(path=tmp_path / "not-found.png", full_page=True)

    await student.delete("71999")
    await expect(student.cards).to_have_count(0)
    assert student.unexpected_errors(("/api/v1/watches", 422)) == []


async def test_a_student_who_unsubscribed_can_turn_emails_back_on(student: Student, world: World) -> None:
    await student.create_account()
    me = await student.page.request.get("/api/v1/auth/me")
    token = sign(world.system.env["SECRET_KEY"], UNSUBSCRIBE, str((await me.json())["id"]), 3600)
    # The one-click POST a mail client makes from the List-Unsubscribe header.
    await student.page.request.post(
        f"/unsubscribe?token={token}",
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    await student.page.reload()
    banner = student.page.locator("#emails-off")
    await expect(banner).to_contain_text("Emails are off for your account")
    await banner.get_by_role("button", name="Turn emails back on").click()
    await expect(student.message).to_have_text("Emails are on again.")
    await expect(banner).to_be_hidden()
    me = await student.page.request.get("/api/v1/auth/me")
    assert (await me.json())["notifications_enabled"] is True
    assert student.unexpected_errors() == []
