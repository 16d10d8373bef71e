"""The detector's entrypoint: a batch of snapshots → section state in Postgres → change events.

Misses are counted in the same transaction, and a section missing long enough is retired as gone
(`section_gone`, services/detector/retirement.py), unless too many went missing at once.
"""

from __future__ import annotations

import time

import asyncpg
import structlog
from asyncpg.pool import PoolConnectionProxy
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from services.detector.changes import detect, latest_per_section
from services.detector.retirement import Miss, due, gone_change, is_storm, redelivered
from services.detector.store import apply_snapshots, count_recent, last_seen, record_missing, retire
from shared.delivery import Settler
from shared.events import SectionChange, SectionLive, SectionNotFound, SectionSnapshot, encode
from shared.messaging import Outgoing, publish_all
from shared.metrics import CHANGES_DETECTED, NOT_FOUND_STORMS
from shared.streams import Consumer, Topology

log = structlog.get_logger()


class Detector:
    def __init__(
        self, pool: asyncpg.Pool, nc: Client, topology: Topology, consumer: Consumer | None = None
    ) -> None:
        self._pool = pool
        self._nc = nc
        self._js = nc.jetstream()
        self._topology = topology
        self.settler = Settler(self._js, topology, consumer or topology.detector)

    async def handle(self, msgs: list[Msg]) -> None:
        found: list[SectionSnapshot] = []
        missing: list[SectionNotFound] = []
        readable: list[Msg] = []
        for msg in msgs:
            if msg.subject == self._topology.snapshot_missing_subject:
                if (gone := await self.settler.decode(msg, SectionNotFound)) is None:
                    continue
                missing.append(gone)
            else:
                if (seen := await self.settler.decode(msg, SectionSnapshot)) is None:
                    continue
                found.append(seen)
            readable.append(msg)
        try:
            await self._process(found, missing)
        except (asyncpg.PostgresError, OSError, NatsError, TimeoutError) as exc:
            for msg in readable:
                await self.settler.fail(msg, exc, transient=True)
            return
        for msg in readable:
            await self.settler.ack(msg)

    async def _process(self, found: list[SectionSnapshot], missing: list[SectionNotFound]) -> None:
        now = time.time()
        # The changes are published while the new state is uncommitted (its rows locked against other
        # replicas): when publishing fails, the state rolls back and the retry finds the same transition,
        # even if a newer snapshot is stored first. The price: a crash between the publish and the commit
        # can announce one opening twice, under two names. A loss would be worse than a repeat.
        async with self._pool.acquire() as conn, conn.transaction():
            applied = await apply_snapshots(conn, latest_per_section(found))
            misses = await record_missing(conn, missing)
            changes = [
                change
                for item in applied
                for change in detect(
                    item.previous,
                    item.snapshot.state,
                    item.snapshot.snapshot_id,
                    now,
                    scraped_at=item.snapshot.scraped_at,
                )
            ]
            changes += await self._retire(conn, misses, now)
            await publish_all(
                self._js,
                [
                    Outgoing(
                        self._topology.change_subject(change.kind),
                        encode(change),
                        f"{change.kind}:{change.state.term}:{change.state.class_nbr}:{change.change_key}",
                    )
                    for change in changes
                ],
            )
        # Live updates are best-effort (core NATS): a page that misses one reloads the list.
        for item in applied:
            state = item.snapshot.state
            live = SectionLive(
                checked_at=item.snapshot.scraped_at,
                state=state,
                term=state.term,
                class_nbr=state.class_nbr,
                found=True,
            )
            await self._nc.publish(
                self._topology.live_section_subject(state.term, state.class_nbr), encode(live)
            )
        for miss in misses:
            live = SectionLive(
                checked_at=now, state=None, term=miss.term, class_nbr=miss.class_nbr, found=False
            )
            await self._nc.publish(
                self._topology.live_section_subject(miss.term, miss.class_nbr), encode(live)
            )
        for change in changes:
            CHANGES_DETECTED.labels(change.kind).inc()
            log.info(
                "change detected",
                change_key=change.change_key,
                kind=change.kind,
                term=change.state.term,
                class_nbr=change.state.class_nbr,
                open_seats=change.state.open_seats,
                old_open_seats=change.old_open_seats,
                class_status=change.state.class_status,
                wait_tot=change.state.wait_tot,
                wait_cap=change.state.wait_cap,
            )
        log.info(
            "snapshots applied",
            found=len(found),
            missing=len(missing),
            stored=len(applied),
            changes=len(changes),
        )

    async def _retire(self, conn: PoolConnectionProxy, misses: list[Miss], now: float) -> list[SectionChange]:
        """The `section_gone` changes of these misses: the sections retired now, and those whose retiring
        miss is redelivered (announced again under the same name, which JetStream deduplicates)."""
        retired: list[Miss] = []
        if candidates := [miss for miss in misses if due(miss)]:
            # The interval before the newest of these misses, not before now: a detector catching up on a
            # backlog measures the storm the misses were part of.
            interval = self._topology.check_interval_seconds
            recent = await count_recent(conn, max(miss.scraped_at for miss in candidates) - interval)
            if is_storm(recent.missing, recent.checked):
                NOT_FOUND_STORMS.inc()
                log.warning(
                    "not found storm, retirements held back",
                    missing=recent.missing,
                    checked=recent.checked,
                    held_back=len(candidates),
                    interval_seconds=interval,
                )
            else:
                retired = await retire(conn, candidates)
        for miss in retired:
            log.info(
                "section retired",
                term=miss.term,
                class_nbr=miss.class_nbr,
                missing_count=miss.missing_count,
                snapshot_id=miss.snapshot_id,
            )
        announced = retired + [miss for miss in misses if redelivered(miss)]
        seen = await last_seen(conn, [(miss.term, miss.class_nbr) for miss in announced])
        return [gone_change(miss, seen.get((miss.term, miss.class_nbr)), now) for miss in announced]

    async def close(self) -> None:
        await self._pool.close()
