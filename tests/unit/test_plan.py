from __future__ import annotations

from services.notifier.claims import ClaimKey
from services.notifier.email import Email, Recipient
from services.notifier.plan import chunks, idempotency_key, plan
from services.notifier.recipients import Watcher
from shared.alerts import DEFAULT_ALERTS
from tests.factories import change

ADA = Watcher(Recipient(watch_id=1, user_id=10, email="ada@example.edu"), dict(DEFAULT_ALERTS))
BOB = Watcher(Recipient(watch_id=2, user_id=11, email="bob@example.edu"), dict(DEFAULT_ALERTS))
EVERYTHING = {kind: True for kind in DEFAULT_ALERTS}


def test_each_watcher_gets_one_notice_per_change_even_if_the_batch_repeats_it() -> None:
    opened = change("seat_opened", "k1")
    notices = plan([opened, opened], {("2271", "12345"): [ADA, BOB]}, set())
    assert [n.key for n in notices] == [ClaimKey(1, "seat_opened", "k1"), ClaimKey(2, "seat_opened", "k1")]


def test_a_fill_is_not_news_by_default_and_other_sections_are_not_mixed_in() -> None:
    notices = plan(
        [change("seat_filled", "k2"), change("instructor_changed", "k3", class_nbr="99999")],
        {("2271", "12345"): [ADA], ("2271", "99999"): [BOB]},
        {(1, "k2")},
    )
    assert [n.key for n in notices] == [ClaimKey(2, "instructor_changed", "k3")]


def test_each_watch_gets_the_alerts_it_chose() -> None:
    quiet = Watcher(ADA.recipient, {**DEFAULT_ALERTS, "seat_opened": False})
    eager = Watcher(BOB.recipient, EVERYTHING)
    changes = [change(kind, f"k-{kind}") for kind in ("seat_opened", "waitlist_opened", "section_cancelled")]
    notices = plan(changes, {("2271", "12345"): [quiet, eager]}, set())
    assert [(n.key.watch_id, n.key.kind) for n in notices] == [
        (1, "section_cancelled"),
        (2, "seat_opened"),
        (2, "section_cancelled"),
        (2, "waitlist_opened"),
    ]


def test_closed_again_only_for_a_watch_told_about_the_opening() -> None:
    told, untold = Watcher(ADA.recipient, EVERYTHING), Watcher(BOB.recipient, EVERYTHING)
    notices = plan([change("seat_filled", "fill")], {("2271", "12345"): [told, untold]}, {(1, "fill")})
    assert [n.key for n in notices] == [ClaimKey(1, "seat_filled", "fill")]


def test_batches_hold_at_most_100() -> None:
    assert [len(c) for c in chunks(list(range(250)))] == [100, 100, 50]


def test_idempotency_key_depends_on_the_set_of_emails_not_their_order() -> None:
    def email(ident: str) -> Email:
        return Email(
            idempotency_id=ident, sender="s@x", to="a@b.c", subject="s", text="t", html="h", headers={}
        )

    assert idempotency_key([email("1"), email("2")]) == idempotency_key([email("2"), email("1")])
    assert idempotency_key([email("1")]) != idempotency_key([email("1"), email("2")])
    assert len(idempotency_key([email(str(i)) for i in range(100)])) <= 256
