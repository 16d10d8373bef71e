"""Wiring shared by the consumer services (scraper, detector, notifier): one pull loop on the service's
durable consumer (bound, never declared: `shared.setup` owns declarations), a batch per fetch handed to
the service's handler, which settles every message itself.

The loop is nats-py's `fetch` with a fixed wait, on purpose: FastStream 0.7.8's batch pull
(`PullSub(batch=True)`) left about 5% of messages unprocessed until their ack wait expired under a trickle
of traffic (reproduced: 190 of 200 handled), which would delay an opening by the whole ack wait.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.delivery import Settler
from shared.logging import configure_logging
from shared.messaging import connect_nats
from shared.settings import Settings, SettingsError, load_settings
from shared.streams import Consumer, Topology

log = structlog.get_logger()

# How long one fetch waits for messages: also how long a stop request may wait for the loop to notice.
FETCH_WAIT_SECONDS = 1.0


class BatchHandler(Protocol):
    async def handle(self, msgs: list[Msg]) -> None: ...

    async def close(self) -> None: ...


HandlerFactory = Callable[[Settings, Topology, Consumer, Client], Awaitable[BatchHandler]]


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
    settler = Settler(js, topology, consumer)
    try:
        while not stop.is_set():
            try:
                msgs = await subscription.fetch(batch_size, timeout=FETCH_WAIT_SECONDS)
            except TimeoutError:
                # nats-py raises its own subclass or the builtin, depending on where the wait ran out.
                continue
            except ConnectionClosedError:
                break
            try:
                await handler.handle(msgs)
            except Exception as exc:
                log.exception("handler crashed", consumer=consumer.durable)
                for msg in msgs:
                    await settler.fail_unsettled(msg, exc)
    finally:
        await subscription.unsubscribe()


async def serve(
    settings: Settings,
    consumer_of: Callable[[Topology], Consumer],
    make_handler: HandlerFactory,
    service: str,
    *,
    batch_size: int,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    topology = Topology(settings.namespace, settings.check_interval_seconds)
    nc = await connect_nats(settings.nats_url, f"pmc-{service}")
    try:
        consumer = await live_consumer(nc, consumer_of(topology))
        handler = await make_handler(settings, topology, consumer, nc)
        log.info(
            "service started",
            consumer=consumer.durable,
            stream=consumer.stream,
            ack_wait=consumer.ack_wait,
            max_deliver=consumer.max_deliver,
        )
        try:
            await consume(nc.jetstream(), topology, consumer, handler, stop, batch_size=batch_size)
        finally:
            await handler.close()
    finally:
        await nc.drain()


def run(
    service: str,
    consumer_of: Callable[[Topology], Consumer],
    make_handler: HandlerFactory,
    *,
    batch_size: int,
) -> None:
    """Entry point of a consumer service: settings, logging, then the pull loop until SIGINT/SIGTERM."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"{service}: {exc}")
    log = configure_logging(settings, service)
    try:
        asyncio.run(serve(settings, consumer_of, make_handler, service, batch_size=batch_size))
    except (MissingConsumer, SettingsError) as exc:
        log.error("cannot start", error=str(exc))
        sys.exit(1)
    except OSError as exc:
        log.error("service failed", error=str(exc) or type(exc).__name__)
        sys.exit(1)
    log.info("service stopped")
