from __future__ import annotations

from services.notifier.claims import ClaimKey
from services.notifier.email import Email, Recipient
from services.notifier.plan import chunks, idempotency_key, plan
from tests.factories import change

ADA = Recipient(watch_id=1, user_id=10, email="ada@example.edu")
BOB = Recipient(watch_id=2, user_id=11, email="bob@example.edu")


def test_each_watcher_gets_one_notice_per_change_even_if_the_batch_repeats_it() -> None:
    opened = change("seat_opened", "k1")
    notices = plan([opened, opened], {("2271", "12345"): [ADA, BOB]})
    assert [n.key for n in notices] == [ClaimKey(1, "seat_opened", "k1"), ClaimKey(2, "seat_opened", "k1")]


def test_seat_filled_is_not_emailed_and_other_sections_are_not_mixed_in() -> None:
    notices = plan(
        [change("seat_filled", "k2"), change("instructor_changed", "k3", class_nbr="99999")],
        {("2271", "12345"): [ADA], ("2271", "99999"): [BOB]},
    )
    assert [n.key for n in notices] == [ClaimKey(2, "instructor_changed", "k3")]


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
