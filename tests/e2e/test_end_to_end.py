"""A student's whole journey through every service running as its own process."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import asyncpg
import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse
from prometheus_client.parser import text_string_to_metric_families

from devtools import resend_fake
from shared.messaging import connect_nats
from tests.e2e.system import TERM, World, add_section, change_section, eventually

pytestmark = pytest.mark.e2e


# The verification link in an email's text: the gateway's own URL, since SITE_URL is the gateway.
VERIFY_LINK = re.compile(r"https?://\S+/verify\?token=\S+")


async def student(world: World, email: str) -> httpx.AsyncClient:
    """A student who registered and followed the verification link from the email the provider got: the
    client holds the session the link started."""
    client = httpx.AsyncClient(base_url=world.system.gateway_url)
    response = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": "correct horse 42"}
    )
    assert response.status_code == 202, response.text
    assert (await client.get("/api/v1/auth/me")).status_code == 401, "no session before verifying"
    [verification] = await eventually(
        lambda: account_emails_to(world, email, "Verify your email"), f"the verification email to {email}"
    )
    link = VERIFY_LINK.search(verification["text"])
    assert link is not None, verification["text"]
    followed = await client.get(link.group(0), follow_redirects=False)
    assert followed.status_code == 303, followed.text
    assert (await client.get("/api/v1/auth/me")).json()["email"] == email
    return client


async def watch(client: httpx.AsyncClient, class_nbr: str) -> int:
    response = await client.post("/api/v1/watches", json={"term": TERM, "class_nbr": class_nbr})
    assert response.status_code == 201, response.text
    watch_id: int = response.json()["id"]
    return watch_id


async def emails_to(world: World, address: str, subject_prefix: str = "") -> list[dict[str, Any]]:
    """The alerts the provider accepted for `address` (each has one-click unsubscribe headers)."""
    return [
        email
        for email in await resend_fake.fetch_emails(world.resend_url)
        if email["to"] == [address]
        and email["subject"].startswith(subject_prefix)
        and "List-Unsubscribe" in email["headers"]
    ]


async def account_emails_to(world: World, address: str, subject_prefix: str) -> list[dict[str, Any]]:
    """Verification links, reset links and notices: transactional, so without unsubscribe headers."""
    return [
        email
        for email in await resend_fake.fetch_emails(world.resend_url)
        if email["to"] == [address]
        and email["subject"].startswith(subject_prefix)
        and "List-Unsubscribe" not in email["headers"]
    ]


async def settled(world: World, class_nbr: str) -> None:
    """Wait until checks made from now on have gone through the whole pipeline: the detector has stored
    a snapshot scraped two seconds from now, then the notifier has acknowledged every change so far."""
    after = time.time() + 2

    async def stored() -> bool:
        conn = await asyncpg.connect(world.database_url)
        try:
            scraped = await conn.fetchval(
                "SELECT extract(epoch FROM scraped_at) FROM section WHERE term = $1 AND class_nbr = $2",
                TERM,
                class_nbr,
            )
        finally:
            await conn.close()
        return scraped is not None and float(scraped) > after

    await eventually(stored, f"a snapshot of {class_nbr} scraped after {after:.0f}")
    nc = await connect_nats(world.system.env["NATS_URL"], "e2e-probe")
    js = nc.jetstream()
    notifier = world.topology.notifier
    try:
        last = (await js.stream_info(notifier.stream)).state.last_seq

        async def notified() -> bool:
            info = await js.consumer_info(notifier.stream, notifier.durable)
            return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= last

        await eventually(notified, f"the notifier to handle change {last}")
    finally:
        await nc.close()


async def seen(client: httpx.AsyncClient, class_nbr: str) -> dict[str, Any] | None:
    for item in (await client.get("/api/v1/watches")).json():
        if item["class_nbr"] == class_nbr and item["section"] is not None:
            section: dict[str, Any] = item["section"]
            return section
    return None


class LiveStream:
    """A student's open `GET /api/v1/events`, collected in the background."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.events: asyncio.Queue[ServerSentEvent] = asyncio.Queue()
        self._client = client
        self._opened = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async with aconnect_sse(self._client, "GET", "/api/v1/events", timeout=None) as source:
            assert source.response.status_code == 200
            self._opened.set()
            async for event in source.aiter_sse():
                await self.events.put(event)

    async def opened(self) -> None:
        await asyncio.wait_for(self._opened.wait(), 10)

    def forget(self) -> None:
        """Drop what arrived so far, so the next wait sees only updates after the change about to be made."""
        while not self.events.empty():
            self.events.get_nowait()

    async def section_update(self, class_nbr: str, open_seats: int) -> dict[str, Any]:
        async def matching() -> dict[str, Any]:
            while True:
                event = await self.events.get()
                if event.event != "section":
                    continue
                data: dict[str, Any] = json.loads(event.data)
                section = data.get("section") or {}
                if data["class_nbr"] == class_nbr and section.get("open_seats") == open_seats:
                    return data

        return await asyncio.wait_for(matching(), 30)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def test_a_student_verified_by_the_emailed_link_gets_the_alert(world: World) -> None:
    """Register → verification email → follow the link → logged in → watch → seat opens → alert email."""
    await add_section(world, "70004")
    eve = await student(world, "eve@asu.test")
    try:
        await watch(eve, "70004")
        await eventually(lambda: seen(eve, "70004"), "the section's first check")
        await change_section(world, "70004", enrl_tot=99)
        [alert] = await eventually(lambda: emails_to(world, "eve@asu.test"), "the seat email")
        assert alert["subject"] == "Seat available: CSE 310 (70004)"
        assert re.search(r"Checked at \d{1,2}:\d\d [AP]M Arizona time on ", alert["text"])

        # Registering the address again: the same answer, no session, and a notice instead of a link.
        async with httpx.AsyncClient(base_url=world.system.gateway_url) as stranger:
            again = await stranger.post(
                "/api/v1/auth/register", json={"email": "eve@asu.test", "password": "not eve's password"}
            )
            assert again.status_code == 202
            assert "pmc_session" not in stranger.cookies
        [notice] = await eventually(
            lambda: account_emails_to(world, "eve@asu.test", "Someone tried to register"), "the notice"
        )
        assert "token=" not in notice["text"]
        assert len(await account_emails_to(world, "eve@asu.test", "Verify your email")) == 1
    finally:
        await eve.aclose()


async def test_a_student_is_told_once_per_opening_and_once_per_instructor_change(world: World) -> None:
    await add_section(world, "70001")
    ada = await student(world, "ada@asu.test")
    bob = await student(world, "bob@asu.test")
    live = LiveStream(ada)
    try:
        await live.opened()
        watch_id = await watch(ada, "70001")

        # Another student can neither see nor delete it.
        assert (await bob.get("/api/v1/watches")).json() == []
        assert (await bob.delete(f"/api/v1/watches/{watch_id}")).status_code == 404

        # First sight: known, full, and nobody is emailed.
        await live.section_update("70001", open_seats=0)

        # A seat opens: exactly one email, and the live page sees it.
        live.forget()
        await change_section(world, "70001", enrl_tot=98)
        await live.section_update("70001", open_seats=2)
        [email] = await eventually(lambda: emails_to(world, "ada@asu.test"), "the seat email")
        assert email["subject"] == "Seat available: CSE 310 (70001)"
        assert email["text"]
        assert email["html"]
        assert "catalog.apps.asu.edu" in email["text"]
        assert email["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert email["headers"]["List-Unsubscribe"].startswith(
            f"<{world.system.gateway_url}/unsubscribe?token="
        )

        # Still open for several more checks: nothing more.
        await settled(world, "70001")
        assert len(await emails_to(world, "ada@asu.test")) == 1

        # Fills, then reopens: exactly one more.
        live.forget()
        await change_section(world, "70001", enrl_tot=100)
        await live.section_update("70001", open_seats=0)
        await change_section(world, "70001", enrl_tot=99)
        await eventually(lambda: _count(world, "ada@asu.test", "Seat available", 2), "the second seat email")

        # Staff becomes a named instructor: one instructor email.
        await change_section(world, "70001", instructors=["Grace Hopper"])
        [assigned] = await eventually(
            lambda: emails_to(world, "ada@asu.test", "Instructor assigned"), "the instructor email"
        )
        assert "Grace Hopper" in assigned["text"]
        await settled(world, "70001")
        assert len(await emails_to(world, "ada@asu.test")) == 3
        assert await emails_to(world, "bob@asu.test") == []
    finally:
        await live.close()
        await ada.aclose()
        await bob.aclose()


async def test_a_notifier_killed_mid_send_loses_and_doubles_nothing(world: World) -> None:
    await add_section(world, "70002")
    carol = await student(world, "carol@asu.test")
    try:
        await watch(carol, "70002")
        await eventually(lambda: seen(carol, "70002"), "the section's first check")
        calls = await resend_fake.fetch_send_calls(world.resend_url)
        # The provider is slow, so the notifier is still inside the send, holding its unacked
        # message and its claim, when it is killed.
        await resend_fake.set_latency(world.resend_url, 2500)
        await change_section(world, "70002", enrl_tot=97)
        await eventually(lambda: _calls_above(world, calls), "the notifier to call the provider")
        assert await _unacked(world) >= 1, "the notifier must be holding the change when it dies"
        world.system.kill("notifier")
        world.system.start("notifier")
        await eventually(lambda: _sent(world, "carol@asu.test"), "the redelivered change to be settled")
        await settled(world, "70002")
        [email] = await emails_to(world, "carol@asu.test")
        assert email["subject"] == "Seat available: CSE 310 (70002)"
    finally:
        await carol.aclose()


async def test_a_provider_outage_longer_than_any_retry_budget_loses_and_doubles_nothing(world: World) -> None:
    """Twelve failed provider calls in a row (changes used to be dead-lettered after ten deliveries): the
    opening is retried until the provider is back, then emailed once; nothing reaches the dead letters."""
    # A section of its own: one another test left open would make the change below no opening at all.
    await add_section(world, "70006")
    dora = await student(world, "dora@asu.test")
    try:
        await watch(dora, "70006")
        await eventually(lambda: seen(dora, "70006"), "the section's first check")
        calls = await resend_fake.fetch_send_calls(world.resend_url)
        outage = 12
        await resend_fake.set_faults(world.resend_url, 503, count=outage)
        await change_section(world, "70006", enrl_tot=97)
        await eventually(lambda: _calls_above(world, calls + outage), "the outage to be lived through", 120)
        await eventually(
            lambda: emails_to(world, "dora@asu.test", "Seat available"), "the seat email after the outage"
        )
        await settled(world, "70006")
        assert len(await emails_to(world, "dora@asu.test", "Seat available")) == 1
        assert await _dead_letters(world) == 0
    finally:
        await resend_fake.set_faults(world.resend_url, 503, count=0)
        await dora.aclose()


async def _dead_letters(world: World) -> int:
    nc = await connect_nats(world.system.env["NATS_URL"], "e2e-probe")
    try:
        info = await nc.jetstream().stream_info(world.topology.dead_stream)
    finally:
        await nc.close()
    return int(info.state.messages)


async def _count(world: World, address: str, prefix: str, expected: int) -> bool:
    return len(await emails_to(world, address, prefix)) >= expected


async def _calls_above(world: World, calls: int) -> bool:
    return await resend_fake.fetch_send_calls(world.resend_url) > calls


async def _unacked(world: World) -> int:
    nc = await connect_nats(world.system.env["NATS_URL"], "e2e-probe")
    try:
        notifier = world.topology.notifier
        info = await nc.jetstream().consumer_info(notifier.stream, notifier.durable)
    finally:
        await nc.close()
    return int(info.num_ack_pending or 0)


async def _sent(world: World, address: str) -> bool:
    conn = await asyncpg.connect(world.database_url)
    try:
        sent = await conn.fetchval(
            "SELECT count(*) FROM notification n JOIN watch w ON w.id = n.watch_id"
            " JOIN app_user u ON u.id = w.user_id WHERE u.email = $1 AND n.sent_at IS NOT NULL",
            address,
        )
    finally:
        await conn.close()
    return bool(sent)


async def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` with these labels that the service at `url` exports now."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


async def test_one_opening_is_counted_by_every_service_and_followed_through_their_logs(world: World) -> None:
    health = world.system.health_urls
    await add_section(world, "70003")
    dana = await student(world, "dana@asu.test")
    live = LiveStream(dana)
    try:
        await live.opened()
        assert await metric(world.system.gateway_url, "pmc_sse_connections") >= 1
        await watch(dana, "70003")
        await eventually(lambda: seen(dana, "70003"), "the section's first check")
        await change_section(world, "70003", enrl_tot=99)
        await eventually(lambda: emails_to(world, "dana@asu.test"), "the seat email")
    finally:
        await live.close()
        await dana.aclose()

    assert await metric(health["scraper"], "pmc_source_requests_total", outcome="ok") >= 2
    assert await metric(health["detector"], "pmc_changes_detected_total", kind="seat_opened") >= 1
    assert await metric(health["notifier"], "pmc_emails_sent_total", kind="seat_opened") >= 1
    assert await metric(health["notifier"], "pmc_open_to_email_seconds_count") >= 1
    assert await metric(
        health["notifier"], "pmc_messages_handled_total", consumer=world.topology.notifier.durable
    )
    assert await metric(health["scheduler"], "pmc_watched_sections", state="checked") >= 1
    assert await metric(world.system.gateway_url, "litestar_requests_total", path="/api/v1/watches") >= 1

    conn = await asyncpg.connect(world.database_url)
    try:
        change_key = await conn.fetchval(
            "SELECT n.change_key FROM notification n JOIN watch w ON w.id = n.watch_id"
            " WHERE w.class_nbr = '70003' AND n.kind = 'seat_opened'"
        )
    finally:
        await conn.close()
    # One grep for the opening's name finds its line in each service that handled it.
    for service, event in (
        ("scraper", "section checked"),
        ("detector", "change detected"),
        ("notifier", "notifications sent"),
    ):
        lines = [
            json.loads(line)
            for line in (world.system.logs / f"{service}.log").read_text().splitlines()
            if change_key in line
        ]
        assert any(line["event"] == event for line in lines), f"{change_key} not in the {service} log"


async def test_when_the_api_shuts_us_out_the_alert_comes_through_the_class_list_page(world: World) -> None:
    """The `Bearer null` door closes: the scraper reads the class-list page in real Chromium, and the
    student is told about the opening as before. A course of its own, so other tests' sections stay on the
    API's side of the switch as long as they can."""
    await add_section(world, "70005", subject="MAT", catalog_nbr="265")
    fay = await student(world, "fay@asu.test")
    try:
        await watch(fay, "70005")
        await eventually(lambda: seen(fay, "70005"), "the section's first check")
        (await world.catalog.post("/_sim/door", json={"anonymous": False})).raise_for_status()
        async with httpx.AsyncClient(base_url=world.catalog.base_url) as anonymous:
            refused = await anonymous.get(
                "/catalog-microservices/api/v1/search/classes",
                params={"term": TERM, "classNbr": "70005"},
                headers={"Authorization": "Bearer null"},
            )
        assert refused.status_code == 401

        async def browsing() -> bool:
            return await metric(world.system.health_urls["scraper"], "pmc_source_mode", mode="browser") == 1

        await eventually(browsing, "the scraper to switch to the class-list page")
        await change_section(world, "70005", enrl_tot=99)
        [alert] = await eventually(lambda: emails_to(world, "fay@asu.test"), "the seat email")
        assert alert["subject"] == "Seat available: MAT 265 (70005)"
        assert await metric(world.system.health_urls["scraper"], "pmc_browser_pages_total", outcome="ok") >= 1
    finally:
        (await world.catalog.post("/_sim/door", json={"anonymous": True})).raise_for_status()
        await fay.aclose()
