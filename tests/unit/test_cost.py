"""Prices: the table of the settings, cache and batch multipliers (no services)."""

from __future__ import annotations

import math

from shared.pricing import Tokens, cost_usd, prices_for
from shared.settings import Settings


def test_plain_input_and_output() -> None:
    settings = Settings()
    usd = cost_usd(settings, "claude-haiku-4-5", Tokens(input=1_000_000, output=1_000_000))
    assert math.isclose(usd, 1.0 + 5.0)


def test_cache_multipliers_and_batch_discount() -> None:
    settings = Settings()
    tokens = Tokens(cache_write=1_000_000, cache_read=1_000_000)
    assert math.isclose(cost_usd(settings, "claude-sonnet-4-5", tokens), 3 * 1.25 + 3 * 0.1)
    assert math.isclose(cost_usd(settings, "claude-sonnet-4-5", tokens, "batch"),
                        (3 * 1.25 + 3 * 0.1) * 0.5)


def test_unknown_model_is_priced_as_the_default() -> None:
    settings = Settings()
    assert prices_for(settings, "gpt-4o") == prices_for(settings, settings.default_model)


def test_prices_are_configurable(monkeypatch: object) -> None:
    settings = Settings(BACKFILL_LLM_PRICES={"claude-haiku-4-5": (2.0, 4.0)})
    assert prices_for(settings, "claude-haiku-4-5") == (2.0, 4.0)


def test_tokens_add_up() -> None:
    assert Tokens(1, 2, 3, 4) + Tokens(10, 20, 30, 40) == Tokens(11, 22, 33, 44)
