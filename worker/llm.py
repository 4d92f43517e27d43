"""The LLM boundary: one Messages API call through the real anthropic SDK.

Errors are wrapped at this boundary into the item's error kinds. Before each call the
global rate limit (shared/ratelimit.py) is asked for capacity; after it, the buckets are
corrected with the real usage and tightened from the provider's rate-limit headers.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anthropic
import redis

from shared import errors
from shared.ratelimit import Cost, Feedback, Limits, RateLimiter
from shared.results import message_text, wrap_api_error
from shared.services import redis_client_url
from shared.settings import Settings

log = logging.getLogger("backfill.worker")

STUB_API_KEY = "local-stand-in"


@dataclass(frozen=True)
class LLMReply:
    text: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    latency_ms: int


@dataclass(frozen=True)
class CallPolicy:
    """What every call through one client shares."""

    limiter: RateLimiter | None = None
    prompt_caching: bool = True
    max_wait_s: float = 0.0
    output_estimate_tokens: int = 0


class LLMClient(anthropic.Anthropic):
    """The SDK client carrying its CallPolicy: a subclass, so the worker context (and the
    service, which only passes the client on) keeps one object."""

    policy: CallPolicy = CallPolicy()

    def close(self) -> None:
        """The HTTP pool and the rate limiter's Redis connection alike."""
        super().close()
        if self.policy.limiter is not None:
            self.policy.limiter.close()


def make_client(settings: Settings) -> anthropic.Anthropic:
    """SDK retries are off: the item's retry policy is the one owner of retries."""
    if settings.llm_mode == "stub" and not settings.anthropic_base_url:
        raise errors.BackfillError(
            "BACKFILL_LLM=stub needs ANTHROPIC_BASE_URL pointing at `backfill llm-stub`"
        )
    api_key = settings.anthropic_api_key or STUB_API_KEY
    client = LLMClient(
        api_key=api_key,
        base_url=settings.anthropic_base_url,
        max_retries=0,
        timeout=settings.llm_timeout_s,
    )
    client.policy = CallPolicy(
        limiter=make_limiter(settings, api_key), prompt_caching=settings.prompt_caching,
        max_wait_s=settings.rl_max_wait_s,
        output_estimate_tokens=settings.rl_output_estimate_tokens,
    )
    return client


def rate_limits(settings: Settings) -> Limits:
    return Limits(
        requests=settings.rl_requests_per_min,
        input_tokens=settings.rl_input_tokens_per_min,
        output_tokens=settings.rl_output_tokens_per_min,
        period_s=settings.rl_period_s,
        burst_share=settings.rl_burst_share,
        safety_share=settings.rl_safety_share,
    )


def make_limiter(settings: Settings, api_key: str) -> RateLimiter | None:
    """None when no limit is configured (the default): no Redis round trip per call."""
    limits = rate_limits(settings)
    if not limits.enabled:
        return None
    connection = redis.Redis.from_url(redis_client_url(settings.require_broker_url()),
                                      socket_timeout=5, socket_connect_timeout=5)
    return RateLimiter(connection, api_key, limits)


def complete(client: anthropic.Anthropic, request: dict[str, Any]) -> LLMReply:
    """Send one request; return the text of the answer or raise an AnalysisError subclass."""
    policy = client.policy if isinstance(client, LLMClient) else CallPolicy()
    if not policy.prompt_caching:
        request = without_cache_control(request)
    limiter, model = policy.limiter, str(request["model"])
    estimate = estimate_cost(request, policy.output_estimate_tokens)
    if limiter is not None:
        wait_for_capacity(limiter, model, estimate, policy.max_wait_s)
    started = time.monotonic()
    try:
        raw = client.messages.with_raw_response.create(**request)
        message = raw.parse()
    except anthropic.APIStatusError as exc:
        if limiter is not None:
            _after_call(limiter, model, exc.response.headers, exc.status_code)
        raise wrap_api_error(exc) from exc
    except anthropic.APIError as exc:
        raise wrap_api_error(exc) from exc
    latency_ms = int((time.monotonic() - started) * 1000)
    if limiter is not None:
        _after_call(limiter, model, raw.headers, 200, (estimate, used_cost(message.usage)))
    return LLMReply(
        text=message_text(message),
        input_tokens=message.usage.input_tokens or 0,
        output_tokens=message.usage.output_tokens or 0,
        cache_read_tokens=getattr(message.usage, "cache_read_input_tokens", None) or 0,
        cache_write_tokens=getattr(message.usage, "cache_creation_input_tokens", None) or 0,
        latency_ms=latency_ms,
    )


def without_cache_control(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request with every `cache_control` marker removed (the caller's dict untouched)."""
    stripped = copy.deepcopy(dict(request))
    stripped.pop("cache_control", None)
    system = stripped.get("system")
    blocks = system if isinstance(system, list) else []
    for message in stripped.get("messages", []):
        content = message.get("content")
        blocks = [*blocks, *(content if isinstance(content, list) else [])]
    for block in blocks:
        if isinstance(block, dict):
            block.pop("cache_control", None)
    return stripped


def estimate_cost(request: Mapping[str, Any], output_estimate: int) -> Cost:
    """One request; input ≈ chars / 4 of the prompt; output = the configured estimate, else
    max_tokens (an upper bound: the bucket is refunded after the call)."""
    prompt = json.dumps([request.get("system"), request.get("messages")], ensure_ascii=False)
    output = output_estimate or int(request.get("max_tokens") or 0)
    return Cost(requests=1, input_tokens=-(-len(prompt) // 4), output_tokens=output)


def used_cost(usage: Any) -> Cost:
    """What counts against the provider's input-token limit: uncached input plus cache
    writes (cache reads do not count for current models)."""
    written = getattr(usage, "cache_creation_input_tokens", None) or 0
    return Cost(requests=1, input_tokens=(usage.input_tokens or 0) + written,
                output_tokens=usage.output_tokens or 0)


def wait_for_capacity(limiter: RateLimiter, model: str, cost: Cost, max_wait_s: float) -> None:
    """Wait, bounded, for the buckets to hold `cost`; past the bound the item goes back to
    `pending` through the retry path (`llm_rate_limited`) instead of holding a worker thread."""
    deadline = time.monotonic() + max_wait_s
    while True:
        try:
            wait_s = limiter.try_take(model, cost)
        except redis.RedisError as exc:
            # Without the shared limit no call may go out; the retry path asks again later.
            raise errors.LLMRateLimited(
                f"global rate limit unavailable: {type(exc).__name__}") from exc
        if wait_s <= 0:
            return
        left = deadline - time.monotonic()
        if wait_s > left:
            raise errors.LLMRateLimited(
                f"global rate limit: no capacity within {max_wait_s:g} s",
                retry_after_s=wait_s,
            )
        # A little jitter, so the threads that waited together do not all ask at once.
        time.sleep(wait_s + random.uniform(0, min(0.05, wait_s)))


_REMAINING_HEADERS = tuple(
    f"anthropic-ratelimit-{name}-remaining"
    for name in ("requests", "input-tokens", "output-tokens")
)


def _after_call(limiter: RateLimiter, model: str, headers: Mapping[str, str], status: int,
                usage: tuple[Cost, Cost] | None = None) -> None:
    """Correct the buckets with the real usage and the provider's headers. Best effort: a
    Redis hiccup here must not fail a call that has already been paid for."""
    try:
        if usage is not None:
            limiter.settle(model, *usage)
        limiter.tighten(model, provider_feedback(headers, status, time.time()))
    except redis.RedisError as exc:
        log.warning("cannot update the rate limit after a call: %s", type(exc).__name__)


def provider_feedback(headers: Mapping[str, str], status: int, now: float) -> Feedback:
    """The provider's view of its limits: what remains, and how long everyone must wait
    (a 429's retry-after, or an exhausted request budget until its reset)."""
    remaining = tuple(_int_header(headers, name) for name in _REMAINING_HEADERS)
    block_s = 0.0
    if status == 429:
        block_s = _float_header(headers, "retry-after") or 1.0
    elif remaining[0] == 0:
        reset = _reset_time(headers.get("anthropic-ratelimit-requests-reset"))
        block_s = max(0.0, reset - now) if reset is not None else 0.0
    return Feedback(remaining=(remaining[0], remaining[1], remaining[2]), block_s=block_s)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = _float_header(headers, name)
    return None if value is None else int(value)


def _float_header(headers: Mapping[str, str], name: str) -> float | None:
    try:
        value = headers.get(name)
        return float(value) if value is not None else None
    except ValueError:
        return None


def _reset_time(value: str | None) -> float | None:
    """An RFC 3339 time (`2026-01-01T00:00:00Z`) as epoch seconds."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


