"""The student's pages in real Chromium against every service running as its own process: the account
flows (sign up and confirm through the emailed link, log in before confirming, reset a forgotten password,
emails back on after an unsubscribe). `tests/e2e/test_pages.py` walks every page with the same machinery:
each page is checked by axe, for horizontal scrolling at its width, and for inline script or style."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Error,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from devtools import resend_fake
from devtools.prepare_tests import APT_INSTALL
from devtools.prepare_tests import chromium as find_chromium
from shared.tokens import UNSUBSCRIBE, sign
from tests.e2e.system import World, eventually

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
DESKTOP = ViewportSize(width=1280, height=800)
MOBILE = ViewportSize(width=390, height=844)
PASSWORD = "correct horse 42"
NEW_PASSWORD = "a brand new passphrase"
VERIFY_SUBJECT = "Verify your email for PickMyClass"
# Chromium logs every HTTP error response of the page's own requests as a console error.
FAILED_RESOURCE = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")
# An account link in an email's text (SITE_URL is the gateway's own URL).
LINK = re.compile(r"https?://\S+/(?:verify|reset)\?token=\S+")
# What the Content-Security-Policy (script-src 'self'; style-src 'self') would refuse: a script element
# without src, a style element or attribute, an event handler attribute.
INLINE = re.compile(
    r"<script(?![^>]*\ssrc=)[^>]*>|<style[\s>]|<[^>]+\sstyle=|<[^>]+\son[a-z]+=", re.IGNORECASE
)
AXE = Axe()
BLOCKING = frozenset({"serious", "critical"})


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
    viewport: ViewportSize
    email: str = field(default_factory=lambda: f"student-{uuid.uuid4().hex[:8]}@asu.test")
    # (text, url) of every console error and uncaught exception.
    console_errors: list[tuple[str, str]] = field(default_factory=list)
    audited: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append((message.text, message.location["url"]))

    def on_page_error(self, error: Error) -> None:
        self.console_errors.append((f"uncaught {error.name}: {error.message}", ""))

    def unexpected_errors(self, *expected: tuple[str, int]) -> list[tuple[str, str]]:
        """Console errors other than the failed requests expected, given as (path, status)."""
        return [
            (text, url)
            for text, url in self.console_errors
            if not (
                (failed := FAILED_RESOURCE.match(text))
                and (urlsplit(url).path, int(failed[1])) in set(expected)
            )
        ]

    async def audit(self, what: str) -> None:
        """axe finds nothing serious or critical, nothing scrolls sideways, nothing inline."""
        results = await AXE.run(self.page)
        blocking = [
            (violation["id"], violation["impact"], [node["target"] for node in violation["nodes"]][:3])
            for violation in results.response["violations"]
            if violation["impact"] in BLOCKING
        ]
        assert blocking == [], f"{what} at {self.viewport['width']} px: {blocking}"
        width = await self.page.evaluate("document.documentElement.scrollWidth")
        assert width <= self.viewport["width"], (
            f"{what} scrolls sideways at {self.viewport['width']} px: {width}"
        )
        # The page as the server sends it (a browser may add style attributes through the CSSOM, which the
        # policy allows).
        served = await (await self.page.request.get(self.page.url)).text()
        inline = INLINE.findall(served)
        assert inline == [], f"{what}: inline script or style {inline}"
        self.audited.append(what)

    @property
    def status(self) -> Locator:
        return self.page.locator("#status")

    def form(self, name: str) -> Locator:
        return self.page.locator(f"#{name}-form")

    async def register(self) -> None:
        await self.page.goto("/")
        signup = self.form("signup")
        await signup.get_by_label("Email").fill(self.email)
        await signup.get_by_label("Password", exact=True).fill(PASSWORD)
        await signup.get_by_label("Repeat the password", exact=True).fill(PASSWORD)
        await signup.get_by_role("button", name="Create account").click()
        await expect(self.status).to_have_text(
            f"Check your email to confirm your address: we wrote to {self.email}."
        )

    async def create_account(self, world: World) -> None:
        """Sign up on the start page, then open the confirmation link from the email, which logs in."""
        await self.register()
        await self.page.goto(await emailed_link(world, self.email, VERIFY_SUBJECT))
        await expect(self.page).to_have_url(re.compile(r"/dashboard"))
        await expect(self.page.locator("#welcome")).to_have_text(
            "Your email address is confirmed. Add a class number to start watching."
        )
        # The live stream is open: from here on, no update of a watched section is missed.
        await expect(self.page.locator("#live-text")).to_have_text("Live")

    async def log_in(self, password: str, email: str | None = None) -> None:
        login = self.form("login")
        await login.get_by_label("Email").fill(email or self.email)
        await login.get_by_label("Password", exact=True).fill(password)
        await login.get_by_role("button", name="Log in").click()

    async def log_out(self) -> None:
        await self.page.get_by_role("button", name="Log out").click()
        await expect(
            self.page.get_by_role("heading", name="Get the seat in the class that's full")
        ).to_be_visible()


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


OpenStudent = Callable[[ViewportSize], Awaitable[Student]]


@pytest.fixture(name="open_student")
async def open_student_fixture(browser: Browser, world: World) -> AsyncIterator[OpenStudent]:
    """Opens a fresh browser context (no cookies) at a viewport size; closed after the test."""
    contexts: list[Any] = []

    async def opened(viewport: ViewportSize) -> Student:
        context = await browser.new_context(
            base_url=world.system.gateway_url, viewport=viewport, accept_downloads=True
        )
        contexts.append(context)
        context.set_default_timeout(10_000)
        page = await context.new_page()
        someone = Student(page, viewport)
        page.on("console", someone.on_console)
        page.on("pageerror", someone.on_page_error)
        return someone

    try:
        yield opened
    finally:
        for context in contexts:
            await context.close()


@pytest.fixture
async def student(open_student: OpenStudent) -> Student:
    return await open_student(DESKTOP)


async def test_a_student_who_logs_in_before_confirming_can_get_a_new_link(
    student: Student, world: World
) -> None:
    await student.register()
    # The account exists once its email is on the way (registration finishes after its answer).
    await emailed_link(world, student.email, VERIFY_SUBJECT)
    await student.log_in(PASSWORD)
    error = student.page.locator("#login-form-error")
    await expect(error).to_have_text(
        "Confirm your email address first: open the link we emailed you, or ask for a new one"
    )
    await expect(error).to_be_focused()
    unverified = student.page.locator("#unverified")
    await unverified.get_by_role("button", name="Send a new link").click()
    await expect(student.status).to_have_text(
        "If this address has an account waiting for verification, a new link is on its way"
    )
    await expect(unverified).to_be_hidden()

    async def two_links() -> bool:
        emails = await resend_fake.fetch_emails(world.resend_url)
        return sum(1 for email in emails if email["to"] == [student.email]) >= 2

    await eventually(two_links, "the second verification email")
    await student.page.goto(await emailed_link(world, student.email, VERIFY_SUBJECT))
    await expect(student.page).to_have_url(re.compile(r"/dashboard"))
    assert student.unexpected_errors(("/api/v1/auth/login", 403)) == []


async def test_a_student_resets_a_forgotten_password(student: Student, world: World, tmp_path: Path) -> None:
    await student.create_account(world)
    await student.log_out()

    forgot = student.form("forgot")
    await forgot.get_by_label("Email").fill(student.email)
    await forgot.get_by_role("button", name="Email me a reset link").click()
    await expect(student.status).to_have_text(
        "If this address has an account, a link to choose a new password is on its way"
    )

    link = await emailed_link(world, student.email, "Reset your PickMyClass password")
    await student.page.goto(link)
    await student.audit("reset page")
    await student.page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await student.page.get_by_label("Repeat the new password", exact=True).fill(NEW_PASSWORD + "typo")
    await student.page.get_by_role("button", name="Save the new password").click()
    repeat = student.page.get_by_label("Repeat the new password", exact=True)
    await expect(repeat).to_have_attribute("aria-invalid", "true")
    await expect(repeat).to_be_focused()
    await expect(student.page.locator("#confirm-password-error")).to_have_text(
        "The two passwords are not the same."
    )
    await student.audit("reset page with an error")
    await repeat.fill(NEW_PASSWORD)
    await student.page.get_by_role("button", name="Save the new password").click()
    await expect(student.status).to_have_text(
        "Your password is changed, and every device that was logged in is logged out."
    )
    await expect(student.page.get_by_role("link", name="Log in with your new password")).to_be_focused()
    await student.page.screenshot(path=tmp_path / "password-reset.png", full_page=True)

    # The link is spent: opening it again says so, and what to do.
    await student.page.goto(link)
    await expect(student.page.get_by_role("heading", name="This link was already used")).to_be_visible()

    await student.page.goto("/")
    await student.log_in(PASSWORD)
    await expect(student.page.locator("#login-form-error")).to_have_text("Wrong email or password")
    await student.log_in(NEW_PASSWORD)
    await expect(student.page).to_have_url(re.compile(r"/dashboard$"))
    # The server-rendered "already used" page has no icon link, so Chromium asks for /favicon.ico.
    assert (
        student.unexpected_errors(("/api/v1/auth/login", 401), ("/reset", 410), ("/favicon.ico", 404)) == []
    )


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
    await student.audit("dashboard with emails off")
    await banner.get_by_role("button", name="Turn emails back on").click()
    await expect(student.status).to_have_text("Emails are on again.")
    await expect(banner).to_be_hidden()
    me = await student.page.request.get("/api/v1/auth/me")
    assert (await me.json())["notifications_enabled"] is True
    assert student.unexpected_errors() == []
