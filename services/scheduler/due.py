"""Which checks a scheduling window asks for (pure)."""

from __future__ import annotations

import math

from shared.events import CheckSection, encode
from shared.messaging import Outgoing
from shared.streams import Topology


def seconds_until_next_window(now: float, interval: int) -> float:
    return (math.floor(now / interval) + 1) * interval - now


def check_messages(
    topology: Topology, sections: list[tuple[str, str]], window: int, now: float
) -> list[Outgoing]:
    """One check per distinct (term, class number) for `window`.

    The message id names (section, window), so every scheduler replica publishing the same window produces
    the same ids and JetStream keeps one of each.
    """
    return [
        Outgoing(
            topology.check_subject,
            encode(CheckSection(term=term, class_nbr=class_nbr, window=window, requested_at=now)),
            topology.check_msg_id(term, class_nbr, window),
        )
        for term, class_nbr in sections
    ]
