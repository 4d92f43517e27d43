"""What LLM tokens cost: the price table of the settings, with cache and batch multipliers.

Used by the scheduler for `preview` estimates and each job's `usage`, and by the write path
of both sides for what a job has spent against its budget. Prices are configurable defaults
(BACKFILL_LLM_PRICES), not a bill: the provider's invoice is the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import Settings
from shared.vocabulary import Mode

PER_MTOK = 1_000_000


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


def prices_for(settings: Settings, model: str) -> tuple[float, float]:
    """(input, output) USD per million tokens; an unknown model is priced as the default."""
    table = settings.llm_prices
    return table.get(model) or table.get(settings.default_model) or (0.0, 0.0)


def cost_usd(settings: Settings, model: str, tokens: Tokens, mode: Mode = "live") -> float:
    input_price, output_price = prices_for(settings, model)
    input_equivalent = (tokens.input
                        + tokens.cache_write * settings.price_cache_write_multiplier
                        + tokens.cache_read * settings.price_cache_read_multiplier)
    usd = (input_equivalent * input_price + tokens.output * output_price) / PER_MTOK
    return usd * (settings.price_batch_multiplier if mode == "batch" else 1.0)
