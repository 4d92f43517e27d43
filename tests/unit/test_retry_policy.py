"""Backoff: exponential with full jitter, capped, never shorter than the provider's retry-after."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared import errors
from shared.retry import Decision, decide, retry_delay_s
from shared.settings import Settings

SETTINGS = Settings(retry_base_s=2.0, retry_cap_s=60.0)


@given(attempt=st.integers(min_value=1, max_value=40))
def test_delay_within_exponential_ceiling(attempt: int) -> None:
    delay = retry_delay_s(SETTINGS, attempt, None)
    assert 0 <= delay <= min(60.0, 2.0 * 2 ** (attempt - 1))


@given(attempt=st.integers(min_value=1, max_value=10),
       retry_after=st.floats(min_value=0, max_value=59))
def test_retry_after_is_a_floor(attempt: int, retry_after: float) -> None:
    assert retry_delay_s(SETTINGS, attempt, retry_after) >= retry_after


def test_retry_after_beyond_cap_is_capped() -> None:
    assert retry_delay_s(SETTINGS, 1, 10_000) == 60.0


def test_jitter_spreads_delays() -> None:
    delays = {round(retry_delay_s(SETTINGS, 6, None), 3) for _ in range(50)}
    assert len(delays) > 10


def test_decide_pauses_for_job_fatal_errors_without_an_attempt_cap() -> None:
    assert decide(SETTINGS, 99, errors.LLMAuth("bad key")) == Decision("pause")


def test_decide_retries_transient_errors_until_the_attempt_cap() -> None:
    settings = Settings(retry_base_s=2.0, retry_cap_s=60.0, max_attempts=3)
    retried = decide(settings, 2, errors.LLMOverloaded("busy", retry_after_s=5.0))
    assert retried.action == "retry" and 5.0 <= retried.delay_s <= 60.0
    assert decide(settings, 3, errors.LLMOverloaded("busy")) == Decision("fail")


def test_decide_gives_invalid_output_its_own_smaller_cap() -> None:
    settings = Settings(max_attempts=6, invalid_output_attempts=2)
    assert decide(settings, 1, errors.LLMInvalidOutput("no")).action == "retry"
    assert decide(settings, 2, errors.LLMInvalidOutput("no")) == Decision("fail")
    assert decide(settings, 2, errors.LLMTimeout("slow")).action == "retry"


def test_decide_fails_permanent_errors_at_once() -> None:
    for permanent in (errors.LLMBadRequest("400"), errors.LLMRefusal("no"),
                      errors.AnalysisConfigMissing("none")):
        assert decide(SETTINGS, 1, permanent) == Decision("fail")
