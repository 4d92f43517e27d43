"""Job options: every class of bad value is refused with a message naming the option."""

from __future__ import annotations

import math

import pytest

from scheduler.jobs.options import MAX_LIMIT, JobOptions, parse_options
from shared.errors import InvalidInput


def refusal(raw: object) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_options(raw)
    return str(caught.value)


def test_missing_options_are_the_defaults() -> None:
    assert parse_options(None) == JobOptions(sample_rate=1.0, limit=None, skip_current=False)
    assert parse_options({}) == JobOptions()


def test_nulls_mean_the_defaults() -> None:
    raw = {"sample_rate": None, "limit": None, "skip_current": None}
    assert parse_options(raw) == JobOptions()


def test_valid_options_are_kept() -> None:
    raw = {"sample_rate": 0.25, "limit": 10, "skip_current": True}
    assert parse_options(raw) == JobOptions(sample_rate=0.25, limit=10, skip_current=True)


def test_integer_rate_one_and_limit_bounds_are_accepted() -> None:
    assert parse_options({"sample_rate": 1}).sample_rate == 1.0
    assert isinstance(parse_options({"sample_rate": 1}).sample_rate, float)
    assert parse_options({"limit": 1}).limit == 1
    assert parse_options({"limit": MAX_LIMIT}).limit == MAX_LIMIT


def test_parsed_options_pass_through() -> None:
    options = JobOptions(sample_rate=0.5)
    assert parse_options(options) is options


def test_as_json_round_trips() -> None:
    options = JobOptions(sample_rate=0.5, limit=7, skip_current=True)
    assert options.as_json() == {"sample_rate": 0.5, "limit": 7, "skip_current": True}
    assert parse_options(options.as_json()) == options


@pytest.mark.parametrize("raw", [[], "sample_rate=0.5", 3, True])
def test_options_must_be_an_object(raw: object) -> None:
    assert refusal(raw).startswith("options: must be an object, got ")


def test_unknown_option_is_refused_by_name() -> None:
    message = refusal({"sample_rate": 0.5, "sampel_rate": 0.5, "offset": 3})
    assert message.startswith("options: unknown option(s) offset, sampel_rate")
    assert "known: sample_rate, limit, skip_current" in message


@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1.0000001, 2, math.inf, -math.inf])
def test_sample_rate_out_of_range(value: float) -> None:
    message = refusal({"sample_rate": value})
    assert message == f"options.sample_rate: must be a number with 0 < r ≤ 1, got {value!r}"


def test_sample_rate_nan_is_refused() -> None:
    assert refusal({"sample_rate": math.nan}).startswith("options.sample_rate: must be a number")


@pytest.mark.parametrize(("value", "shown"), [
    (True, "boolean"), (False, "boolean"), ("0.5", "string"), ([0.5], "array"),
    ({"r": 0.5}, "object"),
])
def test_sample_rate_must_be_a_number(value: object, shown: str) -> None:
    assert refusal({"sample_rate": value}) == (
        f"options.sample_rate: must be a number with 0 < r ≤ 1, got {shown}"
    )


@pytest.mark.parametrize("value", [0, -1, MAX_LIMIT + 1, 10**30])
def test_limit_out_of_range(value: int) -> None:
    message = refusal({"limit": value})
    assert message.startswith("options.limit: must be an integer with 1 ≤ n ≤ 10,000,000, got ")
    assert message.endswith(repr(value)[:40])


@pytest.mark.parametrize(("value", "shown"), [
    (True, "boolean"), (5.0, "5.0"), (2.5, "2.5"), ("10", "string"), ([10], "array"),
])
def test_limit_must_be_an_integer(value: object, shown: str) -> None:
    assert refusal({"limit": value}) == (
        f"options.limit: must be an integer with 1 ≤ n ≤ 10,000,000, got {shown}"
    )


@pytest.mark.parametrize(("value", "shown"), [
    (1, "integer"), (0, "integer"), ("true", "string"), ([True], "array"),
])
def test_skip_current_must_be_a_boolean(value: object, shown: str) -> None:
    assert refusal({"skip_current": value}) == (
        f"options.skip_current: must be a boolean, got {shown}"
    )


def test_first_bad_option_is_named_even_with_good_ones() -> None:
    message = refusal({"sample_rate": 0.5, "limit": 0, "skip_current": True})
    assert message.startswith("options.limit:")
