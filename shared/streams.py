"""The one definition of every subject, stream and durable consumer.

Streams and consumers are declared by one owner, `python -m shared.setup` (run by `make run` and by the
deployment's setup job), never by the services: they bind to what exists. Changing a consumer's config
here is a migration: `declare()` updates existing consumers to match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import structlog
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

log = structlog.get_logger()


@dataclass(frozen=True, kw_only=True)
class Consumer:
    stream: str
    durable: str
    filter_subject: str
    ack_wait: float
    max_deliver: int
    # Delay before redelivery attempt n+1 after attempt n failed (index n-1; the last value repeats).
    retry_delays: tuple[float, ...]
    max_ack_pending: int = 1000

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
        )

    def retry_delay(self, num_delivered: int) -> float:
        return self.retry_delays[min(num_delivered, len(self.retry_delays)) - 1]


@dataclass(frozen=True, kw_only=True)
class Stream:
    name: str
    subjects: tuple[str, ...]
    retention: RetentionPolicy
    max_age: float
    duplicate_window: float
    replicas: int = 1

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=self.retention,
            storage=StorageType.FILE,
            max_age=self.max_age,
            duplicate_window=self.duplicate_window,
            num_replicas=self.replicas,
        )


@dataclass(frozen=True)
class Topology:
    """Names under one namespace (`pmc` in production; tests use their own)."""

    namespace: str = "pmc"
    check_interval_seconds: int = 300
    stream_replicas: int = 1
    streams: tuple[Stream, ...] = field(init=False)

    def __post_init__(self) -> None:
        hour = 3600.0
        # Two scheduler replicas publishing the same window must collide inside the dedup window, and
        # JetStream refuses a dedup window longer than the stream's max age.
        check_dedup = float(max(120, self.check_interval_seconds + 60))
        cycle_age = max(hour, 2.0 * check_dedup)
        object.__setattr__(
            self,
            "streams",
            (
                Stream(
                    name=self.checks_stream,
                    subjects=(self.check_subject, self.check_course_subject),
                    retention=RetentionPolicy.WORK_QUEUE,
                    max_age=cycle_age,
                    duplicate_window=check_dedup,
                    replicas=self.stream_replicas,
                ),
                Stream(
                    name=self.snapshots_stream,
                    subjects=(f"{self.namespace}.snapshot.>",),
                    retention=RetentionPolicy.WORK_QUEUE,
                    max_age=cycle_age,
                    duplicate_window=check_dedup,
                    replicas=self.stream_replicas,
                ),
                Stream(
                    name=self.changes_stream,
                    subjects=(f"{self.namespace}.change.>",),
                    retention=RetentionPolicy.LIMITS,
                    max_age=7 * 24 * hour,
                    duplicate_window=30 * 60.0,
                    replicas=self.stream_replicas,
                ),
                Stream(
                    name=self.account_stream,
                    subjects=(f"{self.namespace}.account.>",),
                    retention=RetentionPolicy.LIMITS,
                    # Account emails are worth sending for a day at most (a reset link lives an hour).
                    max_age=24 * hour,
                    duplicate_window=10 * 60.0,
                    replicas=self.stream_replicas,
                ),
                Stream(
                    name=self.provider_stream,
                    subjects=(f"{self.namespace}.provider.>",),
                    retention=RetentionPolicy.LIMITS,
                    max_age=7 * 24 * hour,
                    # Longer than the webhook signature's 5-minute tolerance: a replayed webhook that still
                    # passes the signature check is a duplicate here (its Nats-Msg-Id is its svix id).
                    duplicate_window=10 * 60.0,
                    replicas=self.stream_replicas,
                ),
                Stream(
                    name=self.dead_stream,
                    subjects=(f"{self.namespace}.dead.>",),
                    retention=RetentionPolicy.LIMITS,
                    max_age=14 * 24 * hour,
                    duplicate_window=120.0,
                    replicas=self.stream_replicas,
                ),
            ),
        )

    # Streams
    @property
    def checks_stream(self) -> str:
        return f"{self.namespace.upper()}_CHECKS"

    @property
    def snapshots_stream(self) -> str:
        return f"{self.namespace.upper()}_SNAPSHOTS"

    @property
    def changes_stream(self) -> str:
        return f"{self.namespace.upper()}_CHANGES"

    @property
    def account_stream(self) -> str:
        return f"{self.namespace.upper()}_ACCOUNT"

    @property
    def provider_stream(self) -> str:
        return f"{self.namespace.upper()}_PROVIDER"

    @property
    def dead_stream(self) -> str:
        return f"{self.namespace.upper()}_DEAD"

    # Subjects
    @property
    def check_subject(self) -> str:
        return f"{self.namespace}.check.section"

    @property
    def check_course_subject(self) -> str:
        return f"{self.namespace}.check.course"

    @property
    def check_wildcard(self) -> str:
        return f"{self.namespace}.check.>"

    @property
    def snapshot_found_subject(self) -> str:
        return f"{self.namespace}.snapshot.found"

    @property
    def snapshot_missing_subject(self) -> str:
        return f"{self.namespace}.snapshot.missing"

    def change_subject(self, kind: str) -> str:
        return f"{self.namespace}.change.{kind}"

    def account_subject(self, kind: str) -> str:
        return f"{self.namespace}.account.{kind}"

    def provider_subject(self, event_type: str) -> str:
        # Resend's types are dotted (`email.bounced`); one token per subject level keeps wildcards simple.
        return f"{self.namespace}.provider.{event_type.replace('.', '_')}"

    def dead_subject(self, consumer: str) -> str:
        return f"{self.namespace}.dead.{consumer}"

    def live_section_subject(self, term: str, class_nbr: str) -> str:
        return f"{self.namespace}.live.section.{term}.{class_nbr}"

    def live_user_subject(self, user_id: int) -> str:
        return f"{self.namespace}.live.user.{user_id}"

    @property
    def live_wildcard(self) -> str:
        return f"{self.namespace}.live.>"

    # Durable consumers (one per service; replicas share it)
    @property
    def scraper(self) -> Consumer:
        return Consumer(
            stream=self.checks_stream,
            durable=f"{self.namespace}-scraper",
            filter_subject=self.check_wildcard,
            # Above the catalog client's 15 s timeout, and short: a message lost client-side in a
            # fetch that timed out (asyncio.wait_for on Python 3.11) waits this long for redelivery.
            ack_wait=30.0,
            max_deliver=5,
            retry_delays=(2.0, 10.0, 30.0, 60.0),
            max_ack_pending=2000,
        )

    @property
    def detector(self) -> Consumer:
        return Consumer(
            stream=self.snapshots_stream,
            durable=f"{self.namespace}-detector",
            filter_subject=f"{self.namespace}.snapshot.>",
            ack_wait=30.0,
            max_deliver=8,
            retry_delays=(1.0, 5.0, 15.0, 30.0),
        )

    def notifier_consumer(self, ack_wait: float = 30.0) -> Consumer:
        return Consumer(
            stream=self.changes_stream,
            durable=f"{self.namespace}-notifier",
            filter_subject=f"{self.namespace}.change.>",
            ack_wait=ack_wait,
            # Unlimited: a provider outage of any length loses no alert (retries back off to 5 minutes);
            # only what can never be sent (undecodable) is dead-lettered, at once.
            max_deliver=-1,
            retry_delays=(5.0, 15.0, 60.0, 120.0, 300.0),
        )

    @property
    def notifier(self) -> Consumer:
        return self.notifier_consumer()

    @property
    def notifier_account(self) -> Consumer:
        return Consumer(
            stream=self.account_stream,
            durable=f"{self.namespace}-notifier-account",
            filter_subject=f"{self.namespace}.account.>",
            ack_wait=30.0,
            # Unlimited: an outage of the provider must not lose a verification email; only what can
            # never be sent (undecodable) is dead-lettered, at once.
            max_deliver=-1,
            retry_delays=(5.0, 15.0, 60.0, 120.0, 300.0),
        )

    @property
    def notifier_provider(self) -> Consumer:
        return Consumer(
            stream=self.provider_stream,
            durable=f"{self.namespace}-notifier-provider",
            filter_subject=f"{self.namespace}.provider.>",
            ack_wait=30.0,
            max_deliver=-1,
            retry_delays=(1.0, 5.0, 15.0, 60.0, 300.0),
        )

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return (self.scraper, self.detector, self.notifier, self.notifier_account, self.notifier_provider)

    def check_msg_id(self, term: str, class_nbr: str, window: int) -> str:
        return f"check:{term}:{class_nbr}:{window}"

    def check_course_msg_id(self, term: str, subject: str, catalog_nbr: str, window: int) -> str:
        return f"check:{term}:{subject}:{catalog_nbr}:{window}"

    def window_of(self, timestamp: float) -> int:
        return math.floor(timestamp / self.check_interval_seconds)


async def declare(
    js: JetStreamContext, topology: Topology, consumers: tuple[Consumer, ...] | None = None
) -> None:
    """Create or update every stream and durable consumer of `topology` to match its definition."""
    for stream in topology.streams:
        try:
            await js.stream_info(stream.name)
        except NotFoundError:
            await js.add_stream(stream.config())
        else:
            await js.update_stream(stream.config())
    for consumer in consumers if consumers is not None else topology.consumers:
        await _replace_if_refiltered(js, consumer)
        # add_consumer on an existing durable updates the mutable fields (ack_wait, max_deliver, ...).
        await js.add_consumer(consumer.stream, consumer.config())


async def _replace_if_refiltered(js: JetStreamContext, consumer: Consumer) -> None:
    """A durable whose filter subject changed between releases is recreated: servers before 2.10 cannot
    edit a filter. On a work-queue stream the messages stay, and the new durable delivers them."""
    try:
        info = await js.consumer_info(consumer.stream, consumer.durable)
    except NotFoundError:
        return
    if info.config.filter_subject in (None, consumer.filter_subject):
        return
    await js.delete_consumer(consumer.stream, consumer.durable)
    log.info(
        "consumer recreated for its new filter",
        consumer=consumer.durable,
        old_filter=info.config.filter_subject,
        new_filter=consumer.filter_subject,
    )
