"""The student's page in real Chromium against every service running as its own process: an account made
through the form and verified through the emailed link, a forgotten password reset through the emailed
link, watches added and deleted, the seat count of a card updated live as the catalog changes."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Locator, Page, async_playwright, expect

from devtools import resend_fake
from devtools.prepare_tests import APT_INSTALL
from devtools.prepare_tests import chromium as find_chromium
from shared.tokens import UNSUBSCRIBE, sign
from tests.e2e.system import TERM, World, add_section, change_section, eventually

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
NEW_PASSWORD = "a brand new passphrase"
# A look-up goes page → gateway → NATS → scraper → simulator → detector → NATS → gateway → page; checks
# run every second in this system, so a few seconds is the norm and this is the ceiling.
PIPELINE_MS = 20_000
# Chromium logs every HTTP error response of the page's own requests as a console error.
FAILED_RESOURCE = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")
# Requests that fail by design: the page asks who is logged in before anyone is (401).
EXPECTED_FAILURES = frozenset({("/api/v1/auth/me", 401)})
# An account link in an email's text (SITE_URL is the gateway's own URL).
LINK = re.compile(r"https?://\S+/(?:verify|reset)\?token=\S+")


async def emailed_link(world: World, address: str, subject: str) -> str:
    """The link in the newest email with this subject that the provider accepted for `address`."""

    async def emails() -> list[str]:
        return [
            email["text"]
            for email in await resend_fake.fetch_emails(world.resend_url)
            if email["to"] == [address] and email["subject"] == subject
        ]

    *_, text = await eventually(emails, f"the email {subject!r} to {address}")
    link = LINK.search(text)
    assert link is not None, text
    return link.group(0)


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
    def auth_form(self) -> Locator:
        return self.page.locator("#auth-form")

    @property
    def cards(self) -> Locator:
        return self.page.locator("#watches article.card")

    def card(self, class_nbr: str) -> Locator:
        return self.cards.filter(has_text=class_nbr)

    async def register(self) -> None:
        await self.page.goto("/")
        await self.auth_form.get_by_label("Email").fill(self.email)
        await self.auth_form.get_by_label("Password").fill(PASSWORD)
        await self.page.get_by_role("button", name="Create account").click()
        await expect(self.message).to_have_text(
            f"Check your email to verify your address. We wrote to {self.email}."
        )
        await expect(self.page.locator("#account")).to_be_hidden()

    async def create_account(self, world: World) -> None:
        """Register through the form, then open the verification link from the email, which logs in."""
        await self.register()
        await self.page.goto(await emailed_link(world, self.email, "Verify your email for PickMyClass"))
        await expect(self.message).to_have_text(
            "Your email address is verified. Add a class number to start watching."
        )
        await expect(self.page).to_have_url(re.compile(r"/$"))
        await expect(self.page.locator("#account")).to_contain_text(f"Signed in as {self.email}")
        await expect(self.page.get_by_text("You are not watching any section yet.")).to_be_visible()
        # The live stream is open: from here on, no update of a watched section is missed.
        await expect(self.page.locator("#live-status")).to_have_text("live")

    async def log_in(self, password: str) -> None:
        await self.auth_form.get_by_label("Email").fill(self.email)
        await self.auth_form.get_by_label("Password").fill(password)
        await self.page.get_by_role("button", name="Log in").click()

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
    await student.create_account(world)

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
    await student.create_account(world)

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
    await student.create_account(world)
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


async def test_a_student_who_logs_in_before_verifying_can_get_a_new_link(
    student: Student, world: World
) -> None:
    await student.register()
    # The account exists once its email is on the way (registration finishes after its answer).
    await emailed_link(world, student.email, "Verify your email for PickMyClass")
    await student.log_in(PASSWORD)
    await expect(student.message).to_have_text(
        "Confirm your email address first: open the link we emailed you, or ask for a new one"
    )
    unverified = student.page.locator("#unverified")
    await unverified.get_by_role("button", name="Resend the link").click()
    await expect(student.message).to_have_text(
        "If this address has an account waiting for verification, a new link is on its way"
    )
    await expect(unverified).to_be_hidden()

    async def two_links() -> bool:
        emails = await resend_fake.fetch_emails(world.resend_url)
        return sum(1 for email in emails if email["to"] == [student.email]) >= 2

    await eventually(two_links, "the second verification email")
    await student.page.goto(await emailed_link(world, student.email, "Verify your email for PickMyClass"))
    await expect(student.page.locator("#account")).to_contain_text(f"Signed in as {student.email}")
    assert student.unexpected_errors(("/api/v1/auth/login", 403)) == []


async def test_a_student_resets_a_forgotten_password(student: Student, world: World, tmp_path: Path) -> None:
    await student.create_account(world)
    await student.page.get_by_role("button", name="Log out").click()
    await expect(student.auth_form).to_be_visible()

    await student.page.get_by_role("button", name="Forgot your password?").click()
    forgot = student.page.locator("#forgot-form")
    await forgot.get_by_label("Email").fill(student.email)
    await forgot.get_by_role("button", name="Email me a reset link").click()
    await expect(student.message).to_have_text(
        "If this address has an account, a link to choose a new password is on its way"
    )

    link = await emailed_link(world, student.email, "Reset your PickMyClass password")
    await student.page.goto(link)
    await student.page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await student.page.get_by_label("Repeat the new password").fill(NEW_PASSWORD + "typo")
    await student.page.get_by_role("button", name="Save the new password").click()
    await expect(student.message).to_have_text("The two passwords are not the same.")
    await student.page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
    await student.page.get_by_role("button", name="Save the new password").click()
    await expect(student.message).to_have_text(
        "Your password is changed, and every device that was logged in is logged out."
    )
    await student.page.screenshot(path=tmp_path / "password-reset.png", full_page=True)

    # The link is spent: opening it again says so, and what to do.
    await student.page.goto(link)
    await expect(student.page.get_by_role("heading", name="This link was already used")).to_be_visible()

    await student.page.goto("/")
    await student.log_in(PASSWORD)
    await expect(student.message).to_have_text("Wrong email or password")
    await student.log_in(NEW_PASSWORD)
    await expect(student.page.locator("#account")).to_contain_text(f"Signed in as {student.email}")
    # The server-rendered "already used" page has no icon link, so Chromium asks for /favicon.ico.
    assert (
        student.unexpected_errors(("/api/v1/auth/login", 401), ("/reset", 410), ("/favicon.ico", 404)) == []
    )
