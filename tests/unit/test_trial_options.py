"""`trial_size`: the bounds, the one contradiction (a limit below it), and what a trial's options
look like as stored and once promoted (DESIGN "Safe to apply")."""

from __future__ import annotations

import pytest

from scheduler.jobs.options import MAX_TRIAL_SIZE, JobOptions, parse_options
from shared.errors import InvalidInput
from shared.state.trials import is_trial


def refusal(raw: object) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_options(raw)
    return str(caught.value)


@pytest.mark.parametrize("size", [1, 50, MAX_TRIAL_SIZE])
def test_a_trial_size_in_bounds_is_kept(size: int) -> None:
    options = parse_options({"trial_size": size})
    assert options.trial_size == size and options.trial


@pytest.mark.parametrize("size", [0, -3, MAX_TRIAL_SIZE + 1, 2.5, "10", True, [5]])
def test_a_trial_size_out_of_bounds_or_not_an_integer_is_refused(size: object) -> None:
    message = refusal({"trial_size": size})
    assert message.startswith("options.trial_size: must be an integer with 1 ≤ n ≤ 1,000")


def test_a_limit_below_the_trial_is_refused_naming_both() -> None:
    message = refusal({"trial_size": 50, "limit": 10})
    assert message.startswith("options.trial_size: a trial of 50 sessions")
    assert "options.limit 10" in message


@pytest.mark.parametrize("raw", [
    {"trial_size": 10, "limit": 10},
    {"trial_size": 10, "limit": 5000},
    {"trial_size": 10, "sample_rate": 0.01},
    {"trial_size": 10, "skip_current": True},
])
def test_options_that_only_narrow_what_the_trial_samples_from_are_accepted(
        raw: dict[str, object]) -> None:
    assert parse_options(raw).trial_size == 10


def test_only_a_trial_stores_trial_size() -> None:
    assert "trial_size" not in JobOptions(limit=3).as_json()
    trial = parse_options({"trial_size": 20, "sample_rate": 0.5})
    assert trial.as_json() == {"sample_rate": 0.5, "limit": None, "skip_current": False,
                               "trial_size": 20}
    assert parse_options(trial.as_json()) == trial
    assert is_trial(trial.as_json()) and not is_trial(JobOptions().as_json())
    assert not is_trial(None) and not is_trial({"trial_size": None})


def test_promoting_keeps_every_option_but_the_trial() -> None:
    trial = parse_options({"trial_size": 20, "sample_rate": 0.5, "limit": 100,
                           "skip_current": True})
    assert trial.without_trial() == JobOptions(sample_rate=0.5, limit=100, skip_current=True)
    assert not trial.without_trial().trial
