"""The product's copy of the provider's cache minimums (`BACKFILL_CACHE_MIN_TOKENS`) is the
stand-in's, model for model, so an estimate assumes caching exactly where the bill has it."""

from __future__ import annotations

import pytest

from scheduler.dev.llm_stub import (
    DEFAULT_MIN_CACHEABLE_PREFIX_TOKENS,
    MIN_CACHEABLE_PREFIX_TOKENS,
    min_cacheable_tokens,
)
from shared.pricing import DEFAULT_MIN_CACHEABLE_TOKENS
from shared.pricing import min_cacheable_tokens as product_minimum
from shared.settings import Settings

SETTINGS = Settings()


def test_the_tables_list_the_same_models() -> None:
    assert SETTINGS.cache_min_tokens == dict(MIN_CACHEABLE_PREFIX_TOKENS)
    assert DEFAULT_MIN_CACHEABLE_TOKENS == DEFAULT_MIN_CACHEABLE_PREFIX_TOKENS


@pytest.mark.parametrize("model", sorted(MIN_CACHEABLE_PREFIX_TOKENS))
@pytest.mark.parametrize("spelling", ["{}", "{}-20251001", "{}-latest", " {} ", "{}@20250929"])
def test_every_model_and_spelling_has_the_stand_ins_minimum(model: str, spelling: str) -> None:
    name = spelling.format(model)
    assert product_minimum(SETTINGS, name) == min_cacheable_tokens(name)


@pytest.mark.parametrize("model", ["claude-sonnet-4-0", "claude-opus-4-0", "gpt-4.1",
                                   "claude-unknown-9"])
def test_aliases_and_unknown_models_agree(model: str) -> None:
    assert product_minimum(SETTINGS, model) == min_cacheable_tokens(model)


def test_the_documented_minimums() -> None:
    """DESIGN "Spend control": 4,096 / 2,048 / 1,024 tokens by model."""
    assert {model: product_minimum(SETTINGS, model) for model in (
        "claude-haiku-4-5", "claude-opus-4-5", "claude-opus-4-6", "claude-sonnet-4-6",
        "claude-3-5-haiku", "claude-sonnet-4-5", "claude-sonnet-4", "claude-opus-4-1",
        "claude-opus-4")} == {
        "claude-haiku-4-5": 4096, "claude-opus-4-5": 4096, "claude-opus-4-6": 4096,
        "claude-sonnet-4-6": 2048, "claude-3-5-haiku": 2048, "claude-sonnet-4-5": 1024,
        "claude-sonnet-4": 1024, "claude-opus-4-1": 1024, "claude-opus-4": 1024}


def test_the_table_is_configurable() -> None:
    settings = Settings(BACKFILL_CACHE_MIN_TOKENS={"claude-haiku-4-5": 2048})
    assert product_minimum(settings, "claude-haiku-4-5-20251001") == 2048
    assert product_minimum(settings, "claude-sonnet-4-5") == DEFAULT_MIN_CACHEABLE_TOKENS
