"""`pmc check`: one live look-up through the scraper's own client and parser; nothing is stored."""

from __future__ import annotations

import msgspec

from services.scraper.catalog import CatalogClient
from services.scraper.parser import find_section
from shared.events import SectionState


async def look_up(api_url: str, term: str, class_nbr: str) -> SectionState | None:
    async with CatalogClient(api_url, max_connections=1) as catalog:
        payload = await catalog.search_section(term, class_nbr)
    return find_section(payload, term, class_nbr)


def describe(state: SectionState) -> str:
    teachers = ", ".join(state.instructors) or "Staff"
    when = " ".join(filter(None, [state.days, state.start_time, state.end_time and f"- {state.end_time}"]))
    lines = [
        f"{state.subject} {state.catalog_nbr}  {state.title}",
        f"term {state.term}  class {state.class_nbr}  section {state.section or '-'}  {state.component}",
        f"seats      {state.open_seats} open of {state.enrl_cap} ({state.enrl_tot} enrolled)"
        + ("  reserved seats" if state.reserved_seats else ""),
        f"waitlist   {state.wait_tot} of {state.wait_cap}",
        f"instructor {teachers}",
        f"when       {when or '-'}   where {state.location or '-'}   mode {state.instruction_mode or '-'}",
        f"status     {state.class_status}",
    ]
    return "\n".join(lines)


def as_json(state: SectionState) -> str:
    return msgspec.json.format(msgspec.json.encode(state), indent=2).decode()
