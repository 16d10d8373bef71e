"""The simulator's HTTP face: the class-search API as ASU serves it, plus a `/_sim/` control API."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import msgspec
import structlog
from litestar import Litestar, Request, Response, delete, get, patch, post
from litestar.params import FromPath, FromQuery

from devtools.catalog_sim.demo import demo_sections, drift, spotlight
from devtools.catalog_sim.page import Door, DoorPlan, page_routes
from devtools.catalog_sim.sections import (
    InvalidSection,
    SectionPatch,
    SimSection,
    by_class_nbr,
    by_course,
    by_keywords,
    check_section,
    patched,
)
from devtools.catalog_sim.state import FaultPlan, ResetOptions, SimCatalog
from shared.asu import is_class_nbr, term_label

API_PREFIX = "/catalog-microservices/api/v1"

log = structlog.get_logger()
S = TypeVar("S", bound=msgspec.Struct)


def build_app(
    *,
    demo: bool = False,
    seed: int = 7,
    drift_seconds: float = 10.0,
    on_startup: Sequence[Callable[[], None]] = (),
) -> Litestar:
    initial = demo_sections(seed) if demo else []
    catalog = SimCatalog(initial)
    door = Door()

    @get(f"{API_PREFIX}/search/classes")
    async def search_classes(request: Request[Any, Any, Any]) -> Response[Any]:
        if not door.admits(request.headers.get("authorization")):
            return Response({"error": "Unauthorized"}, status_code=401)
        query = request.query_params
        keywords = (query.get("keywords") or "").strip()
        class_nbr = (query.get("classNbr") or "").strip() or (keywords if is_class_nbr(keywords) else "")
        subject = (query.get("subject") or "").strip().upper()
        course = f"{subject} {(query.get('catalogNbr') or '').strip().upper()}".strip()
        catalog.record_search(class_nbr or None, None if class_nbr or not subject else course)
        fault = catalog.take_fault()
        if fault is not None:
            if fault.latency_ms:
                await asyncio.sleep(fault.latency_ms / 1000)
            if fault.status:
                catalog.faulted += 1
                headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
                return Response(
                    {"error": f"simulated {fault.status}"}, status_code=fault.status, headers=headers
                )
        # The catalog page resends its whole query plus the last answer's scrollId; the scroll alone
        # decides what comes next. An empty scrollId (some clients send one first) starts a search.
        scroll_id = (query.get("scrollId") or "").strip()
        if scroll_id:
            page = catalog.next_page(scroll_id)
            if page is None:
                # What ASU answers for an unknown or expired scroll is not known: 404 is our choice.
                return Response({"error": "unknown or expired scrollId"}, status_code=404)
            return Response(page)
        term = (query.get("term") or "").strip()
        if not term:
            return _unprocessable("term is required")
        sections = catalog.sections.values()
        if class_nbr:
            found = by_class_nbr(sections, term, class_nbr)
        elif query.get("subject"):
            found = by_course(sections, term, query.get("subject") or "", query.get("catalogNbr") or "")
        elif keywords:
            found = by_keywords(sections, term, keywords)
        else:
            return _unprocessable("give classNbr, keywords, or subject (with catalogNbr)")
        return Response(catalog.first_page(found))

    @get(f"{API_PREFIX}/terms")
    async def terms() -> dict[str, Any]:
        codes = sorted({"2267", "2271", "2274", *(s.term for s in catalog.sections.values())}, reverse=True)
        listed = [{"value": code, "label": term_label(code)} for code in codes]
        current = "2267"
        return {
            "fullList": listed,
            "futureList": [entry for entry in listed if entry["value"] > current],
            "currentTerm": current,
        }

    @post("/_sim/sections")
    async def put_section(request: Request[Any, Any, Any]) -> Response[Any]:
        section = await _read(request, SimSection)
        if isinstance(section, Response):
            return section
        try:
            check_section(section)
        except InvalidSection as exc:
            return _unprocessable(str(exc))
        replaced = catalog.put(section)
        return Response({"section": section, "replaced": replaced}, status_code=201)

    @patch("/_sim/sections/{term:str}/{class_nbr:str}")
    async def patch_section(
        request: Request[Any, Any, Any], term: FromPath[str], class_nbr: FromPath[str]
    ) -> Response[Any]:
        current = catalog.sections.get((term, class_nbr))
        if current is None:
            return Response({"error": f"no section {term}/{class_nbr}"}, status_code=404)
        changes = await _read(request, SectionPatch)
        if isinstance(changes, Response):
            return changes
        section = patched(current, changes)
        catalog.put(section)
        return Response({"section": section})

    @delete("/_sim/sections/{term:str}/{class_nbr:str}", status_code=204)
    async def delete_section(term: FromPath[str], class_nbr: FromPath[str]) -> Response[None]:
        if catalog.sections.pop((term, class_nbr), None) is None:
            return Response(None, status_code=404)
        return Response(None, status_code=204)

    @get("/_sim/sections")
    async def list_sections() -> dict[str, Any]:
        ordered = sorted(catalog.sections.values(), key=lambda s: s.key)
        return {"sections": ordered}

    @post("/_sim/faults")
    async def arm_faults(request: Request[Any, Any, Any]) -> Response[Any]:
        plan = await _read(request, FaultPlan)
        if isinstance(plan, Response):
            return plan
        catalog.arm(plan)
        return Response({"armed": plan}, status_code=200)

    @post("/_sim/reset", status_code=200)
    async def reset(request: Request[Any, Any, Any]) -> Response[Any]:
        options = await _read(request, ResetOptions) if await request.body() else ResetOptions()
        if isinstance(options, Response):
            return options
        catalog.reset(initial, page_size=options.page_size)
        door.arm(DoorPlan())
        return Response({"sections": len(catalog.sections), "page_size": catalog.page_size}, status_code=200)

    @get("/_sim/stats")
    async def stats(times: FromQuery[bool] = False) -> dict[str, object]:
        """The counts; `?times=1` adds when each recent search came (for a rate check)."""
        return catalog.stats(times=times)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        task = asyncio.create_task(_drift_forever(catalog, seed, drift_seconds)) if demo else None
        for hook in on_startup:
            hook()
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    return Litestar(
        route_handlers=[
            search_classes,
            terms,
            put_section,
            patch_section,
            delete_section,
            list_sections,
            arm_faults,
            reset,
            stats,
            *page_routes(door, API_PREFIX),
        ],
        lifespan=[lifespan],
        openapi_config=None,
    )


def demo_watch_list(seed: int = 7) -> list[SimSection]:
    """The full demo sections whose seats the drift opens first: what to tell a person to watch."""
    return spotlight(demo_sections(seed))


async def _drift_forever(catalog: SimCatalog, seed: int, every: float) -> None:
    rng = random.Random(seed)
    spotlit = [s.key for s in spotlight(list(catalog.sections.values()))]
    tick = 0
    while True:
        await asyncio.sleep(every)
        for section in drift(list(catalog.sections.values()), rng, spotlit, tick):
            before = catalog.sections.get(section.key)
            catalog.put(section)
            log.info(
                "sim.drift",
                term=section.term,
                class_nbr=section.class_nbr,
                course=f"{section.subject} {section.catalog_nbr}",
                open_seats=max(0, section.enrl_cap - section.enrl_tot),
                was_open=None if before is None else max(0, before.enrl_cap - before.enrl_tot),
                instructors=section.instructors or ["Staff"],
            )
        tick += 1


async def _read(request: Request[Any, Any, Any], kind: type[S]) -> S | Response[Any]:
    try:
        return msgspec.json.decode(await request.body(), type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return _unprocessable(str(exc))


def _unprocessable(message: str) -> Response[Any]:
    return Response({"error": message}, status_code=422)
