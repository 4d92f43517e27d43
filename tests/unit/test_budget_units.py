"""Spend control's arithmetic, without services: the count_tokens plan, the token model of an
estimate and its cache rule, the per-session estimate, caps as input, the rate-limit share and
the live traffic's reserve, and the settings that refuse a bad share."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.cli.jobs import parse_cost_flag
from scheduler.jobs import estimates, token_counts
from scheduler.jobs.options import parse_max_cost_usd, parse_options
from scheduler.jobs.token_counts import Candidate, InputModel
from shared.analysis import AgentVersionInfo, resolve_config
from shared.errors import InvalidInput, SettingsInvalid
from shared.pricing import Tokens, cost_usd
from shared.ratelimit import Limits, headroom_of
from shared.settings import Settings, get_settings
from worker import llm

SETTINGS = Settings()

# --------------------------------------------------------------------------- the plan

sizes = st.lists(st.integers(min_value=0, max_value=10_000), min_size=0, max_size=12)
models = st.sampled_from(["claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5"])


def calls_of(candidates: list[Candidate], samples: list[int]) -> int:
    """What a plan costs: per counted configuration its empty request and its samples, and
    one base request per model counted."""
    counted = [i for i, n in enumerate(samples) if n]
    return (sum(1 + samples[i] for i in counted)
            + len({candidates[i].model for i in counted}))


@given(st.lists(st.tuples(models, st.integers(min_value=0, max_value=10_000)), max_size=12),
       st.integers(min_value=0, max_value=40))
def test_a_plan_never_makes_more_calls_than_allowed(shapes: list[tuple[str, int]],
                                                    budget: int) -> None:
    candidates = [Candidate(model, analysed) for model, analysed in shapes]
    samples = token_counts.plan_samples(candidates, budget)
    assert calls_of(candidates, samples) <= budget
    assert all(0 <= n <= c.analysed for n, c in zip(samples, candidates, strict=True))


@given(sizes.filter(lambda s: any(s)))
def test_with_enough_calls_every_configuration_is_counted(analysed: list[int]) -> None:
    candidates = [Candidate("claude-haiku-4-5", n) for n in analysed]
    samples = token_counts.plan_samples(candidates, 3 * len(candidates) + 1)
    assert [n > 0 for n in samples] == [n > 0 for n in analysed]


def test_the_largest_configurations_are_counted_first_and_get_more_samples() -> None:
    candidates = [Candidate("claude-haiku-4-5", 10), Candidate("claude-haiku-4-5", 5000),
                  Candidate("claude-sonnet-4-5", 20)]
    samples = token_counts.plan_samples(candidates, 4)  # one configuration's worth
    assert samples == [0, 2, 0]
    samples = token_counts.plan_samples(candidates, 20)
    assert samples[1] > samples[2] >= 1 and samples[0] >= 1
    assert calls_of(candidates, samples) == 20


def test_no_calls_allowed_counts_nothing() -> None:
    assert token_counts.plan_samples([Candidate("claude-haiku-4-5", 99)], 0) == [0]
    assert token_counts.plan_samples([Candidate("claude-haiku-4-5", 99)], 2) == [0]


# --------------------------------------------------------------------------- the estimate


def configuration(model: str, description_words: int) -> estimates._Configuration:
    fields = [{"type": "string", "name": f"field_{n}",
               "description": " ".join(["detail"] * description_words)} for n in range(6)]
    config = resolve_config("call", "agent", [], {"agent": [AgentVersionInfo(
        "agent", 0, False, "voice", model, fields)]}, "claude-haiku-4-5")
    group = estimates._Group("agent", "[]", sessions=100, analysed=100)
    return estimates._Configuration(config, "hash", [group])


CHARS = 200_000


def test_below_the_models_cache_minimum_nothing_is_cached() -> None:
    model = InputModel(fixed=3000, prefix=2500, per_char=0.3, counted=True)
    priced = estimates._price(SETTINGS, configuration("claude-haiku-4-5", 5), CHARS, model, None,
                              "live")
    assert priced.tokens.cache_write == priced.tokens.cache_read == 0
    assert priced.tokens.input == round(3000 * 100 + 0.3 * 200_000)
    assert priced.basis == "counted"


def test_above_it_one_write_then_reads() -> None:
    model = InputModel(fixed=3000, prefix=2500, per_char=0.3, counted=True)
    priced = estimates._price(SETTINGS, configuration("claude-sonnet-4-5", 5), CHARS, model, 180.0,
                              "live")
    assert priced.tokens == Tokens(input=round(500 * 100 + 0.3 * 200_000), output=18_000,
                                   cache_write=2500, cache_read=2500 * 99)
    assert priced.basis == "history"


def test_caching_switched_off_assumes_none() -> None:
    model = InputModel(fixed=3000, prefix=2500, per_char=0.3, counted=True)
    settings = Settings(BACKFILL_PROMPT_CACHING=False)
    priced = estimates._price(settings, configuration("claude-sonnet-4-5", 5), CHARS, model, None,
                              "live")
    assert priced.tokens.cache_read == 0


def test_the_per_session_estimate_adds_up_to_the_estimate() -> None:
    """base × sessions + per_char × characters is the configuration's whole estimate: what the
    reservations of a job hold together is what preview said it costs."""
    model = InputModel(fixed=3000, prefix=2500, per_char=0.3, counted=True)
    for model_id, mode in (("claude-sonnet-4-5", "live"), ("claude-haiku-4-5", "batch")):
        priced = estimates._price(SETTINGS, configuration(model_id, 5), CHARS, model, 250.0, mode)
        held = (float(priced.session.base_usd) * 100
                + float(priced.session.usd_per_char) * 200_000)
        assert math.isclose(held, priced.usd, rel_tol=1e-6)


def test_the_local_estimate_is_uncounted_and_the_basis_default() -> None:
    config = configuration("claude-haiku-4-5", 5)
    local = token_counts.local_model(config.config, 2048)
    assert not local.counted and local.per_char == 0.25 and 0 < local.prefix < local.fixed
    assert estimates._price(SETTINGS, config, CHARS, local, 200.0, "live").basis == "default"


def test_uncounted_configurations_are_scaled_by_what_the_counted_ones_showed() -> None:
    configs = [configuration("claude-haiku-4-5", 5).config,
               configuration("claude-sonnet-4-5", 40).config]
    local = [token_counts.local_model(config, 2048) for config in configs]
    counted = {0: InputModel(fixed=local[0].fixed * 1.5, prefix=local[0].prefix * 1.2,
                             per_char=0.31, counted=True)}
    models = token_counts.complete_models(configs, counted, 2048)
    assert models[0] == counted[0]
    assert models[1].counted
    assert math.isclose(models[1].fixed, local[1].fixed * 1.5)
    assert math.isclose(models[1].prefix, local[1].prefix * 1.2)
    assert models[1].per_char == 0.31


def test_the_weakest_basis_wins() -> None:
    assert estimates._weakest(["history", "counted"]) == "counted"
    assert estimates._weakest(["history", "default", "counted"]) == "default"
    assert estimates._weakest(["history"]) == "history"


# --------------------------------------------------------------------------- caps as input


@pytest.mark.parametrize("bad", [0, -1, -0.0, float("nan"), float("inf"), "5", True, None,
                                 [1]])
def test_a_cap_must_be_a_finite_number_above_zero(bad: object) -> None:
    with pytest.raises(InvalidInput, match=r"^options\.max_cost_usd: must be a number"):
        parse_max_cost_usd(bad)


def test_a_good_cap_and_where_it_is_kept() -> None:
    assert parse_max_cost_usd(2) == 2.0
    options = parse_options({"max_cost_usd": 12.5, "limit": 10})
    assert options.max_cost_usd == 12.5
    assert "max_cost_usd" not in options.as_json()  # the job's budget keeps it, not options
    assert parse_options(None).max_cost_usd is None


@pytest.mark.parametrize(("flag", "message"), [
    ("abc", "--max-cost-usd: must be a number of USD greater than 0, got 'abc'"),
    ("0", "--max-cost-usd: must be a number"), ("nan", "--max-cost-usd: must be a number"),
    ("-1e3", "--max-cost-usd: must be a number"),
])
def test_the_cli_flag_names_itself(flag: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_cost_flag(flag)
    assert str(refused.value).startswith(message)


def test_the_cli_flag_reads_a_number() -> None:
    assert parse_cost_flag("1.25") == 1.25 and parse_cost_flag(None) is None


# --------------------------------------------------------------------------- the share


def test_the_buckets_hold_the_share_of_each_limit() -> None:
    limits = Limits(requests=20, input_tokens=100_000, output_tokens=0, share=0.5)
    assert limits.configured() == (20, 100_000, 0)
    assert limits.values() == (10, 50_000, 0)
    assert Limits(requests=1, share=0.1).values()[0] == 1  # a set limit never rounds to none
    assert Limits(requests=20).values() == (20, 0, 0)


@given(st.integers(min_value=1, max_value=100_000), st.floats(min_value=0.01, max_value=1.0),
       st.integers(min_value=0, max_value=100_000))
def test_backfills_never_take_the_live_traffics_part(limit: int, share: float,
                                                     remaining: int) -> None:
    """Whatever remains of a window, backfills may take it only down to (1 - share) × limit:
    after taking their headroom, at least the live traffic's part is left."""
    limits = Limits(requests=limit, share=share)
    headroom = headroom_of(limits, remaining, limit, limit)
    if headroom > 0:
        assert remaining - headroom >= (1 - share) * limit - 1e-9
    assert headroom >= -max(1, math.floor(limit * share))  # a debt of at most one period


def test_share_one_leaves_the_headroom_as_the_provider_says() -> None:
    limits = Limits(requests=50)
    assert headroom_of(limits, 7, 50, 50) == 7
    assert headroom_of(limits, -3, None, 50) == 0


def test_the_providers_limit_header_sets_the_reserve() -> None:
    limits = Limits(requests=20, share=0.5)
    assert headroom_of(limits, 30, 40, 20) == 30 - 20  # the provider says 40, not 20
    assert headroom_of(limits, 30, None, 20) == 30 - 10


def test_feedback_reads_the_limit_headers() -> None:
    headers = {"anthropic-ratelimit-requests-limit": "50",
               "anthropic-ratelimit-requests-remaining": "12",
               "anthropic-ratelimit-output-tokens-limit": "8000"}
    feedback = llm.provider_feedback(headers, 200, now=0.0)
    assert feedback.limits == (50, None, 8000)
    assert feedback.remaining == (12, None, None)


def test_the_workers_limits_carry_the_share() -> None:
    settings = Settings(BACKFILL_RL_REQUESTS_PER_MIN=60, BACKFILL_RL_SHARE=0.25)
    assert llm.rate_limits(settings).values()[0] == 15


@pytest.mark.parametrize("share", ["0", "1.01", "-1", "nan", "lots"])
def test_a_share_outside_0_1_is_refused_naming_the_variable(
    share: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_RL_SHARE", share)
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsInvalid, match=r"^invalid setting BACKFILL_RL_SHARE: "):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_a_refused_setting_never_shows_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_LLM_TIMEOUT_S", "sk-ant-secret-looking-value")
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsInvalid) as refused:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert "BACKFILL_LLM_TIMEOUT_S" in str(refused.value)
    assert "secret" not in str(refused.value)


def test_prices_of_a_dated_model_are_its_familys() -> None:
    dated = cost_usd(SETTINGS, "claude-sonnet-4-5-20250929", Tokens(input=1_000_000))
    assert dated == cost_usd(SETTINGS, "claude-sonnet-4-5", Tokens(input=1_000_000)) == 3.0


def test_transcript_characters_from_the_sample() -> None:
    sample = token_counts.ConfigSample(lengths=[100, 300])
    assert sample.chars(analysed=2) == 400  # the whole configuration: exact
    assert sample.chars(analysed=1000) == 200_000  # a sample: its mean for each session
    assert token_counts.ConfigSample().chars(analysed=50) == 0
