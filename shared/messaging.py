"""NATS connection with the options every service wants."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import NamedTuple

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck

log = structlog.get_logger()


async def connect_nats(url: str, name: str) -> Client:
    async def on_disconnect() -> None:
        if not client.is_closed and not client.is_draining:
            log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    async def on_error(exc: Exception) -> None:
        log.warning("nats error", error=str(exc))

    client: Client = await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
    )
    return client


class Outgoing(NamedTuple):
    subject: str
    payload: bytes
    msg_id: str


async def publish_all(
    js: JetStreamContext, messages: Sequence[Outgoing], *, ack_timeout: float = 10.0
) -> list[PubAck]:
    """Publish to JetStream without waiting for each ack in turn, then wait for all of them.

    Each message carries `Nats-Msg-Id`, so publishing the same batch again (a retry, a second replica)
    stores nothing twice within the stream's duplicate window. Raises if any publish was not acknowledged.
    """
    futures = [
        await js.publish_async(message.subject, message.payload, headers={"Nats-Msg-Id": message.msg_id})
        for message in messages
    ]
    return list(await asyncio.wait_for(asyncio.gather(*futures), ack_timeout))
