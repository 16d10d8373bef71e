"""The canonical form of an email address and what an address may hold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.emails import MALFORMED, REQUIRED, canonical, digest, problem


@pytest.mark.parametrize(
    ("typed", "form"),
    [
        ("Sparky@ASU.edu", "sparky@asu.edu"),
        ("  sparky@asu.edu ", "sparky@asu.edu"),
        ("\uff33\uff50\uff41\uff52\uff4b\uff59@asu.edu", "sparky@asu.edu"),  # fullwidth letters
        ("Stra\u00dfe@uni.de", "strasse@uni.de"),
        ("STRASSE@UNI.DE", "strasse@uni.de"),
        ("\u0391\u03b8\u03b7\u03bd\u0391\u03a3@uni.gr", "\u03b1\u03b8\u03b7\u03bd\u03b1\u03c3@uni.gr"),
        ("Jose\u0301@uni.es", "jos\u00e9@uni.es"),  # decomposed accent composes
    ],
)
def test_one_canonical_form(typed: str, form: str) -> None:
    assert canonical(typed) == form
    assert digest(typed) == digest(form)


def test_the_lock_out_bypass_character_is_not_the_plain_letter() -> None:
    # PostgreSQL's lower() makes U+0130 a plain "i"; case folding keeps its dot, and the address is refused.
    assert canonical("v\u0130cki@asu.edu") != canonical("vicki@asu.edu")
    assert problem("v\u0130cki@asu.edu") == MALFORMED


@pytest.mark.parametrize(
    "address",
    [
        "sparky@asu.edu",
        "Sparky.Devil+alerts@asu.edu",
        "jos\u00e9@uni.es",
        "\u0441\u043e\u043d\u044f@mail.ru",  # Cyrillic local part, Latin domain
        "tanaka\u592a\u90ce\u3055\u3093@example.jp",  # Latin + Han + Hiragana (UTS #39 allows it)
        "\u0905\u0928\u093f\u0932@example.in",  # Devanagari with its vowel sign
    ],
)
def test_addresses_people_have_are_accepted(address: str) -> None:
    assert problem(address) is None


@pytest.mark.parametrize(
    "address",
    [
        "v\u0456cki@asu.edu",  # Cyrillic i among Latin letters
        "spark\u0443@asu.edu",  # Cyrillic u
        "sparky@\u0430su.edu",  # Cyrillic a in the domain
        "spa\u200brky@asu.edu",  # zero-width space
        "spa\u200drky@asu.edu",  # zero-width joiner
        "spa\u202erky@asu.edu",  # right-to-left override
        "spa\u00adrky@asu.edu",  # soft hyphen
        "vi\u0307cki@asu.edu",  # combining dot over a Latin i
        "sparky\u0663@asu.edu",  # Arabic-Indic digit
        "sparky\u2605@asu.edu",  # a symbol
        "sparky\x00@asu.edu",
        "sparky@asu",
        "sparky@asu..edu",
        "two,people@asu.edu",
        "a@b.edu,c@d.edu",
        "<sparky@asu.edu>",
        "spa rky@asu.edu",
        "x" * 250 + "@asu.edu",
    ],
)
def test_invisible_confusable_or_malformed_addresses_are_refused(address: str) -> None:
    assert problem(address) == MALFORMED


def test_an_empty_address_is_required() -> None:
    assert problem("   ") == REQUIRED


@given(st.text())
def test_canonical_form_is_stable(text: str) -> None:
    once = canonical(text)
    assert canonical(once) == once
    if problem(text) is None:
        assert problem(once) is None
