"""`pmc status`: one screen on the whole system, and whether anything needs an operator."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field

import asyncpg
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from services.scheduler.cycles import last_cycle
from shared.freshness import freshness
from shared.settings import Settings
from shared.streams import Topology

# A watched section whose state is older than this many check intervals is stale.
STALE_INTERVALS = 3


@dataclass
class StreamRow:
    name: str
    messages: int | None
    bytes: int | None


@dataclass
class ConsumerRow:
    durable: str
    stream: str
    pending: int | None
    ack_pending: int | None
    redelivered: int | None


@dataclass
class Report:
    streams: list[StreamRow] = field(default_factory=list)
    consumers: list[ConsumerRow] = field(default_factory=list)
    dead_letters: int | None = None
    checked: int | None = None
    unchecked: int | None = None
    oldest_seconds: float | None = None
    median_seconds: float | None = None
    last_cycle: dict[str, object] | None = None
    services: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems


async def _jetstream(nc: Client, topology: Topology, report: Report) -> None:
    js = nc.jetstream()
    for stream in topology.streams:
        try:
            info = await js.stream_info(stream.name)
        except NotFoundError:
            report.streams.append(StreamRow(stream.name, None, None))
            report.problems.append(f"stream {stream.name} is missing: run `python -m shared.setup`")
            continue
        report.streams.append(StreamRow(stream.name, info.state.messages, info.state.bytes))
        if stream.name == topology.dead_stream:
            report.dead_letters = info.state.messages
            if info.state.messages:
                report.problems.append(f"{info.state.messages} dead letters: see `pmc dlq list`")
    for consumer in topology.consumers:
        try:
            cinfo = await js.consumer_info(consumer.stream, consumer.durable)
        except NotFoundError:
            report.consumers.append(ConsumerRow(consumer.durable, consumer.stream, None, None, None))
            report.problems.append(f"consumer {consumer.durable} is missing: run `python -m shared.setup`")
            continue
        report.consumers.append(
            ConsumerRow(
                consumer.durable,
                consumer.stream,
                cinfo.num_pending,
                cinfo.num_ack_pending,
                cinfo.num_redelivered,
            )
        )


async def _database(pool: asyncpg.Pool, settings: Settings, report: Report) -> None:
    state = await freshness(pool)
    report.checked, report.unchecked = state.checked, state.unchecked
    report.oldest_seconds, report.median_seconds = state.oldest, state.median
    limit = STALE_INTERVALS * settings.check_interval_seconds
    if state.oldest is not None and state.oldest > limit:
        report.problems.append(
            f"stale: the oldest watched section was checked {state.oldest:.0f} s ago "
            f"(more than {STALE_INTERVALS} check intervals, {limit} s)"
        )
    cycle = await last_cycle(pool)
    if cycle is None:
        return
    age = (dt.datetime.now(dt.UTC) - cycle.finished_at).total_seconds()
    report.last_cycle = {
        "window": cycle.window,
        "sections": cycle.sections,
        "published": cycle.published,
        "duplicates": cycle.duplicates,
        "seconds_ago": round(age, 1),
    }
    if age > STALE_INTERVALS * settings.check_interval_seconds:
        report.problems.append(f"the scheduler's last cycle was {age:.0f} s ago: is it running?")


def _probe(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return "ready" if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        try:
            checks = json.loads(exc.read()).get("checks", {})
            reasons = [f"{name}: {why}" for name, why in checks.items() if why not in ("ok", True)]
        except (ValueError, AttributeError):
            reasons = []
        return f"not ready ({'; '.join(reasons) or f'HTTP {exc.code}'})"
    except (urllib.error.URLError, OSError) as exc:
        return f"unreachable ({getattr(exc, 'reason', exc)})"


def parse_health_urls(text: str) -> dict[str, str]:
    """`HEALTH_URLS`: `name=url` pairs separated by commas (make run writes them to .data/env)."""
    urls: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise ValueError(f"HEALTH_URLS: expected name=url, got {item!r}")
        urls[name.strip()] = url.strip()
    return urls


async def collect(settings: Settings, nc: Client, pool: asyncpg.Pool) -> Report:
    topology = Topology(settings.namespace, settings.check_interval_seconds)
    report = Report()
    await _jetstream(nc, topology, report)
    await _database(pool, settings, report)
    urls = parse_health_urls(settings.health_urls)
    results = await asyncio.gather(*(asyncio.to_thread(_probe, url) for url in urls.values()))
    for name, result in zip(urls, results, strict=True):
        report.services[name] = result
        if result != "ready":
            report.problems.append(f"{name} is {result}")
    return report


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _n(value: int | None) -> str:
    return "missing" if value is None else f"{value:,}"


def render(report: Report) -> str:
    lines = ["STREAM            MESSAGES        BYTES"]
    lines += [f"{row.name:<16} {_n(row.messages):>9} {_n(row.bytes):>12}" for row in report.streams]
    lines += ["", "CONSUMER          PENDING  ACK-PENDING  REDELIVERED"]
    lines += [
        f"{row.durable:<16} {_n(row.pending):>8} {_n(row.ack_pending):>12} {_n(row.redelivered):>12}"
        for row in report.consumers
    ]
    lines += [
        "",
        f"dead letters      {_n(report.dead_letters)}",
        f"watched sections  {_n(report.checked)} checked, {_n(report.unchecked)} not yet",
        f"freshness         oldest {_age(report.oldest_seconds)}, median {_age(report.median_seconds)}",
    ]
    if report.last_cycle is None:
        lines.append("last cycle        none recorded yet")
    else:
        cycle = report.last_cycle
        lines.append(
            f"last cycle        {_age(float(str(cycle['seconds_ago'])))} ago: {cycle['sections']} sections, "
            f"{cycle['published']} checks published, {cycle['duplicates']} duplicates"
        )
    for name, result in report.services.items():
        lines.append(f"{name:<17} {result}")
    lines.append("")
    if report.healthy:
        lines.append("healthy")
    else:
        lines.append("UNHEALTHY:")
        lines += [f"  - {problem}" for problem in report.problems]
    return "\n".join(lines)


def as_json(report: Report) -> str:
    return json.dumps({**asdict(report), "healthy": report.healthy}, indent=2)
