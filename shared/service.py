"""Wiring shared by the consumer services (scraper, detector, notifier): one pull loop on the service's
durable consumer (bound, never declared: `shared.setup` owns declarations), a batch per fetch handed to
the service's handler, which settles every message itself through its `Settler`; and the health server
(`/healthz`, `/readyz`, `/metrics` on HEALTH_PORT) with the consumer's lag polled into the metrics.

The loop is nats-py's `fetch` with a fixed wait, on purpose: FastStream (0.7.8, the newest on PyPI when
re-tested) drops the messages it has fetched when its subscriber stops, so every stop or scale-down
strands a few for the whole ack wait; this loop finishes the batch in hand first. The README's
"FastStream" section has the numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import asyncpg
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.delivery import Settler
from shared.failures import explain
from shared.health import HealthServer, Readiness, consumer_check, nats_check
from shared.logging import configure_logging
from shared.messaging import connect_nats
from shared.metrics import CONSUMER_ACK_PENDING, CONSUMER_PENDING, CONSUMER_REDELIVERED, HANDLER_SECONDS
from shared.settings import Settings, SettingsError, load_settings
from shared.streams import Consumer, Topology

log = structlog.get_logger()

# How long one fetch waits for messages: also how long a stop request may wait for the loop to notice.
FETCH_WAIT_SECONDS = 1.0
# How often the consumer's lag is read into the metrics.
LAG_POLL_SECONDS = 5.0


class BatchHandler(Protocol):
    # The handler settles through this; the loop asks it what a crashed handler left unsettled.
    settler: Settler

    async def handle(self, msgs: list[Msg]) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Gated(Protocol):
    """A handler that decides how many messages to fetch now (0: none; it waited a moment itself). What it
    does not fetch waits in the stream without spending a delivery (the scraper while the source's breaker
    is open)."""

    async def admit(self, wanted: int, stop: asyncio.Event) -> int: ...


@dataclass(frozen=True)
class ServiceContext:
    """What a handler factory gets: it registers its own readiness checks (e.g. its database)."""

    settings: Settings
    topology: Topology
    consumer: Consumer
    nc: Client
    readiness: Readiness
    # Set on SIGTERM/SIGINT: a handler waiting for something that may take long (the scraper for the
    # request budget) hands its messages back instead of holding up the stop.
    stop: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


HandlerFactory = Callable[[ServiceContext], Awaitable[BatchHandler]]


class MissingConsumer(RuntimeError):
    pass


async def live_consumer(nc: Client, consumer: Consumer) -> Consumer:
    """The consumer as the server has it. Fails at start-up, not silently, when it is missing (it would be
    auto-created with default settings); and the handler settles by the server's ack wait and delivery
    limit, which an operator may have changed, not by this build's defaults."""
    try:
        info = await nc.jetstream().consumer_info(consumer.stream, consumer.durable)
    except NotFoundError:
        raise MissingConsumer(
            f"JetStream consumer {consumer.durable!r} on stream {consumer.stream!r} does not exist: "
            "run `python -m shared.setup` (make run does) first"
        ) from None
    return dataclasses.replace(
        consumer,
        ack_wait=info.config.ack_wait or consumer.ack_wait,
        max_deliver=info.config.max_deliver or consumer.max_deliver,
    )


async def consume(
    js: JetStreamContext,
    topology: Topology,
    consumer: Consumer,
    handler: BatchHandler,
    stop: asyncio.Event,
    *,
    batch_size: int,
) -> None:
    """Fetch and handle batches until `stop` is set; the batch in hand is finished first."""
    subscription = await js.pull_subscribe_bind(consumer.durable, consumer.stream)
    settler = handler.settler
    seconds = HANDLER_SECONDS.labels(consumer.durable)
    try:
        while not stop.is_set():
            wanted = await handler.admit(batch_size, stop) if isinstance(handler, Gated) else batch_size
            if wanted <= 0:
                continue
            try:
                msgs = await subscription.fetch(wanted, timeout=FETCH_WAIT_SECONDS)
            except TimeoutError:
                # nats-py raises its own subclass or the builtin, depending on where the wait ran out.
                continue
            except ConnectionClosedError:
                break
            if not msgs:
                continue
            started = time.perf_counter()
            try:
                await handler.handle(msgs)
            except Exception as exc:
                log.exception("handler crashed", consumer=consumer.durable)
                for msg in msgs:
                    await settler.fail_unsettled(msg, exc)
            finally:
                seconds.observe(time.perf_counter() - started)
                settler.forget(msgs)
    finally:
        await subscription.unsubscribe()


async def read_lag(js: JetStreamContext, consumer: Consumer) -> None:
    """Copy the server's view of the consumer (backlog, in flight, redelivered) into the metrics."""
    try:
        info = await js.consumer_info(consumer.stream, consumer.durable, timeout=2)
    except (NatsError, TimeoutError) as exc:
        log.debug("consumer lag unavailable", consumer=consumer.durable, error=str(exc))
        return
    CONSUMER_PENDING.labels(consumer.durable).set(info.num_pending or 0)
    CONSUMER_ACK_PENDING.labels(consumer.durable).set(info.num_ack_pending or 0)
    CONSUMER_REDELIVERED.labels(consumer.durable).set(info.num_redelivered or 0)


async def poll_lag(js: JetStreamContext, consumer: Consumer, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await read_lag(js, consumer)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=LAG_POLL_SECONDS)


@dataclass(frozen=True)
class Worker:
    """One durable consumer of a service and the handler of its batches."""

    consumer_of: Callable[[Topology], Consumer]
    make_handler: HandlerFactory
    batch_size: int


async def serve(settings: Settings, service: str, workers: Sequence[Worker]) -> None:
    """Every worker's pull loop, side by side, until SIGINT/SIGTERM; each finishes its batch in hand."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    topology = Topology(settings.namespace, settings.check_interval_seconds)
    nc = await connect_nats(settings.nats_url, f"pmc-{service}")
    handlers: list[BatchHandler] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        consumers = [await live_consumer(nc, worker.consumer_of(topology)) for worker in workers]
        readiness = Readiness()
        readiness.add("nats", nats_check(nc))
        for consumer in consumers:
            name = "consumer" if len(consumers) == 1 else f"consumer {consumer.durable}"
            readiness.add(name, consumer_check(nc, consumer))
        for worker, consumer in zip(workers, consumers, strict=True):
            handlers.append(
                await worker.make_handler(ServiceContext(settings, topology, consumer, nc, readiness, stop))
            )
        health = HealthServer(readiness, settings.health_port)
        health.start()
        js = nc.jetstream()
        for worker, consumer, handler in zip(workers, consumers, handlers, strict=True):
            tasks.append(asyncio.create_task(poll_lag(js, consumer, stop)))
            tasks.append(
                asyncio.create_task(
                    consume(js, topology, consumer, handler, stop, batch_size=worker.batch_size)
                )
            )
            log.info(
                "consumer started",
                consumer=consumer.durable,
                stream=consumer.stream,
                ack_wait=consumer.ack_wait,
                max_deliver=consumer.max_deliver,
            )
        log.info("service started", health_port=health.port)
        try:
            # A loop that ends on its own (its connection closed) stops the others too.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.set()
            await asyncio.gather(*tasks)
            await health.stop()
    finally:
        for handler in handlers:
            await handler.close()
        await nc.drain()


def run(service: str, *workers: Worker) -> None:
    """Entry point of a consumer service: settings, logging, then the pull loops until SIGINT/SIGTERM."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"{service}: {exc}")
    log = configure_logging(settings, service)
    try:
        asyncio.run(serve(settings, service, workers))
    except (MissingConsumer, SettingsError) as exc:
        log.error("cannot start", error=str(exc))
        sys.exit(1)
    except (OSError, asyncpg.PostgresError, NatsError) as exc:
        log.error("service failed", error=explain(exc, database_url=settings.database_url))
        sys.exit(1)
    log.info("service stopped")
