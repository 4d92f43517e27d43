"""What LLM tokens cost: the price table of the settings, with cache and batch multipliers,
and the provider's billing rule that decides whether a prefix is cached at all.

Used by the scheduler for `preview` estimates and each job's `usage`, and by the write path
of both sides for what a job has spent against its budget. Prices are configurable defaults
(BACKFILL_LLM_PRICES), not a bill: the provider's invoice is the truth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from shared.settings import Settings
from shared.vocabulary import Mode

PER_MTOK = 1_000_000
# The minimum cacheable prefix of a model missing from BACKFILL_CACHE_MIN_TOKENS (most
# models' minimum).
DEFAULT_MIN_CACHEABLE_TOKENS: Final = 1024
# The provider names a model with a date suffix or `-latest`, and the first release of a
# family also as `-0`: all name the same model.
_DATE_SUFFIX = re.compile(r"[-@](?:\d{8}|latest)$")
_FIRST_RELEASE_ALIASES: Final = {"claude-sonnet-4-0": "claude-sonnet-4",
                                 "claude-opus-4-0": "claude-opus-4"}


@dataclass(frozen=True)
class Tokens:
    """Token counts as the API reports them: `input` excludes cache reads and writes."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.input + other.input, self.output + other.output,
                      self.cache_read + other.cache_read, self.cache_write + other.cache_write)


def model_family(model: str) -> str:
    """The model id without a date or `-latest` suffix: `claude-haiku-4-5-20251001` and
    `claude-haiku-4-5` are both `claude-haiku-4-5`."""
    base = _DATE_SUFFIX.sub("", model.strip().lower())
    return _FIRST_RELEASE_ALIASES.get(base, base)


def prices_for(settings: Settings, model: str) -> tuple[float, float]:
    """(input, output) USD per million tokens; an unknown model is priced as the default."""
    table = settings.llm_prices
    return (table.get(model) or table.get(model_family(model))
            or table.get(settings.default_model) or (0.0, 0.0))


def min_cacheable_tokens(settings: Settings, model: str) -> int:
    """Below this many tokens the provider caches no prefix of `model`."""
    table = settings.cache_min_tokens
    return table.get(model) or table.get(model_family(model)) or DEFAULT_MIN_CACHEABLE_TOKENS


def cost_usd(settings: Settings, model: str, tokens: Tokens, mode: Mode = "live") -> float:
    input_price, output_price = prices_for(settings, model)
    input_equivalent = (tokens.input
                        + tokens.cache_write * settings.price_cache_write_multiplier
                        + tokens.cache_read * settings.price_cache_read_multiplier)
    usd = (input_equivalent * input_price + tokens.output * output_price) / PER_MTOK
    return usd * (settings.price_batch_multiplier if mode == "batch" else 1.0)
