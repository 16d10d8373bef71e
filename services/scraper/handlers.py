"""The scraper's entrypoint: a batch of check events, each looked up concurrently and settled alone."""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from services.scraper.catalog import CatalogClient, PermanentCatalogError, TransientCatalogError
from services.scraper.observation import observation, snapshot_id
from services.scraper.parser import CatalogFormatError, find_section
from shared.delivery import Settler, describe, message_id
from shared.events import CheckSection
from shared.messaging import publish_all
from shared.metrics import SOURCE_REQUESTS
from shared.streams import Consumer, Topology

log = structlog.get_logger()


class Scraper:
    def __init__(
        self,
        catalog: CatalogClient,
        js: JetStreamContext,
        topology: Topology,
        consumer: Consumer | None = None,
    ) -> None:
        self._catalog = catalog
        self._js = js
        self._topology = topology
        self.settler = Settler(js, topology, consumer or topology.scraper)

    async def handle(self, msgs: list[Msg]) -> None:
        results = await asyncio.gather(*(self.check(msg) for msg in msgs), return_exceptions=True)
        for msg, result in zip(msgs, results, strict=True):
            # A bug in one look-up settles that check alone, after its siblings have settled theirs.
            if isinstance(result, Exception):
                log.error("check crashed", error=describe(result), exc_info=result)
                await self.settler.fail_unsettled(msg, result)
            elif isinstance(result, BaseException):
                raise result

    async def check(self, msg: Msg) -> None:
        check = await self.settler.decode(msg, CheckSection)
        if check is None:
            return
        started = time.monotonic()
        try:
            payload = await self._catalog.search_section(check.term, check.class_nbr)
        except TransientCatalogError as exc:
            await self.settler.fail(msg, exc, transient=True)
            return
        except PermanentCatalogError as exc:
            await self.settler.fail(msg, exc, transient=False)
            return
        try:
            state = find_section(payload, check.term, check.class_nbr)
        except CatalogFormatError as exc:
            SOURCE_REQUESTS.labels("bad_shape").inc()
            await self.settler.fail(msg, exc, transient=False)
            return
        SOURCE_REQUESTS.labels("not_found" if state is None else "ok").inc()
        snapshot = snapshot_id(check, msg)
        outgoing = observation(self._topology, check, state, snapshot, time.time())
        try:
            await publish_all(self._js, [outgoing])
        except (NatsError, TimeoutError) as exc:
            await self.settler.fail(msg, exc, transient=True)
            return
        await self.settler.ack(msg)
        log.info(
            "section checked",
            msg_id=message_id(msg),
            snapshot_id=snapshot,
            term=check.term,
            class_nbr=check.class_nbr,
            found=state is not None,
            open_seats=None if state is None else state.open_seats,
            ms=round((time.monotonic() - started) * 1000),
        )

    async def close(self) -> None:
        await self._catalog.aclose()
