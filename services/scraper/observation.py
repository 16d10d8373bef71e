"""What the scraper publishes for one check (pure)."""

from __future__ import annotations

from nats.aio.msg import Msg

from shared.events import CheckSection, SectionNotFound, SectionSnapshot, SectionState, encode
from shared.messaging import Outgoing
from shared.streams import Topology


def snapshot_id(check: CheckSection, msg: Msg) -> str:
    """Named after the check message, so a redelivered check (its ack was lost) publishes a snapshot that
    JetStream recognises as a duplicate, and the detector treats a late twin as the same observation."""
    return f"{check.term}-{check.class_nbr}-{msg.metadata.sequence.stream}"


def observation(
    topology: Topology, check: CheckSection, state: SectionState | None, snapshot: str, scraped_at: float
) -> Outgoing:
    if state is None:
        missing = SectionNotFound(
            snapshot_id=snapshot, scraped_at=scraped_at, term=check.term, class_nbr=check.class_nbr
        )
        return Outgoing(topology.snapshot_missing_subject, encode(missing), snapshot)
    found = SectionSnapshot(snapshot_id=snapshot, scraped_at=scraped_at, state=state)
    return Outgoing(topology.snapshot_found_subject, encode(found), snapshot)
