"""What the simulator remembers between requests: sections, armed faults, request counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Annotated

import msgspec

from devtools.catalog_sim.sections import SimSection


class FaultPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`POST /_sim/faults`: next `count` searches wait `latency_ms`, then answer `status` (0: as usual)."""

    status: Annotated[int, msgspec.Meta(ge=0, le=599)] = 0
    count: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 1
    latency_ms: Annotated[int, msgspec.Meta(ge=0, le=120_000)] = 0

    def __post_init__(self) -> None:
        if self.status and self.status < 400:
            raise ValueError("status must be 0 (delay only) or an error status of 400 or more")


class SimCatalog:
    def __init__(self, sections: Iterable[SimSection] = ()) -> None:
        self.sections: dict[tuple[str, str], SimSection] = {}
        self._fault = FaultPlan(count=0)
        self._fault_left = 0
        self.searches = 0
        self.faulted = 0
        self.searches_by_class_nbr: Counter[str] = Counter()
        self.reset(sections)

    def put(self, section: SimSection) -> bool:
        """Store `section`; True when it replaced one."""
        replaced = section.key in self.sections
        self.sections[section.key] = section
        return replaced

    def arm(self, plan: FaultPlan) -> None:
        self._fault = plan
        self._fault_left = plan.count

    def take_fault(self) -> FaultPlan | None:
        """The fault for this search, if one is still armed."""
        if self._fault_left <= 0:
            return None
        self._fault_left -= 1
        return self._fault

    def record_search(self, class_nbr: str | None) -> None:
        self.searches += 1
        if class_nbr:
            self.searches_by_class_nbr[class_nbr] += 1

    def reset(self, sections: Iterable[SimSection] = ()) -> None:
        """Back to `sections`, no armed fault, counts at zero."""
        self.sections = {s.key: s for s in sections}
        self._fault = FaultPlan(count=0)
        self._fault_left = 0
        self.searches = 0
        self.faulted = 0
        self.searches_by_class_nbr = Counter()

    def stats(self) -> dict[str, object]:
        return {
            "searches": self.searches,
            "faulted": self.faulted,
            "by_class_nbr": dict(self.searches_by_class_nbr),
            "sections": len(self.sections),
            "faults_left": self._fault_left,
        }
