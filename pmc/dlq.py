"""`pmc dlq`: read the dead-letter stream, and replay letters to the subject they failed on.

A replay publishes the original data again with a fresh `Nats-Msg-Id` (the original id may still be in
the stream's duplicate window) and then removes the letter. Replaying the same change twice cannot send an
email twice: the notifier's claims hold, whatever the message id.
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from collections.abc import AsyncIterator
from typing import NamedTuple

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.events import DeadLetter, decode
from shared.streams import Topology


class Letter(NamedTuple):
    seq: int
    letter: DeadLetter


class DlqError(Exception):
    """A request about a letter that cannot be served; the message says why."""


async def letters(js: JetStreamContext, topology: Topology) -> AsyncIterator[Letter]:
    """Every letter in the dead-letter stream, oldest first."""
    info = await js.stream_info(topology.dead_stream)
    if info.state.messages == 0:
        return
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            yield await letter(js, topology, seq)
        except DlqError:
            continue


async def letter(js: JetStreamContext, topology: Topology, seq: int) -> Letter:
    try:
        raw = await js.get_msg(topology.dead_stream, seq)
    except NotFoundError:
        raise DlqError(f"no dead letter with sequence {seq} in {topology.dead_stream}") from None
    try:
        return Letter(seq, decode(raw.data or b"", DeadLetter))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise DlqError(f"dead letter {seq} is not readable: {exc}") from None


def when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def summary(item: Letter, width: int = 60) -> str:
    error = item.letter.error.replace("\n", " ")
    if len(error) > width:
        error = error[: width - 1] + "…"
    return (
        f"{item.seq:>8}  {when(item.letter.failed_at)}  {item.letter.consumer:<14} "
        f"{item.letter.deliveries:>3}  {item.letter.subject:<24} {error}"
    )


LIST_HEADER = f"{'SEQ':>8}  {'FAILED (UTC)':<19}  {'CONSUMER':<14} {'DLV':>3}  {'SUBJECT':<24} ERROR"


def detail(item: Letter) -> str:
    try:
        data: object = msgspec.json.decode(item.letter.data.encode())
        shown = msgspec.json.format(msgspec.json.encode(data), indent=2).decode()
    except msgspec.DecodeError:
        shown = item.letter.data
    return "\n".join(
        [
            f"sequence    {item.seq}",
            f"failed at   {when(item.letter.failed_at)} UTC",
            f"consumer    {item.letter.consumer}",
            f"subject     {item.letter.subject}",
            f"deliveries  {item.letter.deliveries}",
            f"error       {item.letter.error}",
            "data:",
            shown,
        ]
    )


async def replay(js: JetStreamContext, topology: Topology, item: Letter, *, keep: bool) -> int:
    """Publish the letter's data to its original subject; returns the new stream sequence."""
    if not item.letter.subject.startswith(f"{topology.namespace}."):
        raise DlqError(
            f"dead letter {item.seq} names subject {item.letter.subject!r}, outside namespace "
            f"{topology.namespace!r}; not replayed"
        )
    ack = await js.publish(
        item.letter.subject,
        item.letter.data.encode(),
        headers={"Nats-Msg-Id": f"replay:{item.seq}:{uuid.uuid4().hex}"},
    )
    if not keep:
        await js.delete_msg(topology.dead_stream, item.seq)
    return ack.seq


def progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\rreplayed {done}/{total}", end="", file=sys.stderr, flush=True)
    elif done == total or done % 100 == 0:
        print(f"replayed {done}/{total}", file=sys.stderr, flush=True)
