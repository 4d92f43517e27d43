"""What the stand-in bills: blocks in cache order with fixed overheads, per-model minimums."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.dev.llm_stub.billing import (
    MIN_CACHEABLE_PREFIX_TOKENS,
    PromptCache,
    cacheable_prefix,
    compute_usage,
    count_input_tokens,
    min_cacheable_tokens,
    prompt_blocks,
)
from scheduler.dev.llm_stub.tokens import count_tokens

HELLO = {"model": "claude-haiku-4-5", "max_tokens": 10,
         "messages": [{"role": "user", "content": "Hello, world!"}]}
SCHEMA = {"type": "object"}  # {"|type|":"|object|"}: 5 tokens
TOOL = {"name": "record", "description": "Record it.", "input_schema": SCHEMA}
ANSWER = [{"type": "text", "text": "Hello, world!"}]


def with_(**parts: Any) -> dict[str, Any]:
    return {**HELLO, **parts}


@pytest.mark.parametrize(("body", "tokens"), [
    (HELLO, 4 + 3 + 1 + 4),  # request + message + block + "Hello|,| world|!"
    (with_(system="You analyse calls."), 12 + 3 + 1 + 4),  # + system + block + 4 tokens
    (with_(system=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]), 12 + 3 + 2 + 2),
    (with_(output_config={"format": {"type": "json_schema", "schema": SCHEMA}}), 12 + 40 + 5),
    (with_(tools=[TOOL]), 12 + 8 + 1 + 3 + 5),  # + tool + "record" + "Record| it|." + schema
    (with_(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Hello, world!"},
        {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "ok"}]},
    ]}]), 12 + 1 + 1),  # a second block of the same message: + block + "ok"
    (with_(messages=[{"role": "user", "content": "Hello, world!"},
                     {"role": "assistant", "content": "Hi."}]), 12 + 3 + 1 + 2),
])
def test_every_block_counts_with_its_overhead(body: dict[str, Any], tokens: int) -> None:
    assert count_input_tokens(body) == tokens


def test_other_blocks_count_by_their_json() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    body = with_(messages=[{"role": "user", "content": [image]}])
    assert count_input_tokens(body) == 4 + 3 + 1 + count_tokens(
        '{"type":"image","source":{"type":"url","url":"https://example.com/a.png"}}')


def test_cache_order_is_tools_schema_system_messages() -> None:
    body = with_(tools=[TOOL], system="You analyse calls.",
                 output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
    assert [block.tokens for block in prompt_blocks(body)] == [17, 45, 8, 8]


@pytest.mark.parametrize(("marked", "prefix_tokens"), [
    ("tool", 17), ("system", 17 + 45 + 8), ("top-level", 17 + 45 + 8 + 8), ("none", 0),
])
def test_the_prefix_runs_through_the_last_marked_block(marked: str, prefix_tokens: int) -> None:
    mark = {"cache_control": {"type": "ephemeral"}}
    tool = TOOL | mark if marked == "tool" else TOOL
    system = [{"type": "text", "text": "You analyse calls."} | (mark if marked == "system" else {})]
    body = with_(tools=[tool], system=system, **(mark if marked == "top-level" else {}),
                 output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
    assert sum(block.tokens for block in cacheable_prefix(prompt_blocks(body))) == prefix_tokens


@pytest.mark.parametrize(("model", "minimum"), [
    ("claude-haiku-4-5", 4096), ("claude-haiku-4-5-20251001", 4096),
    ("claude-opus-4-5-20251101", 4096), ("claude-opus-4-6", 4096),
    ("claude-sonnet-4-6", 2048), ("claude-3-5-haiku-latest", 2048),
    ("claude-3-5-haiku-20241022", 2048),
    ("claude-sonnet-4-5", 1024), ("claude-sonnet-4-5-20250929", 1024),
    ("claude-sonnet-4-20250514", 1024), ("claude-sonnet-4-0", 1024),
    ("claude-opus-4-1-20250805", 1024), ("claude-opus-4-20250514", 1024),
    ("claude-something-new", 1024),
])
def test_minimum_cacheable_prefix_per_model(model: str, minimum: int) -> None:
    assert min_cacheable_tokens(model) == minimum


def test_the_table_holds_the_providers_models_without_dates() -> None:
    assert dict(MIN_CACHEABLE_PREFIX_TOKENS) == {
        "claude-haiku-4-5": 4096, "claude-opus-4-5": 4096, "claude-opus-4-6": 4096,
        "claude-sonnet-4-6": 2048, "claude-3-5-haiku": 2048,
        "claude-sonnet-4-5": 1024, "claude-sonnet-4": 1024, "claude-opus-4-1": 1024,
        "claude-opus-4": 1024,
    }


def marked_body(model: str, copies: int) -> dict[str, Any]:
    rules = " ".join(["Follow the rules."] * copies)  # 4 tokens a copy: "Follow| the| rules|."
    return {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "system": [{"type": "text", "text": rules, "cache_control": {"type": "ephemeral"}}]}


@pytest.mark.parametrize(("model", "copies", "cached"), [
    ("claude-haiku-4-5", 1022, False),  # system + block overheads 4, + 4,088 = 4,092 < 4,096
    ("claude-haiku-4-5", 1023, True),  # 4 + 4,092 = 4,096
    ("claude-sonnet-4-6", 511, True), ("claude-sonnet-4-6", 510, False),
    ("claude-sonnet-4-5", 255, True), ("claude-sonnet-4-5", 254, False),
])
def test_a_prefix_below_the_minimum_is_plain_input(model: str, copies: int, cached: bool) -> None:
    body = marked_body(model, copies)
    cache = PromptCache()
    first, second = compute_usage(cache, body, ANSWER), compute_usage(cache, body, ANSWER)
    total = count_input_tokens(body)
    for usage in (first, second):
        assert (usage["input_tokens"] + usage["cache_creation_input_tokens"]
                + usage["cache_read_input_tokens"]) == total
    prefix = 4 + 4 * copies
    if cached:
        assert (first["cache_creation_input_tokens"], second["cache_read_input_tokens"]) == (
            prefix, prefix)
        assert first["input_tokens"] == second["input_tokens"] == total - prefix
    else:
        assert first == second
        assert first["input_tokens"] == total
        assert first["cache_creation_input_tokens"] == first["cache_read_input_tokens"] == 0


def test_the_cache_is_per_model_and_a_dated_id_is_the_same_model() -> None:
    cache = PromptCache()
    assert compute_usage(cache, marked_body("claude-sonnet-4-5", 300), ANSWER)[
        "cache_creation_input_tokens"] > 0
    assert compute_usage(cache, marked_body("claude-sonnet-4-5-20250929", 300), ANSWER)[
        "cache_read_input_tokens"] > 0
    assert compute_usage(cache, marked_body("claude-opus-4-1", 300), ANSWER)[
        "cache_creation_input_tokens"] > 0


def test_output_tokens_count_the_answer_text() -> None:
    tool_use = [{"type": "tool_use", "id": "toolu_1", "name": "record", "input": {"a": 1}}]
    assert compute_usage(PromptCache(), HELLO, ANSWER)["output_tokens"] == 4
    # "record" + {"|a|":|1|}
    assert compute_usage(PromptCache(), HELLO, tool_use)["output_tokens"] == 1 + 5
