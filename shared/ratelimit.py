"""The global LLM rate limit: token buckets in Redis, shared by every worker process.

DESIGN "Rules of the architecture": Celery's `rate_limit` is per worker, so the limit lives
in Redis. One hash per API key and model, `bf:rl:{sha256(key)[:12]}:{model}`, holds three
buckets (requests, input tokens, output tokens per period). Each Lua script runs atomically
in Redis and reads Redis's own clock, so workers on hosts with skewed clocks agree.

Why not a plain "limit per minute" bucket: a bucket that holds a full minute's worth can
send the whole minute at once and then the refill, i.e. up to twice the limit within one
60 s window, which the provider answers with 429s. Here a bucket holds a small burst and
refills at slightly less than the limit, so no sliding window of the period ever sees more
than the limit (burst + refill × (period + network jitter) ≤ limit), while the mean stays
within a few per cent of it.

The provider's own view tightens ours: `*-remaining` headers lower a bucket to what is
left, and a 429's `retry-after` (or `remaining: 0` with its `reset`) blocks every worker
until then.

Backfills share the API key with the platform's live post-call analysis, so they may use only
a share `s` of each limit (`BACKFILL_RL_SHARE`): the buckets refill to `s × limit`, and a
bucket is lowered to what the provider says remains *minus* `(1 - s) × limit`, so when live
traffic leaves less headroom than that, backfills wait first and never take the last
`(1 - s) × limit` of a window. Below zero the bucket holds a debt: the further the window is
into the reserved part, the longer backfills wait.

Other endpoints with limits of their own (`count_tokens`) get buckets of their own: the same
key with the endpoint as a suffix.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Final

import redis

BUCKETS: Final[tuple[str, ...]] = ("requests", "input_tokens", "output_tokens")

# Refill + take, all three buckets or none. KEYS[1] = bucket hash, KEYS[2] = blocked-until key.
# ARGV: period_ms, then per bucket (limit, burst, rate_per_ms, cost). A limit of 0 is no limit.
# Returns the milliseconds to wait before trying again (0 = granted).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local blocked = tonumber(redis.call('GET', KEYS[2]) or '0')
if blocked > now then return blocked - now end
local period = tonumber(ARGV[1])
local last = tonumber(redis.call('HGET', KEYS[1], 'ts') or now)
local elapsed = math.max(0, now - last)
local levels = {}
local wait = 0
for i = 0, 2 do
  local limit = tonumber(ARGV[2 + i * 4])
  local burst = tonumber(ARGV[3 + i * 4])
  local rate = tonumber(ARGV[4 + i * 4])
  local cost = tonumber(ARGV[5 + i * 4])
  -- A call larger than the burst waits for a full bucket and leaves it in debt, so the
  -- long-run rate still holds.
  local needed = math.min(cost, burst)
  if limit > 0 then
    local level = tonumber(redis.call('HGET', KEYS[1], 'b' .. i) or burst)
    level = math.min(burst, level + elapsed * rate)
    levels[i] = {level, cost}
    if level < needed then
      wait = math.max(wait, math.ceil((needed - level) / rate))
    end
  end
end
if wait > 0 then return wait end
for i, entry in pairs(levels) do
  redis.call('HSET', KEYS[1], 'b' .. i, tostring(entry[1] - entry[2]))
end
redis.call('HSET', KEYS[1], 'ts', now)
redis.call('PEXPIRE', KEYS[1], period * 2)
return 0
"""

# Add a signed amount to each bucket (a refund when the call used less than its estimate, a
# debt when it used more). ARGV: per bucket (burst, delta). Debts may take a level below 0.
_ADJUST = """
for i = 0, 2 do
  local burst = tonumber(ARGV[1 + i * 2])
  local delta = tonumber(ARGV[2 + i * 2])
  local level = redis.call('HGET', KEYS[1], 'b' .. i)
  if level and delta ~= 0 then
    redis.call('HSET', KEYS[1], 'b' .. i, tostring(math.min(burst, tonumber(level) + delta)))
  end
end
return 0
"""

# The provider's view: lower each bucket to the headroom the provider leaves us ('' = not
# said; below 0 is a debt), and block everyone until ARGV[4] ms from now (0 = no block; a
# longer block is kept).
_TIGHTEN = """
for i = 0, 2 do
  local headroom = tonumber(ARGV[1 + i])
  local level = redis.call('HGET', KEYS[1], 'b' .. i)
  if headroom and level and tonumber(level) > headroom then
    redis.call('HSET', KEYS[1], 'b' .. i, tostring(headroom))
  end
end
local block_ms = tonumber(ARGV[4])
if block_ms > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  if now + block_ms > current then
    redis.call('SET', KEYS[2], now + block_ms, 'PX', block_ms)
  end
end
return 0
"""


@dataclass(frozen=True)
class Limits:
    """Per-period limits of one API key and model; 0 means unlimited."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    period_s: float = 60.0
    # Share of the limit a bucket may hold at once, and the share of the rate kept in
    # reserve for network jitter (see the module docstring).
    burst_share: float = 0.02
    safety_share: float = 0.02
    # The share of each limit backfills may use (the rest is live traffic's).
    share: float = 1.0

    @property
    def enabled(self) -> bool:
        return any(self.values())

    def configured(self) -> tuple[int, int, int]:
        """The provider's limits, as configured."""
        return (self.requests, self.input_tokens, self.output_tokens)

    def values(self) -> tuple[int, int, int]:
        """What the buckets hold to: the share of each limit (at least 1 of a set limit)."""
        requests, input_tokens, output_tokens = (
            max(1, math.floor(limit * self.share)) if limit else 0
            for limit in self.configured())
        return (requests, input_tokens, output_tokens)

    def reserve(self, limit: int) -> int:
        """What backfills leave to live traffic of a provider limit: (1 - share) × limit."""
        return math.ceil(limit * (1 - self.share))

    def burst(self, limit: int) -> int:
        return max(1, math.ceil(limit * self.burst_share)) if limit else 0

    def rate_per_ms(self, limit: int) -> float:
        """Refill so that burst + rate × period stays a safety share below the limit."""
        if not limit:
            return 0.0
        room = max(limit - self.burst(limit), 1)
        return room * (1 - self.safety_share) / (self.period_s * 1000)


@dataclass(frozen=True)
class Cost:
    requests: int = 1
    input_tokens: int = 0
    output_tokens: int = 0

    def values(self) -> tuple[int, int, int]:
        return (self.requests, self.input_tokens, self.output_tokens)


Triple = tuple[int | None, int | None, int | None]


@dataclass(frozen=True)
class Feedback:
    """What the provider said about its limits (requests, input and output tokens); None =
    not said."""

    remaining: Triple = (None, None, None)
    block_s: float = 0.0
    limits: Triple = (None, None, None)


def bucket_key(api_key: str, model: str) -> str:
    """The key never reaches Redis, only a short hash that tells keys apart."""
    digest = hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:12]
    return f"bf:rl:{digest}:{model}"


class RateLimiter:
    """Token buckets of one API key, one set per model (and per endpoint other than
    Messages: `endpoint` is the suffix of their keys)."""

    def __init__(self, client: redis.Redis, api_key: str, limits: Limits,
                 endpoint: str | None = None) -> None:
        self._redis = client
        self._api_key = api_key
        self._suffix = f":{endpoint}" if endpoint else ""
        self.limits = limits
        self._take = client.register_script(_TAKE)
        self._adjust = client.register_script(_ADJUST)
        self._tighten = client.register_script(_TIGHTEN)

    def close(self) -> None:
        self._redis.close()

    def _keys(self, model: str) -> list[str]:
        key = bucket_key(self._api_key, model) + self._suffix
        return [key, key + ":blocked"]

    def try_take(self, model: str, cost: Cost) -> float:
        """Take `cost` from every bucket at once; returns 0.0 when granted, else the seconds
        to wait before the buckets can hold it (nothing is taken then)."""
        args: list[Any] = [int(self.limits.period_s * 1000)]
        for limit, amount in zip(self.limits.values(), cost.values(), strict=True):
            args += [limit, self.limits.burst(limit), self.limits.rate_per_ms(limit), amount]
        wait_ms = int(self._take(keys=self._keys(model), args=args))
        return wait_ms / 1000

    def settle(self, model: str, estimate: Cost, actual: Cost) -> None:
        """Correct the buckets with what the call really used."""
        args: list[Any] = []
        for limit, guessed, used in zip(self.limits.values(), estimate.values(), actual.values(),
                                        strict=True):
            args += [self.limits.burst(limit), guessed - used if limit else 0]
        self._adjust(keys=self._keys(model), args=args)

    def tighten(self, model: str, feedback: Feedback) -> None:
        headroom = [
            "" if value is None else str(headroom_of(self.limits, value, given, configured))
            for value, given, configured in zip(feedback.remaining, feedback.limits,
                                                self.limits.configured(), strict=True)
        ]
        block_ms = max(0, math.ceil(feedback.block_s * 1000))
        self._tighten(keys=self._keys(model), args=[*headroom, block_ms])


def headroom_of(limits: Limits, remaining: int, provider_limit: int | None,
                configured: int) -> int:
    """What backfills may still take of a window the provider says has `remaining` left:
    all of it less the live traffic's reserve, `(1 - share) × limit` (the provider's limit
    when it says one, else the configured one). Below zero it is a debt, at most one
    bucket's worth of the period, so a deep debt never stalls backfills for more than about
    one period."""
    limit = provider_limit if provider_limit is not None else configured
    headroom = max(remaining, 0) - limits.reserve(limit)
    usable = max(1, math.floor(limit * limits.share)) if limit else 0
    return max(headroom, -usable)
