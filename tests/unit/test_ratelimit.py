"""The rate limiter's arithmetic and the LLM boundary's helpers around it (no services)."""

from __future__ import annotations

import math

import pytest

from shared.ratelimit import Cost, Limits, bucket_key
from worker import llm


@pytest.mark.parametrize("limit", [1, 5, 12, 60, 1000, 50_000])
@pytest.mark.parametrize("period_s", [4.0, 60.0])
def test_burst_plus_refill_stays_below_the_limit(limit: int, period_s: float) -> None:
    limits = Limits(requests=limit, period_s=period_s)
    # The most a sliding window of the period (plus 1% of it for network jitter) can see:
    # the burst, then one request per whole token refilled.
    most = limits.burst(limit) + math.floor(limits.rate_per_ms(limit) * period_s * 1000 * 1.01)
    assert most <= limit


def test_mean_rate_is_close_to_the_limit() -> None:
    limits = Limits(requests=1000, period_s=60.0)
    assert limits.rate_per_ms(1000) * 60_000 >= 0.95 * 1000


def test_zero_means_unlimited() -> None:
    assert not Limits().enabled
    assert Limits(output_tokens=10).enabled
    assert Limits().burst(0) == 0 and Limits().rate_per_ms(0) == 0.0


def test_bucket_key_holds_no_api_key() -> None:
    key = bucket_key("sk-ant-secret", "claude-haiku-4-5")
    assert "secret" not in key
    assert key.startswith("bf:rl:") and key.endswith(":claude-haiku-4-5")
    assert key != bucket_key("sk-ant-other", "claude-haiku-4-5")


def test_feedback_of_a_429_blocks_for_retry_after() -> None:
    feedback = llm.provider_feedback({"retry-after": "7"}, 429, now=0.0)
    assert feedback.block_s == 7.0


def test_feedback_of_an_exhausted_budget_blocks_until_reset() -> None:
    headers = {"anthropic-ratelimit-requests-remaining": "0",
               "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:10Z",
               "anthropic-ratelimit-input-tokens-remaining": "1234"}
    now = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    feedback = llm.provider_feedback(headers, 200, now)
    assert math.isclose(feedback.block_s, 10.0)
    assert feedback.remaining == (0, 1234, None)


def test_feedback_ignores_garbage_headers() -> None:
    headers = {"anthropic-ratelimit-requests-remaining": "lots",
               "anthropic-ratelimit-requests-reset": "soon"}
    feedback = llm.provider_feedback(headers, 200, now=0.0)
    assert feedback.remaining == (None, None, None) and feedback.block_s == 0.0


def test_estimate_uses_chars_and_max_tokens() -> None:
    request = {"model": "m", "max_tokens": 300, "system": [{"type": "text", "text": "x" * 400}],
               "messages": [{"role": "user", "content": "y" * 400}]}
    estimate = llm.estimate_cost(request, output_estimate=0)
    assert estimate.requests == 1 and estimate.output_tokens == 300
    assert 200 <= estimate.input_tokens <= 260
    assert llm.estimate_cost(request, output_estimate=50).output_tokens == 50


def test_used_cost_counts_cache_writes_not_reads() -> None:
    usage = {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 50,
             "cache_read_input_tokens": 900}
    assert llm.used_cost({"usage": usage}) == Cost(1, 150, 20)


def test_without_cache_control_strips_every_marker_and_keeps_the_original() -> None:
    request = {"model": "m", "cache_control": {"type": "ephemeral"},
               "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
               "messages": [{"role": "user", "content": [
                   {"type": "text", "text": "t", "cache_control": {"type": "ephemeral"}}]}]}
    stripped = llm.without_cache_control(request)
    assert "cache_control" not in repr(stripped)
    assert "cache_control" in request["system"][0]
