"""Wiring shared by the consumer services (scraper, detector, notifier).

FastStream runs the pull loop on the service's durable consumer (bound, never declared: `shared.setup`
owns declarations) and handles signals; each batch goes to the service's handler, which settles every
message itself. Publishing uses a plain nats-py connection because bulk `publish_async` and `Nats-Msg-Id`
headers are nats-py features.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol

import structlog
from fast_depends.msgspec import MsgSpecSerializer
from faststream import Context, FastStream
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.delivery import Settler
from shared.logging import configure_logging
from shared.messaging import connect_nats
from shared.settings import Settings, SettingsError, load_settings
from shared.streams import Consumer, Topology


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


def message_js(state: dict[str, BatchHandler | Client]) -> JetStreamContext:
    nc = state["nc"]
    assert isinstance(nc, Client)
    return nc.jetstream()


def build_app(
    settings: Settings,
    service: str,
    consumer_of: Callable[[Topology], Consumer],
    make_handler: HandlerFactory,
    *,
    batch_size: int,
) -> FastStream:
    log = structlog.get_logger()
    topology = Topology(settings.namespace, settings.check_interval_seconds)
    consumer = consumer_of(topology)
    broker = NatsBroker(settings.nats_url, serializer=MsgSpecSerializer(), logger=None)
    state: dict[str, BatchHandler | Client] = {}

    @broker.subscriber(
        consumer.filter_subject,
        stream=JStream(consumer.stream, declare=False),
        durable=consumer.durable,
        pull_sub=PullSub(batch_size=batch_size, timeout=1.0, batch=True),
        ack_policy=AckPolicy.MANUAL,
        include_in_schema=False,
    )
    async def on_batch(message: Annotated[NatsBatchMessage, Context("message")]) -> None:
        handler = state["handler"]
        assert not isinstance(handler, Client)
        msgs = list(message.raw_message)
        try:
            await handler.handle(msgs)
        except Exception as exc:
            # A bug, not a known failure: retry with delay like a transient error, so the message
            # reaches the dead-letter stream after max_deliver instead of bouncing forever.
            log.exception("handler crashed", consumer=consumer.durable)
            settler = Settler(message_js(state), topology, consumer)
            for msg in msgs:
                if not msg._ackd:
                    await settler.fail(msg, exc, transient=True)

    app = FastStream(broker, logger=None)

    @app.on_startup
    async def start() -> None:
        nc = await connect_nats(settings.nats_url, f"pmc-{service}")
        live = await live_consumer(nc, consumer)
        state["nc"] = nc
        state["handler"] = await make_handler(settings, topology, live, nc)
        log.info(
            "service started",
            consumer=live.durable,
            stream=live.stream,
            ack_wait=live.ack_wait,
            max_deliver=live.max_deliver,
        )

    @app.after_shutdown
    async def stop() -> None:
        handler = state.get("handler")
        if handler is not None and not isinstance(handler, Client):
            await handler.close()
        nc = state.get("nc")
        if isinstance(nc, Client):
            await nc.drain()
        log.info("service stopped")

    return app


def run(
    service: str,
    consumer_of: Callable[[Topology], Consumer],
    make_handler: HandlerFactory,
    *,
    batch_size: int,
) -> None:
    """Entry point of a consumer service: settings, logging, then the FastStream app until a signal."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"{service}: {exc}")
    log = configure_logging(settings, service)
    app = build_app(settings, service, consumer_of, make_handler, batch_size=batch_size)
    try:
        asyncio.run(app.run())
    except MissingConsumer as exc:
        log.error("cannot start", error=str(exc))
        sys.exit(1)
    except OSError as exc:
        log.error("cannot start", error=str(exc) or type(exc).__name__)
        sys.exit(1)
