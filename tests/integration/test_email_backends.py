"""One behavioural suite for every email backend: Resend (the real SDK against the local fake of Resend's API)
and the Postgres outbox. Then what only Resend can do: fail."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple, cast

import asyncpg
import pytest

from devtools import resend_fake
from services.notifier.backends import (
    RATE_LIMIT_ATTEMPTS,
    EmailBackend,
    OutboxBackend,
    ProviderRefused,
    ProviderUnavailable,
    Refused,
    ResendBackend,
    Sent,
)
from services.notifier.budget import Budget
from services.notifier.email import Email, Recipient, render
from shared.events import SectionChange, SectionState
from shared.settings import Settings
from tests.conftest import TEST_SECRET

pytestmark = pytest.mark.integration

API_KEY = "re_test_0123456789"
SENDER = "PickMyClass <alerts@pickmyclass.test>"


class Delivered(NamedTuple):
    to: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Harness:
    backend: EmailBackend
    delivered: Callable[[], Awaitable[list[Delivered]]]


def _emails(count: int) -> list[Email]:
    state = SectionState(
        term="2267",
        class_nbr="66445",
        subject="CSE",
        catalog_nbr="310",
        title="Data Structures and Algorithms",
        instructors=("Ruben Acuna",),
        enrl_cap=150,
        enrl_tot=149,
        open_seats=1,
    )
    change = SectionChange(
        kind="seat_opened",
        change_key="snap-1",
        detected_at=1_700_000_000.0,
        old_open_seats=0,
        old_instructors=(),
        state=state,
    )
    return [
        render(
            change,
            Recipient(watch_id=100 + n, user_id=n, email=f"student{n}@asu.edu"),
            site_url="http://pickmyclass.test",
            secret_key=TEST_SECRET,
            sender=SENDER,
        )
        for n in range(count)
    ]


@pytest.fixture(scope="session")
async def resend_url() -> AsyncIterator[str]:
    async with resend_fake.serve() as url:
        yield url


@pytest.fixture
async def fake_url(resend_url: str) -> str:
    """The session's fake of Resend, emptied before the test."""
    await resend_fake.reset(resend_url)
    return resend_url


def resend_backend(settings: Settings, url: str, per_second: float = 1000.0) -> ResendBackend:
    """The real backend against the fake, with a request budget of this test's own in the real Redis."""
    return ResendBackend(API_KEY, url, budget=Budget(settings.redis_url, settings.namespace, per_second))


@pytest.fixture
async def resend_harness(fake_url: str, settings: Settings) -> AsyncIterator[Harness]:
    async def delivered() -> list[Delivered]:
        return [
            Delivered(email["to"][0], email["subject"], email["text"], email["html"], email["headers"])
            for email in await resend_fake.fetch_emails(fake_url)
        ]

    backend = resend_backend(settings, fake_url)
    yield Harness(backend, delivered)
    await backend.aclose()


@pytest.fixture
async def outbox_harness(db: asyncpg.Pool) -> AsyncIterator[Harness]:
    async def delivered() -> list[Delivered]:
        rows = await db.fetch(
            "SELECT to_addr, subject, text_body, html_body, headers FROM outbox_email ORDER BY created_at, id"
        )
        return [
            Delivered(
                row["to_addr"], row["subject"], row["text_body"], row["html_body"], json.loads(row["headers"])
            )
            for row in rows
        ]

    backend = OutboxBackend(db)
    yield Harness(backend, delivered)
    await backend.aclose()


@pytest.fixture(params=["resend", "outbox"])
def harness(request: pytest.FixtureRequest) -> Harness:
    found: Harness = request.getfixturevalue(f"{request.param}_harness")
    return found


async def test_a_batch_delivers_each_email_once_with_both_parts(harness: Harness) -> None:
    emails = _emails(3)

    outcomes = await harness.backend.send_batch(emails, "batch-1")

    assert all(isinstance(outcome, Sent) for outcome in outcomes)
    assert len({cast(Sent, outcome).id for outcome in outcomes}) == 3
    delivered = await harness.delivered()
    assert sorted(d.to for d in delivered) == [e.to for e in emails]
    for email in emails:
        (got,) = [d for d in delivered if d.to == email.to]
        assert got.subject == "Seat available: CSE 310 (66445)"
        assert got.text == email.text
        assert got.html == email.html
        assert got.headers["List-Unsubscribe"] == email.headers["List-Unsubscribe"]
        assert got.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_resending_with_the_same_key_delivers_nothing_new(harness: Harness) -> None:
    emails = _emails(2)

    first = await harness.backend.send_batch(emails, "batch-1")
    again = await harness.backend.send_batch(emails, "batch-1")

    assert again == first
    assert len(await harness.delivered()) == 2


async def test_an_empty_batch_sends_nothing(harness: Harness) -> None:
    assert await harness.backend.send_batch([], "batch-empty") == []
    assert await harness.delivered() == []


async def test_more_than_a_hundred_emails_are_refused_before_any_call(harness: Harness) -> None:
    with pytest.raises(ValueError, match="100"):
        await harness.backend.send_batch(_emails(101), "batch-big")
    assert await harness.delivered() == []


async def test_resend_rate_limit_is_waited_out_as_the_headers_say_then_repeated_once(
    resend_harness: Harness, fake_url: str
) -> None:
    emails = _emails(2)
    await resend_fake.set_faults(fake_url, 429, count=1)
    started = time.monotonic()

    assert len(await resend_harness.backend.send_batch(emails, "batch-1")) == 2

    # The fake said `retry-after: 1`.
    assert time.monotonic() - started >= 1.0
    assert len(await resend_harness.delivered()) == 2
    assert await resend_fake.fetch_send_calls(fake_url) == 2


async def test_a_rate_limit_that_does_not_end_is_unavailability_with_the_providers_hint(
    resend_harness: Harness, fake_url: str
) -> None:
    await resend_fake.set_faults(fake_url, 429, count=RATE_LIMIT_ATTEMPTS)

    with pytest.raises(ProviderUnavailable, match="429") as raised:
        await resend_harness.backend.send_batch(_emails(1), "batch-1")
    assert raised.value.retry_after == 1.0
    assert await resend_harness.delivered() == []


async def test_resend_server_error_is_unavailability(resend_harness: Harness, fake_url: str) -> None:
    await resend_fake.set_faults(fake_url, 500, count=1)

    with pytest.raises(ProviderUnavailable, match="500"):
        await resend_harness.backend.send_batch(_emails(1), "batch-1")


async def test_resend_unreachable_is_unavailability(settings: Settings) -> None:
    async with resend_fake.serve() as url:
        backend = resend_backend(settings, url)
    # The fake has stopped: nothing listens at `url` any more.
    try:
        with pytest.raises(ProviderUnavailable):
            await backend.send_batch(_emails(1), "batch-1")
    finally:
        await backend.aclose()


@pytest.mark.parametrize("status", [401, 403, 422])
async def test_a_refusal_of_the_request_blames_our_configuration_not_a_recipient(
    resend_harness: Harness, fake_url: str, status: int
) -> None:
    """A bad key, an unverified domain or an invalid sender on a one-email batch names no recipient."""
    await resend_fake.set_faults(fake_url, status, count=1)

    with pytest.raises(ProviderRefused, match=str(status)):
        await resend_harness.backend.send_batch(_emails(1), "batch-1")
    assert await resend_fake.fetch_emails(fake_url) == []


async def test_a_refused_recipient_is_named_and_the_others_go_out(
    resend_harness: Harness, fake_url: str
) -> None:
    emails = _emails(3)
    await resend_fake.refuse(fake_url, [emails[1].to])

    outcomes = await resend_harness.backend.send_batch(emails, "batch-1")

    assert [type(outcome) for outcome in outcomes] == [Sent, Refused, Sent]
    assert emails[1].to in cast(Refused, outcomes[1]).reason
    assert sorted(d.to for d in await resend_harness.delivered()) == [emails[0].to, emails[2].to]


async def test_the_request_budget_is_shared_and_keeps_under_the_providers_limit(
    settings: Settings, fake_url: str
) -> None:
    """Two replicas (two backends, one Redis budget of 2 requests/s) against a fake that allows 2/s:
    no 429, and the calls are spread as the budget says."""
    await resend_fake.set_rate_limit(fake_url, 2)
    replicas = [resend_backend(settings, fake_url, per_second=2) for _ in range(2)]
    started = time.monotonic()
    try:
        await asyncio.gather(
            *(
                replica.send_batch(_emails(1), f"budget-{index}-{n}")
                for n in range(3)
                for index, replica in enumerate(replicas)
            )
        )
    finally:
        for replica in replicas:
            await replica.aclose()
    assert len(await resend_fake.fetch_emails(fake_url)) == 6
    # 6 requests at 2 per second: the budget lets the first 2 go at once, the last 2 after 2 s.
    assert time.monotonic() - started >= 1.9


async def test_resend_oversized_batch_makes_no_call(resend_harness: Harness, fake_url: str) -> None:
    with pytest.raises(ValueError, match="100"):
        await resend_harness.backend.send_batch(_emails(101), "batch-big")
    assert await resend_fake.fetch_send_calls(fake_url) == 0


async def test_fake_refuses_an_email_without_a_body_by_its_index(
    resend_harness: Harness, fake_url: str
) -> None:
    """The fake validates like Resend, so a backend bug shows up in tests, not in production."""
    email = _emails(1)[0]
    bodiless = Email(
        idempotency_id=email.idempotency_id,
        sender=email.sender,
        to=email.to,
        subject=email.subject,
        text="",
        html="",
        headers={},
    )
    [outcome] = await resend_harness.backend.send_batch([bodiless], "batch-1")
    assert isinstance(outcome, Refused)
    assert "html" in outcome.reason
