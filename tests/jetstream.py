"""JetStream helpers for tests: fetch from a service's durable consumer, and lose an ack on purpose."""

from __future__ import annotations

import dataclasses

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared.events import E, decode
from shared.streams import Consumer, Topology, declare


async def quick_redelivery(js: JetStreamContext, topology: Topology, consumer: Consumer) -> Consumer:
    """The same durable with a 1 s ack wait and short retry delays, so redeliveries come fast."""
    quick = dataclasses.replace(consumer, ack_wait=1.0, retry_delays=(0.2, 0.2))
    await declare(js, topology, consumers=(quick,))
    return quick


async def fetch(js: JetStreamContext, consumer: Consumer, count: int = 1, wait: float = 10.0) -> list[Msg]:
    sub = await js.pull_subscribe_bind(consumer.durable, consumer.stream)
    try:
        msgs: list[Msg] = []
        while len(msgs) < count:
            msgs += await sub.fetch(count - len(msgs), timeout=wait)
        return msgs
    finally:
        await sub.unsubscribe()


def lose_ack(msg: Msg) -> Msg:
    """As if the worker died right after its effects and before its ack reached the server."""

    async def lost() -> None:
        pass

    msg.ack = lost  # type: ignore[method-assign]
    return msg


async def stream_events(
    js: JetStreamContext, stream: str, kind: type[E], subject: str | None = None
) -> list[tuple[str, E]]:
    """Every message stored in `stream` (on `subject`, if given), decoded, in order."""
    info = await js.stream_info(stream)
    events: list[tuple[str, E]] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        raw = await js.get_msg(stream, seq)
        assert raw.data is not None
        assert raw.subject is not None
        if subject is not None and raw.subject != subject:
            continue
        events.append((raw.subject, decode(raw.data, kind)))
    return events
