"""What the scraper publishes for what a check saw (pure)."""

from __future__ import annotations

from nats.aio.msg import Msg

from shared.events import SectionNotFound, SectionSnapshot, SectionState, encode
from shared.messaging import Outgoing
from shared.streams import Topology


def snapshot_id(term: str, class_nbr: str, msg: Msg) -> str:
    """Named after the check message, so a redelivered check (its ack was lost) publishes snapshots that
    JetStream recognises as duplicates, and the detector treats a late twin as the same observation."""
    return f"{term}-{class_nbr}-{msg.metadata.sequence.stream}"


def found(topology: Topology, state: SectionState, snapshot: str, scraped_at: float) -> Outgoing:
    seen = SectionSnapshot(snapshot_id=snapshot, scraped_at=scraped_at, state=state)
    return Outgoing(topology.snapshot_found_subject, encode(seen), snapshot)


def missing(topology: Topology, term: str, class_nbr: str, snapshot: str, scraped_at: float) -> Outgoing:
    gone = SectionNotFound(snapshot_id=snapshot, scraped_at=scraped_at, term=term, class_nbr=class_nbr)
    return Outgoing(topology.snapshot_missing_subject, encode(gone), snapshot)


def course_observations(
    topology: Topology,
    msg: Msg,
    term: str,
    watched: tuple[str, ...],
    sections: tuple[SectionState, ...],
    reported_missing: frozenset[str],
    scraped_at: float,
) -> list[Outgoing]:
    """A snapshot of every section of the course (watched or not), and a miss for each watched class
    number in `reported_missing`."""
    outgoing = [
        found(topology, state, snapshot_id(state.term, state.class_nbr, msg), scraped_at)
        for state in sections
    ]
    outgoing.extend(
        missing(topology, term, class_nbr, snapshot_id(term, class_nbr, msg), scraped_at)
        for class_nbr in watched
        if class_nbr in reported_missing
    )
    return outgoing
