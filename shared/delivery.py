"""How a consumer settles each JetStream message: ack, retry later, or dead-letter.

Every consumer settles each message explicitly. A plain NAK is redelivered at once and a consumer's
`backoff` does not apply to NAKs, so a transient failure is NAKed with a delay that grows with the
delivery count; a permanent failure, or a transient one on the last allowed delivery, is copied to the
dead-letter stream with its error and then terminated, so that no message bounces forever or vanishes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared.events import DeadLetter, E, UnknownSchemaVersion, decode, encode
from shared.metrics import MESSAGES_DEAD_LETTERED, MESSAGES_HANDLED, MESSAGES_RETRIED
from shared.streams import Consumer, Topology

log = structlog.get_logger()


@dataclass(frozen=True)
class Retry:
    delay: float


@dataclass(frozen=True)
class GiveUp:
    reason: str


def decide(num_delivered: int, consumer: Consumer, *, transient: bool) -> Retry | GiveUp:
    """What to do with a message whose handling failed on delivery number `num_delivered` (1-based)."""
    if not transient:
        return GiveUp("permanent error")
    if 0 < consumer.max_deliver <= num_delivered:
        return GiveUp(f"failed on all {consumer.max_deliver} deliveries")
    return Retry(consumer.retry_delay(num_delivered))


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnknownSchemaVersion)

# One delivery of one message: (stream, stream sequence, delivery number).
Delivery = tuple[str, int, int]


def message_id(msg: Msg) -> str | None:
    """The publisher's `Nats-Msg-Id`: the name one check, snapshot or change carries through every log."""
    return (msg.headers or {}).get("Nats-Msg-Id")


def delivery_of(msg: Msg) -> Delivery:
    metadata = msg.metadata
    return (metadata.stream, metadata.sequence.stream, metadata.num_delivered or 1)


class Settler:
    """Settles messages of one durable consumer, remembering which deliveries it settled."""

    def __init__(self, js: JetStreamContext, topology: Topology, consumer: Consumer) -> None:
        self._js = js
        self._topology = topology
        self._consumer = consumer
        self._settled: set[Delivery] = set()
        # Exported at 0 from the start, so that an alert on increase() sees the first one.
        for counter in (MESSAGES_HANDLED, MESSAGES_RETRIED, MESSAGES_DEAD_LETTERED):
            counter.labels(consumer.durable)

    def settled(self, msg: Msg) -> bool:
        return delivery_of(msg) in self._settled

    def forget(self, msgs: list[Msg]) -> None:
        """Drop what is remembered of these deliveries once their batch is over."""
        self._settled.difference_update(delivery_of(msg) for msg in msgs)

    async def ack(self, msg: Msg) -> None:
        """Acknowledge `msg`: its effects are done."""
        await msg.ack()
        self._settled.add(delivery_of(msg))
        MESSAGES_HANDLED.labels(self._consumer.durable).inc()

    async def fail(
        self, msg: Msg, error: BaseException, *, transient: bool, at_least: float | None = None
    ) -> None:
        """Retry `msg` later (after its consumer's delay for this delivery, or `at_least` if longer), or
        dead-letter it when that is decided."""
        delivered = msg.metadata.num_delivered or 1
        decision = decide(delivered, self._consumer, transient=transient)
        if isinstance(decision, Retry) and at_least is not None and at_least > decision.delay:
            decision = Retry(at_least)
        if isinstance(decision, Retry):
            log.warning(
                "message failed, will retry",
                consumer=self._consumer.durable,
                subject=msg.subject,
                msg_id=message_id(msg),
                delivery=delivered,
                retry_in=decision.delay,
                error=describe(error),
            )
            await msg.nak(delay=decision.delay)
            self._settled.add(delivery_of(msg))
            MESSAGES_RETRIED.labels(self._consumer.durable).inc()
            return
        await self.dead_letter(msg, f"{decision.reason}: {describe(error)}")

    async def defer(self, msg: Msg, delay: float, reason: str) -> None:
        """Hand `msg` back for later without it having failed: nothing was attempted (e.g. the source's
        breaker is open). Not counted as a retry; JetStream still counts the delivery."""
        await msg.nak(delay=delay)
        self._settled.add(delivery_of(msg))
        log.info(
            "message deferred",
            consumer=self._consumer.durable,
            subject=msg.subject,
            msg_id=message_id(msg),
            delivery=msg.metadata.num_delivered or 1,
            retry_in=round(delay, 3),
            reason=reason,
        )

    def last_delivery(self, msg: Msg) -> bool:
        """Whether JetStream will not deliver `msg` again after this delivery."""
        return 0 < self._consumer.max_deliver <= (msg.metadata.num_delivered or 1)

    async def fail_unsettled(self, msg: Msg, error: BaseException) -> None:
        """After a bug in a handler: retry `msg` like a transient failure unless the handler settled it
        already, so it reaches the dead-letter stream after max_deliver instead of bouncing forever."""
        if not self.settled(msg):
            await self.fail(msg, error, transient=True)

    async def decode(self, msg: Msg, kind: type[E]) -> E | None:
        """The event in `msg`, or None after dead-lettering a message no retry could make readable."""
        try:
            return decode(msg.data, kind)
        except DECODE_ERRORS as exc:
            await self.dead_letter(msg, f"undecodable {kind.__name__}: {describe(exc)}")
            return None

    async def dead_letter(self, msg: Msg, error: str) -> None:
        delivered = msg.metadata.num_delivered or 1
        letter = DeadLetter(
            subject=msg.subject,
            consumer=self._consumer.durable,
            deliveries=delivered,
            error=error,
            failed_at=time.time(),
            data=msg.data.decode("utf-8", errors="replace"),
        )
        # The stream sequence names the original message, so a redelivered failure is stored once.
        msg_id = f"dead:{msg.metadata.stream}:{msg.metadata.sequence.stream}"
        await self._js.publish(
            self._topology.dead_subject(self._consumer.durable.removeprefix(f"{self._topology.namespace}-")),
            encode(letter),
            headers={"Nats-Msg-Id": msg_id},
        )
        await msg.term()
        self._settled.add(delivery_of(msg))
        MESSAGES_DEAD_LETTERED.labels(self._consumer.durable).inc()
        log.error(
            "message dead-lettered",
            consumer=self._consumer.durable,
            subject=msg.subject,
            msg_id=message_id(msg),
            deliveries=delivered,
            error=error,
        )
