"""HTTP adapter to ASU's class search: asks exactly as the public catalog page does, returns raw bytes."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from types import TracebackType

import httpx
import structlog

from shared.metrics import SOURCE_REQUEST_SECONDS, SOURCE_REQUESTS

log = structlog.get_logger()

# The catalog page is a browser app; requests that look like it are what the API is used to serving.
_HEADERS = {
    "Accept": "application/json",
    "Authorization": "Bearer null",
    "Origin": "https://catalog.apps.asu.edu",
    "Referer": "https://catalog.apps.asu.edu/",
    "User-Agent": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36"
    ),
}
_FIXED_QUERY = {
    "refine": "Y",
    "campusOrOnlineSelection": "A",
    "honors": "F",
    "promod": "F",
    "searchType": "all",
}


class TransientCatalogError(Exception):
    """The catalog could not answer now (5xx, 429, timeout, connection trouble): worth retrying later."""


class PermanentCatalogError(Exception):
    """The catalog refused the request itself (4xx other than 429): asking the same again will not help."""


class RateLimited(TransientCatalogError):
    """429: the class search asks every one of us to wait (`retry_after` seconds, when it says)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ApiRefused(PermanentCatalogError):
    """401/403: the anonymous door (`Bearer null`) is closed to us; the class-list page may still work."""


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now`: either a number of seconds or an HTTP date; None if absent or
    unreadable (the caller then uses its own back-off)."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(min(int(text), 86_400))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def course_query(term: str, subject: str, catalog_nbr: str) -> dict[str, str]:
    """The query of a whole-course search (every section, every campus), as the catalog page builds it."""
    return {**_FIXED_QUERY, "term": term, "subject": subject, "catalogNbr": catalog_nbr}


def section_query(term: str, class_nbr: str) -> dict[str, str]:
    return {**_FIXED_QUERY, "term": term, "classNbr": class_nbr}


class CatalogClient:
    def __init__(self, base_url: str, *, timeout: float = 15.0, max_connections: int = 20) -> None:
        self._base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            headers=_HEADERS,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def search_section(self, term: str, class_nbr: str) -> bytes:
        """The raw class-search answer for one class number; parse it with `parser.find_section`."""
        return await self.search(section_query(term, class_nbr), f"{term}/{class_nbr}")

    async def search(self, query: Mapping[str, str], what: str) -> bytes:
        """The raw class-search answer to `query` (`what` names it in errors)."""
        url = f"{self._base_url}/search/classes"
        started = time.perf_counter()
        try:
            response = await self._http.get(url, params=dict(query))
        except httpx.TimeoutException as exc:
            SOURCE_REQUESTS.labels("timeout").inc()
            raise TransientCatalogError(f"class search timed out for {what}") from exc
        except httpx.TransportError as exc:
            SOURCE_REQUESTS.labels("unreachable").inc()
            raise TransientCatalogError(f"class search unreachable: {type(exc).__name__}: {exc}") from exc
        finally:
            SOURCE_REQUEST_SECONDS.observe(time.perf_counter() - started)
        status = response.status_code
        if status == 429:
            SOURCE_REQUESTS.labels("http_429").inc()
            retry_after = retry_after_seconds(response.headers.get("retry-after"), time.time())
            log.warning("class search rate limit", what=what, retry_after=retry_after)
            raise RateLimited(f"class search answered 429 for {what}", retry_after)
        if status >= 500:
            SOURCE_REQUESTS.labels("http_5xx").inc()
            log.warning("class search failed", status=status, what=what)
            raise TransientCatalogError(f"class search answered {status} for {what}")
        if status in (401, 403):
            SOURCE_REQUESTS.labels("http_4xx").inc()
            raise ApiRefused(f"class search answered {status} for {what}: the anonymous door is closed")
        if not response.is_success:
            SOURCE_REQUESTS.labels("http_4xx").inc()
            raise PermanentCatalogError(f"class search answered {status} for {what}")
        # Answered requests are counted by what they said (ok, not_found, bad_shape) once parsed.
        return response.content

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> CatalogClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
