"""The public class-list page as a browser sees it, and the door in front of the class-search API.

ASU's page is a React app that gets a session token, then calls the class-search API with
`Authorization: Bearer <token>`; anonymous visitors send the literal `Bearer null`. While the door is open
the simulator accepts `Bearer null`, as ASU does today. `POST /_sim/door {"anonymous": false}` closes it:
then only tokens the page obtained (which takes running its script with the cookie its HTML set) get in,
which is exactly the situation the scraper's browser path exists for.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections import Counter
from contextlib import suppress
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.enums import MediaType
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

ANONYMOUS_AUTHORIZATION = "Bearer null"
PAGE_PATH = "/catalog/classes/classlist"
ASSETS_PATH = "/catalog/classes/static"
VISIT_COOKIE = "sim_visit"

# name -> (media type, bytes): one of each kind the scraper's browser blocks, so blocking is observable.
_ASSETS: dict[str, tuple[str, bytes]] = {
    "sim.css": ("text/css", b".class-results-cell{padding:2px 6px}\n"),
    "logo.png": (
        "image/png",
        base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
        ),
    ),
    # Not a valid font: Chromium still fetches it before rejecting it, which is all a test needs to see.
    "sim.woff2": ("font/woff2", b"wOF2 simulated"),
}


class DoorPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /_sim/door`: whether `Bearer null` gets in, and how long the page's session call takes."""

    anonymous: bool = True
    session_delay_ms: Annotated[int, msgspec.Meta(ge=0, le=120_000)] = 0


class Door:
    """Who the class-search API lets in, and what the page saw; a new plan starts new counts and lets
    session calls held by the old plan's delay go at once."""

    page_loads: int
    sessions: int
    sessions_in_flight: int
    sessions_max_in_flight: int
    tokens_issued: int
    assets: Counter[str]

    def __init__(self) -> None:
        self.plan = DoorPlan()
        self._release = asyncio.Event()
        # Tokens stay valid across plans, as a real session outlives a policy change.
        self._tokens: set[str] = set()
        self._reset_counts()

    def admits(self, authorization: str | None) -> bool:
        if authorization == ANONYMOUS_AUTHORIZATION:
            return self.plan.anonymous
        token = (authorization or "").removeprefix("Bearer ")
        return token in self._tokens

    def issue_token(self) -> str | None:
        """The page's session token: none while anonymous callers are welcome, as for ASU's visitors."""
        if self.plan.anonymous:
            return None
        token = secrets.token_urlsafe(24)
        self._tokens.add(token)
        self.tokens_issued += 1
        return token

    async def hold_session(self) -> None:
        """Wait out the plan's session delay, counting the session calls waiting together."""
        self.sessions += 1
        self.sessions_in_flight += 1
        self.sessions_max_in_flight = max(self.sessions_max_in_flight, self.sessions_in_flight)
        release = self._release
        try:
            if self.plan.session_delay_ms:
                with suppress(TimeoutError):
                    await asyncio.wait_for(release.wait(), self.plan.session_delay_ms / 1000)
        finally:
            if release is self._release:
                self.sessions_in_flight -= 1

    def arm(self, plan: DoorPlan) -> None:
        self.plan = plan
        # Held sessions would otherwise keep the server from shutting down until their delay ran out.
        self._release.set()
        self._release = asyncio.Event()
        self._reset_counts()

    def stats(self) -> dict[str, object]:
        return {
            "anonymous": self.plan.anonymous,
            "session_delay_ms": self.plan.session_delay_ms,
            "page_loads": self.page_loads,
            "sessions": self.sessions,
            "sessions_in_flight": self.sessions_in_flight,
            "sessions_max_in_flight": self.sessions_max_in_flight,
            "tokens_issued": self.tokens_issued,
            "assets": dict(self.assets),
        }

    def _reset_counts(self) -> None:
        self.page_loads = 0
        self.sessions = 0
        self.sessions_in_flight = 0
        self.sessions_max_in_flight = 0
        self.tokens_issued = 0
        self.assets = Counter()


def page_routes(door: Door, api_prefix: str) -> list[HTTPRouteHandler]:
    """The class-list page, its assets, the session call it makes, and the door's control API."""
    page = _page_html(api_prefix).encode()

    @get(PAGE_PATH, media_type=MediaType.HTML)
    async def class_list() -> Response[bytes]:
        door.page_loads += 1
        visit = Cookie(key=VISIT_COOKIE, value=secrets.token_urlsafe(16), httponly=True, samesite="lax")
        return Response(page, media_type=MediaType.HTML, cookies=[visit])

    @get(f"{ASSETS_PATH}/{{name:str}}")
    async def asset(name: FromPath[str]) -> Response[bytes]:
        found = _ASSETS.get(name)
        if found is None:
            return Response(b"", status_code=404)
        door.assets[name] += 1
        media_type, body = found
        return Response(body, media_type=media_type)

    @get(f"{api_prefix}/session")
    async def session(request: Request[Any, Any, Any]) -> Response[Any]:
        if not request.cookies.get(VISIT_COOKIE):
            return Response({"error": "open the class list first"}, status_code=401)
        # A slow session call keeps pages open long enough for a test to count them.
        await door.hold_session()
        return Response({"token": door.issue_token()})

    @post("/_sim/door", status_code=200)
    async def arm_door(request: Request[Any, Any, Any]) -> Response[Any]:
        try:
            plan = msgspec.json.decode(await request.body(), type=DoorPlan)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return Response({"error": str(exc)}, status_code=422)
        door.arm(plan)
        return Response({"door": plan})

    @get("/_sim/door")
    async def door_stats() -> dict[str, object]:
        return door.stats()

    return [class_list, asset, session, arm_door, door_stats]


def _page_html(api_prefix: str) -> str:
    # The markup mirrors the classes ASU's page renders (.class-results-rows, .class-accordion,
    # .class-results-cell.<name>), so a DOM reader built here would read the real page too.
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Class Search | ASU Catalog (simulator)</title>
<link rel="stylesheet" href="{ASSETS_PATH}/sim.css">
<style>
@font-face {{ font-family: SimSans; src: url("{ASSETS_PATH}/sim.woff2") format("woff2"); }}
body {{ font-family: SimSans, sans-serif; }}
</style>
</head>
<body>
<img src="{ASSETS_PATH}/logo.png" alt="ASU catalog (simulator)" width="16" height="16">
<main id="app">Loading classes…</main>
<script>
(async () => {{
  const app = document.getElementById("app");
  const api = "{api_prefix}";
  const say = (text) => {{ app.textContent = text; }};
  try {{
    const session = await (await fetch(api + "/session")).json();
    const query = window.location.search.replace(/^\\?/, "");
    const response = await fetch(api + "/search/classes?refine=Y&" + query, {{
      headers: {{ Authorization: "Bearer " + session.token }},
    }});
    if (!response.ok) {{ say("class search failed: " + response.status); return; }}
    const classes = (await response.json()).classes || [];
    if (classes.length === 0) {{ say("no classes found"); return; }}
    const rows = document.createElement("div");
    rows.className = "class-results-rows";
    for (const item of classes) {{
      const c = item.CLAS || {{}};
      const seats = item.seatInfo || {{}};
      const open = Math.max(0, (seats.ENRL_CAP || 0) - (seats.ENRL_TOT || 0));
      const cells = {{
        number: c.CLASSNBR,
        course: c.SUBJECT + " " + c.CATALOGNBR,
        title: c.TITLE,
        instructor: (c.INSTRUCTORSLIST || []).join(", "),
        seats: open + " of " + (seats.ENRL_CAP || 0),
        location: c.LOCATION,
        days: c.DAYLIST,
        start: c.STARTTIME,
        end: c.ENDTIME,
      }};
      const row = document.createElement("div");
      row.className = "class-accordion";
      for (const [name, value] of Object.entries(cells)) {{
        const cell = document.createElement("div");
        cell.className = "class-results-cell " + name;
        cell.textContent = value == null ? "" : String(value);
        row.appendChild(cell);
      }}
      rows.appendChild(row);
    }}
    app.replaceChildren(rows);
  }} catch (error) {{
    say("class search failed: " + error);
  }}
}})();
</script>
</body>
</html>
"""
