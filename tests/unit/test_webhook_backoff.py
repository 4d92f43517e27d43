"""The retry schedule of webhook deliveries: exponential, full jitter, a floor, a cap, and
more than a day of retries before giving up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.webhooks.backoff import FLOOR_S, gives_up, next_attempt_delay_s


def top() -> float:
    return 1.0


def bottom() -> float:
    return 0.0


def test_the_ceiling_doubles_from_the_base() -> None:
    ceilings = [next_attempt_delay_s(n, jitter=top) for n in range(1, 6)]
    assert ceilings == [10.0, 20.0, 40.0, 80.0, 160.0]


def test_the_ceiling_stops_at_the_cap() -> None:
    assert next_attempt_delay_s(9, jitter=top) == 2560.0
    assert next_attempt_delay_s(10, jitter=top) == 3600.0
    assert next_attempt_delay_s(50, jitter=top) == 3600.0


def test_a_huge_attempt_number_stays_at_the_cap() -> None:
    assert next_attempt_delay_s(10**6, jitter=top) == 3600.0


def test_full_jitter_scales_the_ceiling() -> None:
    assert next_attempt_delay_s(4, jitter=lambda: 0.5) == 40.0
    assert next_attempt_delay_s(4, jitter=lambda: 0.25, base_s=2, cap_s=60) == 4.0


def test_the_floor_holds_when_jitter_is_zero() -> None:
    assert next_attempt_delay_s(1, jitter=bottom) == FLOOR_S == 1.0
    assert next_attempt_delay_s(30, jitter=bottom) == 1.0


def test_base_and_cap_are_parameters() -> None:
    assert next_attempt_delay_s(3, base_s=5, cap_s=15, jitter=top) == 15.0


def test_the_default_jitter_spreads_delays() -> None:
    delays = {round(next_attempt_delay_s(12), 3) for _ in range(50)}
    assert len(delays) > 10
    assert all(FLOOR_S <= delay <= 3600.0 for delay in delays)


@given(attempt=st.integers(min_value=1, max_value=200),
       jitter=st.floats(min_value=0.0, max_value=1.0))
def test_delays_stay_within_floor_and_ceiling(attempt: int, jitter: float) -> None:
    delay = next_attempt_delay_s(attempt, jitter=lambda: jitter)
    assert FLOOR_S <= delay <= min(3600.0, 10.0 * 2 ** (attempt - 1))


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt: int) -> None:
    with pytest.raises(ValueError):
        next_attempt_delay_s(attempt, jitter=top)


FIRST = datetime(2025, 1, 1, tzinfo=UTC)


def test_retries_go_on_for_more_than_a_day() -> None:
    assert not gives_up(FIRST, FIRST + timedelta(hours=24))
    assert not gives_up(FIRST, FIRST + timedelta(hours=25, minutes=59))


def test_gives_up_at_the_horizon() -> None:
    assert gives_up(FIRST, FIRST + timedelta(hours=26))
    assert gives_up(FIRST, FIRST + timedelta(days=3))


def test_the_horizon_is_a_parameter() -> None:
    assert gives_up(FIRST, FIRST + timedelta(seconds=61), horizon_s=60)
    assert not gives_up(FIRST, FIRST + timedelta(seconds=59), horizon_s=60)


def test_a_full_schedule_keeps_trying_past_24_hours() -> None:
    # The worst case for the promise: every delay at its ceiling, attempts taking no time.
    now, attempt = FIRST, 1
    while not gives_up(FIRST, now):
        now += timedelta(seconds=next_attempt_delay_s(attempt, jitter=top))
        attempt += 1
    assert now - FIRST >= timedelta(hours=24)
