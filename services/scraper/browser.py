"""Headless Chromium reading ASU's public class-list page: the way in when the JSON API shuts us out.

The page is a browser app that calls the class-search API itself, with whatever session it obtains. We open
it and keep the body of that call: the same bytes the API gives, so the one parser reads both paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import suppress
from urllib.parse import urlencode, urlsplit

import structlog
from playwright.async_api import (
    Browser,
    BrowserContext,
    Playwright,
    Response,
    Route,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError

from shared.metrics import BROWSER_PAGES

log = structlog.get_logger()

# Without the background-networking flags Debian's Chromium keeps calling Google services, which a
# closed network turns into a stream of failures.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Containers give /dev/shm 64 MB; Chromium's shared memory goes to /tmp instead of crashing tabs.
    "--disable-dev-shm-usage",
)
# The answer we want is JSON; everything that only paints the page is wasted bandwidth, ours and ASU's.
BLOCKED_RESOURCE_TYPES = frozenset({"image", "media", "font", "stylesheet"})
SEARCH_PATH_SUFFIX = "/search/classes"


class BrowserUnavailable(Exception):
    """Chromium cannot be started (missing binary, launch failure)."""


class PageFailed(Exception):
    """The page gave no class-search answer in time, or it was not 200 JSON."""


def page_url(catalog_url: str, query: Mapping[str, str]) -> str:
    """The public class-list page showing the results of `query`."""
    return f"{catalog_url.rstrip('/')}/catalog/classes/classlist?{urlencode(query)}"


def is_search_call(method: str, url: str) -> bool:
    """Whether a request the page made is its class-search call (not a CORS preflight or another API)."""
    return method == "GET" and urlsplit(url).path.rstrip("/").endswith(SEARCH_PATH_SUFFIX)


def answer_problem(status: int, content_type: str) -> str | None:
    """Why the page's class-search answer is unusable, or None when it is a 200 JSON body."""
    if status != 200:
        return f"the page's class search answered {status}"
    if "json" not in content_type.lower():
        return f"the page's class search answered {content_type or 'no content type'}, not JSON"
    return None


def launch_problem(chromium_path: str, error: str) -> str:
    """One line saying why Chromium did not start and what to set."""
    first_line = error.strip().splitlines()[0] if error.strip() else "no detail"
    where = chromium_path or "Playwright's own download"
    return f"Chromium could not start from {where} ({first_line}); set CHROMIUM_PATH, e.g. /usr/bin/chromium"


class BrowserSource:
    """Class-search answers read through the public page, at most `contexts` pages at once."""

    def __init__(
        self, catalog_url: str, *, contexts: int = 2, chromium_path: str = "", timeout: float = 30.0
    ) -> None:
        if contexts < 1:
            raise ValueError(f"contexts must be at least 1, not {contexts}")
        self._catalog_url = catalog_url
        self._chromium_path = chromium_path
        self._timeout = timeout
        self._slots = asyncio.Semaphore(contexts)
        self._launch_lock = asyncio.Lock()
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._open_contexts: set[BrowserContext] = set()
        self._closed = False

    @property
    def running(self) -> bool:
        """Whether a Chromium is up and connected now (none before the first search, or after a crash)."""
        return self._browser is not None and self._browser.is_connected()

    async def search(self, query: Mapping[str, str]) -> bytes:
        """The body of the class-search call the page makes for `query`."""
        url = page_url(self._catalog_url, query)
        async with self._slots:
            try:
                browser = await self._browser_now()
            except BrowserUnavailable:
                BROWSER_PAGES.labels("unavailable").inc()
                raise
            try:
                async with asyncio.timeout(self._timeout):
                    body = await self._read_page(browser, url)
            except TimeoutError as exc:
                BROWSER_PAGES.labels("failed").inc()
                log.warning("browser.page_timeout", url=url, timeout=self._timeout)
                raise PageFailed(f"no class-search answer from the page within {self._timeout:g} s") from exc
            except PageFailed as exc:
                BROWSER_PAGES.labels("failed").inc()
                log.warning("browser.page_failed", url=url, reason=str(exc))
                raise
            except PlaywrightError as exc:
                BROWSER_PAGES.labels("failed").inc()
                reason = exc.message.strip().splitlines()[0] if exc.message.strip() else type(exc).__name__
                log.warning("browser.page_failed", url=url, reason=reason)
                raise PageFailed(f"the page could not be read: {reason}") from exc
        BROWSER_PAGES.labels("ok").inc()
        return body

    async def aclose(self) -> None:
        """Close pages in flight (their searches raise PageFailed) and the browser; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        for context in list(self._open_contexts):
            with suppress(PlaywrightError):
                await context.close()
        # Waits out a launch in progress, so the browser it makes is closed too.
        async with self._launch_lock:
            browser, self._browser = self._browser, None
            if browser is not None:
                with suppress(PlaywrightError):
                    await browser.close()
            await self._stop_driver()
        log.info("browser.closed")

    async def _read_page(self, browser: Browser, url: str) -> bytes:
        context = await browser.new_context(service_workers="block")
        self._open_contexts.add(context)
        try:
            # Routing disables the HTTP cache, which a fresh context per page does not have anyway.
            await context.route("**/*", _skip_decoration)
            page = await context.new_page()
            timeout_ms = self._timeout * 1000
            async with page.expect_response(
                lambda response: is_search_call(response.request.method, response.url), timeout=timeout_ms
            ) as answer:
                opened = await page.goto(url, wait_until="commit", timeout=timeout_ms)
                # A page that is not there will never call the search: say so now, not at the timeout.
                if opened is not None and not opened.ok:
                    raise PageFailed(f"the class-list page answered {opened.status}")
            return await _usable_body(await answer.value)
        finally:
            self._open_contexts.discard(context)
            with suppress(PlaywrightError):
                await context.close()

    async def _browser_now(self) -> Browser:
        async with self._launch_lock:
            if self._closed:
                raise BrowserUnavailable("the browser source is closed")
            if self._browser is not None:
                if self.running:
                    return self._browser
                log.warning("browser.disconnected", action="relaunch")
            self._browser = await self._launch()
            return self._browser

    async def _launch(self) -> Browser:
        try:
            if self._playwright is None:
                self._playwright = await async_playwright().start()
            browser = await self._playwright.chromium.launch(
                executable_path=self._chromium_path or None,
                headless=True,
                # The scraper drains in-flight work on SIGTERM; Chromium must outlive the signal to allow it.
                handle_sigterm=False,
                handle_sigint=False,
                handle_sighup=False,
                args=list(CHROMIUM_ARGS),
            )
        except PlaywrightError as exc:
            await self._stop_driver()
            problem = launch_problem(self._chromium_path, exc.message)
            log.error("browser.unavailable", reason=problem)
            raise BrowserUnavailable(problem) from exc
        log.info("browser.launched", chromium=self._chromium_path or "playwright", version=browser.version)
        return browser

    async def _stop_driver(self) -> None:
        driver, self._playwright = self._playwright, None
        if driver is not None:
            with suppress(PlaywrightError):
                await driver.stop()


async def _skip_decoration(route: Route) -> None:
    if route.request.resource_type in BLOCKED_RESOURCE_TYPES:
        await route.abort("blockedbyclient")
    else:
        await route.continue_()


async def _usable_body(response: Response) -> bytes:
    problem = answer_problem(response.status, await response.header_value("content-type") or "")
    if problem is not None:
        raise PageFailed(problem)
    return await response.body()
