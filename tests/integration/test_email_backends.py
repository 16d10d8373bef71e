"""One behavioural suite for every email backend: Resend (the real SDK against the local fake of Resend's API)
and the Postgres outbox. Then what only Resend can do: fail."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

import asyncpg
import pytest

from devtools import resend_fake
from services.notifier.backends import (
    EmailBackend,
    OutboxBackend,
    PermanentSendError,
    ResendBackend,
    TransientSendError,
)
from services.notifier.email import Email, Recipient, render
from shared.events import SectionChange, SectionState
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


@pytest.fixture
async def resend_harness(fake_url: str) -> AsyncIterator[Harness]:
    async def delivered() -> list[Delivered]:
        return [
            Delivered(email["to"][0], email["subject"], email["text"], email["html"], email["headers"])
            for email in await resend_fake.fetch_emails(fake_url)
        ]

    backend = ResendBackend(API_KEY, fake_url)
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

    ids = await harness.backend.send_batch(emails, "batch-1")

    assert len(ids) == 3
    assert len(set(ids)) == 3
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


async def test_resend_rate_limit_is_transient_and_the_retry_delivers_once(
    resend_harness: Harness, fake_url: str
) -> None:
    emails = _emails(2)
    await resend_fake.set_faults(fake_url, 429, count=1)

    with pytest.raises(TransientSendError, match="429"):
        await resend_harness.backend.send_batch(emails, "batch-1")
    assert await resend_harness.delivered() == []

    await resend_harness.backend.send_batch(emails, "batch-1")
    assert len(await resend_harness.delivered()) == 2


async def test_resend_server_error_is_transient(resend_harness: Harness, fake_url: str) -> None:
    await resend_fake.set_faults(fake_url, 500, count=1)

    with pytest.raises(TransientSendError, match="500"):
        await resend_harness.backend.send_batch(_emails(1), "batch-1")


async def test_resend_unreachable_is_transient() -> None:
    async with resend_fake.serve() as url:
        backend = ResendBackend(API_KEY, url)
    # The fake has stopped: nothing listens at `url` any more.

    with pytest.raises(TransientSendError):
        await backend.send_batch(_emails(1), "batch-1")


async def test_resend_bad_api_key_is_retried_not_dropped(fake_url: str) -> None:
    backend = ResendBackend("not-a-resend-key", fake_url)

    with pytest.raises(TransientSendError, match="403"):
        await backend.send_batch(_emails(1), "batch-1")
    assert await resend_fake.fetch_emails(fake_url) == []


async def test_resend_key_reused_for_other_emails_is_permanent(resend_harness: Harness) -> None:
    await resend_harness.backend.send_batch(_emails(1), "batch-1")

    with pytest.raises(PermanentSendError, match="409"):
        await resend_harness.backend.send_batch(_emails(2), "batch-1")
    assert len(await resend_harness.delivered()) == 1


async def test_resend_oversized_batch_makes_no_call(resend_harness: Harness, fake_url: str) -> None:
    with pytest.raises(ValueError, match="100"):
        await resend_harness.backend.send_batch(_emails(101), "batch-big")
    assert await resend_fake.fetch_send_calls(fake_url) == 0


async def test_fake_rejects_an_email_without_a_body(fake_url: str) -> None:
    """The fake validates like Resend, so a backend bug shows up in tests, not in production."""
    backend = ResendBackend(API_KEY, fake_url)
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
    with pytest.raises(PermanentSendError, match="422"):
        await backend.send_batch([bodiless], "batch-1")
