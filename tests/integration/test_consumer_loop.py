from __future__ import annotations

import asyncio
import random

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared.delivery import Settler
from shared.events import DeadLetter
from shared.service import consume
from shared.streams import Topology
from tests.jetstream import quick_redelivery, stream_events


class Recorder:
    def __init__(self, settler: Settler, expected: int) -> None:
        self.settler = settler
        self.seen: set[bytes] = set()
        self.expected = expected
        self.done = asyncio.Event()

    async def handle(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            self.seen.add(msg.data)
            await self.settler.ack(msg)
        if len(self.seen) >= self.expected:
            self.done.set()

    async def close(self) -> None:
        pass


class Crashing:
    def __init__(self, settler: Settler) -> None:
        self.settler = settler

    async def handle(self, msgs: list[Msg]) -> None:
        raise RuntimeError("bug in handler")

    async def close(self) -> None:
        pass


async def test_a_trickle_of_messages_is_handled_without_waiting_for_redelivery(
    js: JetStreamContext, topology: Topology
) -> None:
    consumer = topology.detector
    recorder = Recorder(Settler(js, topology, consumer), expected=60)
    stop = asyncio.Event()
    loop = asyncio.create_task(consume(js, topology, consumer, recorder, stop, batch_size=16))
    rng = random.Random(4)
    for number in range(60):
        await js.publish(topology.snapshot_found_subject, str(number).encode())
        # The shape of the load (arrivals spread around fetch boundaries), not a wait for a result.
        await asyncio.sleep(rng.uniform(0, 0.06))
    # Well inside the 30 s ack wait: a message stranded client-side would only come back after it.
    await asyncio.wait_for(recorder.done.wait(), 15)
    stop.set()
    await asyncio.wait_for(loop, 5)
    info = await js.consumer_info(consumer.stream, consumer.durable)
    assert len(recorder.seen) == 60
    assert (info.num_redelivered, info.num_ack_pending, info.num_pending) == (0, 0, 0)


async def test_a_crashing_handler_retries_and_then_dead_letters(
    js: JetStreamContext, topology: Topology
) -> None:
    consumer = await quick_redelivery(js, topology, topology.detector)
    dead = await js.subscribe(topology.dead_subject("detector"))
    stop = asyncio.Event()
    loop = asyncio.create_task(
        consume(js, topology, consumer, Crashing(Settler(js, topology, consumer)), stop, batch_size=4)
    )
    await js.publish(topology.snapshot_found_subject, b"anything")
    letter = await dead.next_msg(timeout=15)
    stop.set()
    await asyncio.wait_for(loop, 5)
    [(_, stored)] = await stream_events(js, topology.dead_stream, DeadLetter)
    assert letter.data
    assert stored.deliveries == consumer.max_deliver
    assert "bug in handler" in stored.error
