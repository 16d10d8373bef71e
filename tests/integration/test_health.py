"""The workers' health server and metrics, on real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from services.scheduler.app import Scheduler
from shared.delivery import Settler
from shared.health import (
    HealthServer,
    NotReady,
    Readiness,
    consumer_check,
    nats_check,
    postgres_check,
    stream_check,
)
from shared.service import consume, read_lag
from shared.streams import Topology
from tests.jetstream import quick_redelivery


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def health(
    nc: Client, js: JetStreamContext, topology: Topology, db: asyncpg.Pool
) -> AsyncIterator[str]:
    readiness = Readiness()
    readiness.add("nats", nats_check(nc))
    readiness.add("postgres", postgres_check(db))
    readiness.add("consumer", consumer_check(nc, topology.detector))
    readiness.add("stream", stream_check(nc, topology.checks_stream))
    server = HealthServer(readiness, 0, host="127.0.0.1")
    server.start()
    yield f"http://127.0.0.1:{server.port}"
    await server.stop()


async def test_ready_while_every_dependency_answers_and_503_naming_a_missing_consumer(
    health: str, js: JetStreamContext, topology: Topology
) -> None:
    async with httpx.AsyncClient(base_url=health) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"nats": "ok", "postgres": "ok", "consumer": "ok", "stream": "ok"}

        await js.delete_consumer(topology.detector.stream, topology.detector.durable)
        gone = await client.get("/readyz")
        assert gone.status_code == 503
        body = gone.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["nats"] == "ok"
        assert topology.detector.durable in body["checks"]["consumer"]
        assert "shared.setup" in body["checks"]["consumer"]
        # Liveness does not depend on the dependencies: restarting would not bring the consumer back.
        assert (await client.get("/healthz")).status_code == 200


async def test_a_missing_stream_is_named(nc: Client, topology: Topology) -> None:
    with pytest.raises(NotReady, match=f"{topology.namespace.upper()}_NOPE is missing"):
        await stream_check(nc, f"{topology.namespace.upper()}_NOPE")()


async def test_metrics_are_served_in_the_prometheus_text_format(health: str) -> None:
    async with httpx.AsyncClient(base_url=health) as client:
        metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("pmc_messages_handled_total", "pmc_open_to_email_seconds_bucket", "pmc_freshness_seconds"):
        assert name in metrics.text


class Flaky:
    """Acks even messages, retries odd ones once, dead-letters what says so."""

    def __init__(self, settler: Settler, expected: int) -> None:
        self.settler = settler
        self.expected = expected
        self.acked = 0
        self.done = asyncio.Event()

    async def handle(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            if msg.data == b"dead":
                await self.settler.dead_letter(msg, "permanent")
            elif int(msg.data) % 2 and msg.metadata.num_delivered == 1:
                await self.settler.fail(msg, RuntimeError("transient"), transient=True)
            else:
                await self.settler.ack(msg)
                self.acked += 1
        if self.acked >= self.expected:
            self.done.set()

    async def close(self) -> None:
        pass


async def test_the_consume_loop_counts_handled_retried_and_dead_lettered_messages_and_reads_the_lag(
    js: JetStreamContext, topology: Topology
) -> None:
    consumer = await quick_redelivery(js, topology, topology.detector)
    durable = consumer.durable
    handler = Flaky(Settler(js, topology, consumer), expected=4)
    for payload in (b"1", b"2", b"3", b"4", b"dead"):
        await js.publish(topology.snapshot_found_subject, payload)
    await read_lag(js, consumer)
    assert sample("pmc_consumer_pending", consumer=durable) == 5

    stop = asyncio.Event()
    loop = asyncio.create_task(consume(js, topology, consumer, handler, stop, batch_size=10))
    await asyncio.wait_for(handler.done.wait(), 15)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert sample("pmc_messages_handled_total", consumer=durable) == 4
    assert sample("pmc_messages_retried_total", consumer=durable) == 2
    assert sample("pmc_messages_dead_lettered_total", consumer=durable) == 1
    assert sample("pmc_handler_seconds_count", consumer=durable) >= 2


async def test_the_scheduler_reports_freshness_and_its_cycle(
    db: asyncpg.Pool, js: JetStreamContext, topology: Topology
) -> None:
    user = await db.fetchval(
        "INSERT INTO app_user (email, password_hash) VALUES ('f@x.edu', 'x') RETURNING id"
    )
    for class_nbr in ("10001", "10002", "10003", "10004"):
        await db.execute(
            "INSERT INTO watch (user_id, term, class_nbr) VALUES ($1, '2271', $2)", user, class_nbr
        )
    await db.execute(
        "INSERT INTO section (term, class_nbr, subject, catalog_nbr, title, enrl_cap, enrl_tot, open_seats,"
        " snapshot_id, scraped_at) VALUES ('2271', '10001', 'CSE', '310', 'T', 1, 1, 0, 's1',"
        " now() - interval '600 seconds'), ('2271', '10002', 'CSE', '310', 'T', 1, 1, 0, 's2',"
        " now() - interval '60 seconds'), ('2271', '10003', 'CSE', '310', 'T', 1, 1, 0, 's3',"
        " now() - interval '300 seconds')"
    )
    scheduler = Scheduler(db, js, topology)
    await scheduler.measure_freshness()
    assert sample("pmc_watched_sections", state="checked") == 3
    assert sample("pmc_watched_sections", state="unchecked") == 1
    assert 600 <= sample("pmc_freshness_seconds", stat="oldest") < 660
    assert 300 <= sample("pmc_freshness_seconds", stat="median") < 360
    before = sample("pmc_checks_published_total")
    result = await scheduler.run_cycle()
    # One for the course of the three seen, one for the section never seen.
    assert sample("pmc_checks_published_total") - before == result.published == 2
    assert sample("pmc_scheduler_last_cycle_timestamp_seconds") > 0
