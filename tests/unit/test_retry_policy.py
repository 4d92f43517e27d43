"""Backoff: exponential with full jitter, capped, never shorter than the provider's retry-after."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.settings import Settings
from worker.service import retry_delay_s

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
