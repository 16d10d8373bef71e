"""HTTP adapter to ASU's class search: asks exactly as the public catalog page does, returns raw bytes."""

from __future__ import annotations

import time
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
        url = f"{self._base_url}/search/classes"
        params = {**_FIXED_QUERY, "term": term, "classNbr": class_nbr}
        started = time.perf_counter()
        try:
            response = await self._http.get(url, params=params)
        except httpx.TimeoutException as exc:
            SOURCE_REQUESTS.labels("timeout").inc()
            raise TransientCatalogError(f"class search timed out for {term}/{class_nbr}") from exc
        except httpx.TransportError as exc:
            SOURCE_REQUESTS.labels("unreachable").inc()
            raise TransientCatalogError(f"class search unreachable: {type(exc).__name__}: {exc}") from exc
        finally:
            SOURCE_REQUEST_SECONDS.observe(time.perf_counter() - started)
        status = response.status_code
        if status == 429 or status >= 500:
            SOURCE_REQUESTS.labels("http_429" if status == 429 else "http_5xx").inc()
            log.warning("catalog.transient_status", status=status, term=term, class_nbr=class_nbr)
            raise TransientCatalogError(f"class search answered {status} for {term}/{class_nbr}")
        if not response.is_success:
            SOURCE_REQUESTS.labels("http_4xx").inc()
            raise PermanentCatalogError(f"class search answered {status} for {term}/{class_nbr}")
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
