"""The notifier's view of the email provider: outcomes, failure classes, pacing (pure)."""

from __future__ import annotations

from typing import cast

import asyncpg
import pytest
from resend.exceptions import ResendError

from services.gateway.app import create_app
from services.notifier.backends import _outcomes, classify, create_backend
from services.notifier.budget import rate_item
from services.notifier.outcomes import ProviderRefused, ProviderUnavailable, Refused, Sent
from services.notifier.provider import ProviderState, capped
from shared.health import NotReady
from shared.settings import SettingsError, load_settings


def error(code: int, error_type: str, headers: dict[str, str] | None = None) -> ResendError:
    return ResendError(code=code, error_type=error_type, message="m", suggested_action="", headers=headers)


def test_permissive_answers_map_back_to_each_email_by_index() -> None:
    response = {"data": [{"id": "a"}, {"id": "c"}], "errors": [{"index": 1, "message": "bad `to`"}]}
    assert _outcomes(3, response) == [Sent("a"), Refused("bad `to`"), Sent("c")]
    with pytest.raises(ProviderUnavailable, match="fewer ids"):
        _outcomes(3, {"data": [{"id": "a"}]})


@pytest.mark.parametrize(
    ("code", "error_type", "expected"),
    [
        (401, "missing_api_key", ProviderRefused),
        (403, "invalid_api_key", ProviderRefused),
        (422, "validation_error", ProviderRefused),
        (409, "invalid_idempotent_request", ProviderRefused),
        (409, "concurrent_idempotent_requests", ProviderUnavailable),
        (429, "rate_limit_exceeded", ProviderUnavailable),
        (500, "application_error", ProviderUnavailable),
        (503, "application_error", ProviderUnavailable),
    ],
)
def test_request_level_failures_never_blame_a_recipient(code: int, error_type: str, expected: type) -> None:
    assert isinstance(classify(error(code, error_type)), expected)


def test_a_rate_limit_carries_the_providers_wait() -> None:
    limited = classify(error(429, "rate_limit_exceeded", {"Retry-After": "3"}))
    assert isinstance(limited, ProviderUnavailable)
    assert limited.retry_after == 3.0
    reset = classify(error(429, "rate_limit_exceeded", {"ratelimit-reset": "0.5"}))
    assert isinstance(reset, ProviderUnavailable)
    assert reset.retry_after == 0.5


def test_the_budget_is_whole_requests_per_whole_seconds() -> None:
    assert (rate_item(2).amount, rate_item(2).get_expiry()) == (2, 1)
    assert (rate_item(0.5).amount, rate_item(0.5).get_expiry()) == (1, 2)
    assert (rate_item(2.5).amount, rate_item(2.5).get_expiry()) == (5, 2)


async def test_provider_failures_back_off_capped_and_one_success_clears_them() -> None:
    now = [0.0]
    state = ProviderState(clock=lambda: now[0])
    pauses = [state.failed(ProviderUnavailable("503")) for _ in range(7)]
    assert pauses == [5.0, 15.0, 60.0, 120.0, 300.0, 300.0, 300.0]
    assert state.paused() == 300.0
    with pytest.raises(NotReady, match="unavailable"):
        await state.check()()
    assert state.failed(ProviderRefused("resend 401")) == 300.0
    with pytest.raises(NotReady, match=r"refuses our configuration.*401"):
        await state.check()()
    state.succeeded()
    assert state.paused() == 0.0
    await state.check()()
    assert ProviderState().failed(ProviderUnavailable("429", retry_after=42.0)) == 42.0


def test_an_email_backend_must_be_chosen_explicitly() -> None:
    with pytest.raises(SettingsError, match=r"RESEND_API_KEY.*EMAIL_BACKEND=outbox"):
        load_settings({}).require_email_backend()
    assert load_settings({"EMAIL_BACKEND": "outbox"}).require_email_backend() == "outbox"
    assert load_settings({"RESEND_API_KEY": "re_x"}).require_email_backend() == "resend"
    with pytest.raises(SettingsError, match="RESEND_REQUESTS_PER_SECOND"):
        load_settings({"RESEND_REQUESTS_PER_SECOND": "0"})


def test_the_gateway_and_the_notifier_refuse_to_start_without_a_chosen_backend() -> None:
    """A production start with neither RESEND_API_KEY nor EMAIL_BACKEND=outbox: no silent dev outbox."""
    settings = load_settings({"SECRET_KEY": "s" * 32})
    with pytest.raises(SettingsError, match="no email backend chosen"):
        create_app(settings)
    with pytest.raises(SettingsError, match="no email backend chosen"):
        create_backend(settings, cast(asyncpg.Pool, None))


def test_the_retry_cap_bounds_every_wait() -> None:
    assert capped((5.0, 15.0, 300.0), 60.0) == (5.0, 15.0, 60.0)
    assert load_settings({}).email_retry_max_seconds == 300.0
    with pytest.raises(SettingsError, match="EMAIL_RETRY_MAX_SECONDS"):
        load_settings({"EMAIL_RETRY_MAX_SECONDS": "0"})
