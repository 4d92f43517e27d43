"""The worker's LLM call policy: one Messages request through the real anthropic SDK.

Before each call the global rate limit (`shared.ratelimit`) is asked for capacity; after it,
the buckets are corrected with the real usage and tightened from the provider's rate-limit
headers. Errors are wrapped here into the item's error kinds (`shared.llm`). Every request is
counted by status and timed, and every wait for capacity is timed (`shared.metrics`). The answer is
decoded from the response body once, as JSON: the pipeline reads it as a plain mapping, so no
SDK model objects are built and thrown away per session.
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
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis

from shared import errors, metrics
from shared.broker import redis_client_url
from shared.llm import api_key, local_token_estimate, make_client, wrap_api_error
from shared.ratelimit import Cost, Feedback, Limits, RateLimiter
from shared.settings import Settings

if TYPE_CHECKING:
    import anthropic

log = logging.getLogger("backfill.worker")


@dataclass(frozen=True)
class Reply:
    """A decoded Messages answer and how long the call took."""

    message: dict[str, Any]
    latency_ms: int


@dataclass(frozen=True)
class CallPolicy:
    """What every call of one worker process shares."""

    limiter: RateLimiter | None = None
    prompt_caching: bool = True
    max_wait_s: float = 0.0
    output_estimate_tokens: int = 0


class Caller:
    """The process's SDK client with its call policy; closing it closes both the HTTP pool and
    the rate limiter's Redis connection."""

    def __init__(self, client: anthropic.Anthropic, policy: CallPolicy) -> None:
        self.client = client
        self.policy = policy

    def complete(self, request: dict[str, Any]) -> Reply:
        return complete(self.client, self.policy, request)

    def close(self) -> None:
        self.client.close()
        if self.policy.limiter is not None:
            self.policy.limiter.close()

    def __enter__(self) -> Caller:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def make_caller(settings: Settings) -> Caller:
    return Caller(make_client(settings), make_policy(settings))


def make_policy(settings: Settings) -> CallPolicy:
    return CallPolicy(
        limiter=make_limiter(settings, api_key(settings)),
        prompt_caching=settings.prompt_caching, max_wait_s=settings.rl_max_wait_s,
        output_estimate_tokens=settings.rl_output_estimate_tokens,
    )


def rate_limits(settings: Settings) -> Limits:
    return Limits(
        requests=settings.rl_requests_per_min,
        input_tokens=settings.rl_input_tokens_per_min,
        output_tokens=settings.rl_output_tokens_per_min,
        period_s=settings.rl_period_s,
        burst_share=settings.rl_burst_share,
        safety_share=settings.rl_safety_share,
        share=settings.rl_share,
    )


def make_limiter(settings: Settings, key: str) -> RateLimiter | None:
    """None when no limit is configured (the default): no Redis round trip per call."""
    limits = rate_limits(settings)
    if not limits.enabled:
        return None
    connection = redis.Redis.from_url(redis_client_url(settings.require_broker_url()),
                                      socket_timeout=5, socket_connect_timeout=5)
    return RateLimiter(connection, key, limits)


def complete(client: anthropic.Anthropic, policy: CallPolicy, request: dict[str, Any]) -> Reply:
    """Send one request; return the decoded answer or raise an AnalysisError subclass."""
    import anthropic

    if not policy.prompt_caching:
        request = without_cache_control(request)
    limiter, model = policy.limiter, str(request["model"])
    estimate = Cost()  # what the limiter reserved for this call; only read when there is one
    if limiter is not None:
        # Only a limiter needs the estimate (it serialises the prompt to count its characters).
        estimate = estimate_cost(request, policy.output_estimate_tokens)
        wait_for_capacity(limiter, model, estimate, policy.max_wait_s)
    started = time.monotonic()
    try:
        raw = client.messages.with_raw_response.create(**request)
        metrics.count_llm_request(model, str(raw.status_code), time.monotonic() - started)
        message = raw.json()
    except anthropic.APIStatusError as exc:
        metrics.count_llm_request(model, str(exc.status_code), time.monotonic() - started)
        if limiter is not None:
            _after_call(limiter, model, exc.response.headers, exc.status_code)
        raise wrap_api_error(exc) from exc
    except anthropic.APIError as exc:
        metrics.count_llm_request(model, _unanswered_status(exc), None)
        raise wrap_api_error(exc) from exc
    except ValueError as exc:  # a 200 whose body is not JSON: the provider's fault, transient
        raise errors.LLMServerError("the provider's answer is not JSON") from exc
    latency_ms = int((time.monotonic() - started) * 1000)
    if not isinstance(message, dict):
        raise errors.LLMServerError("the provider answered something that is not a message")
    if limiter is not None:
        _after_call(limiter, model, raw.headers, 200, (estimate, used_cost(message)))
    return Reply(message, latency_ms)


def _unanswered_status(exc: Exception) -> str:
    """The status label of a request that got no HTTP answer."""
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):
        return "timeout"
    return "connection" if isinstance(exc, anthropic.APIConnectionError) else "error"


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
    return Cost(requests=1, input_tokens=local_token_estimate(len(prompt)),
                output_tokens=output)


def used_cost(message: Mapping[str, Any]) -> Cost:
    """What counts against the provider's input-token limit: uncached input plus cache
    writes (cache reads do not count for current models)."""
    usage = message.get("usage") or {}
    written = usage.get("cache_creation_input_tokens") or 0
    return Cost(requests=1, input_tokens=(usage.get("input_tokens") or 0) + written,
                output_tokens=usage.get("output_tokens") or 0)


def wait_for_capacity(limiter: RateLimiter, model: str, cost: Cost, max_wait_s: float) -> None:
    """Wait, bounded, for the buckets to hold `cost`; past the bound the item goes back to
    `pending` through the retry path (`llm_rate_limited`) instead of holding a worker thread."""
    started = time.monotonic()
    try:
        _wait_until_taken(limiter, model, cost, started + max_wait_s, max_wait_s)
    finally:
        metrics.RATELIMIT_WAIT.observe(time.monotonic() - started)


def _wait_until_taken(limiter: RateLimiter, model: str, cost: Cost, deadline: float,
                      max_wait_s: float) -> None:
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


_LIMITED = ("requests", "input-tokens", "output-tokens")
_REMAINING_HEADERS = tuple(f"anthropic-ratelimit-{name}-remaining" for name in _LIMITED)
_LIMIT_HEADERS = tuple(f"anthropic-ratelimit-{name}-limit" for name in _LIMITED)


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
    """The provider's view of its limits: what remains of each and what each is, and how
    long everyone must wait (a 429's retry-after, or an exhausted request budget until its
    reset)."""
    remaining = tuple(_int_header(headers, name) for name in _REMAINING_HEADERS)
    limits = tuple(_int_header(headers, name) for name in _LIMIT_HEADERS)
    block_s = 0.0
    if status == 429:
        block_s = _float_header(headers, "retry-after") or 1.0
    elif remaining[0] == 0:
        reset = _reset_time(headers.get("anthropic-ratelimit-requests-reset"))
        block_s = max(0.0, reset - now) if reset is not None else 0.0
    return Feedback(remaining=(remaining[0], remaining[1], remaining[2]), block_s=block_s,
                    limits=(limits[0], limits[1], limits[2]))


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


