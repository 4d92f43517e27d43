"""What a request is billed: its prompt blocks in cache order, each model's minimum
cacheable prefix, the prompt cache, and the usage of an answer (rules in the package doc)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from scheduler.dev.llm_stub.content import (
    block_text,
    compact_json,
    content_blocks,
    output_schema,
)
from scheduler.dev.llm_stub.tokens import count_tokens

CACHE_TTL_SECONDS = 300.0

# The provider's rule: a marked prefix shorter than this many tokens is not cached (it is
# billed as plain input and nothing is written). Keys are model ids without a date suffix.
# Written out here, not read from `shared.settings.cache_min_tokens`: the stand-in plays the
# provider, so a wrong figure in our settings shows as a wrong estimate in the tests instead
# of agreeing with itself.
MIN_CACHEABLE_PREFIX_TOKENS: Mapping[str, int] = MappingProxyType({
    "claude-haiku-4-5": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-6": 4096,
    "claude-sonnet-4-6": 2048,
    "claude-3-5-haiku": 2048,
    "claude-sonnet-4-5": 1024,
    "claude-sonnet-4": 1024,
    "claude-opus-4-1": 1024,
    "claude-opus-4": 1024,
})
DEFAULT_MIN_CACHEABLE_PREFIX_TOKENS = 1024
# The provider's aliases that name a model without its date ("-0" for the first release).
_MODEL_ALIASES: Mapping[str, str] = MappingProxyType({
    "claude-sonnet-4-0": "claude-sonnet-4",
    "claude-opus-4-0": "claude-opus-4",
})
_DATE_SUFFIX = re.compile(r"[-@](?:\d{8}|latest)$")

# Fixed overheads, in tokens: the framing the provider adds around what the request holds.
REQUEST_OVERHEAD = 4  # start of the conversation and the assistant's cue; never cached
SYSTEM_OVERHEAD = 3  # the system prompt's framing, once, on its first block
MESSAGE_OVERHEAD = 3  # a message's role and end-of-turn markers, on its first block
BLOCK_OVERHEAD = 1  # every content block, system blocks included
TOOL_OVERHEAD = 8  # every tool definition
OUTPUT_SCHEMA_OVERHEAD = 40  # the instruction to answer with JSON that fits the schema


def model_family(model: str) -> str:
    """The model id without a date or ``-latest`` suffix: ``claude-haiku-4-5-20251001``,
    ``claude-haiku-4-5`` → ``claude-haiku-4-5``; ``claude-3-5-haiku-latest`` →
    ``claude-3-5-haiku``."""
    base = _DATE_SUFFIX.sub("", model.strip().lower())
    return _MODEL_ALIASES.get(base, base)


def min_cacheable_tokens(model: str) -> int:
    """The minimum cacheable prefix of ``model``; an unknown model gets the default."""
    return MIN_CACHEABLE_PREFIX_TOKENS.get(model_family(model), DEFAULT_MIN_CACHEABLE_PREFIX_TOKENS)


@dataclass(frozen=True)
class PromptBlock:
    """One billed part of the prompt: its text (what the cache key sees), its tokens
    (overheads included) and whether it carries ``cache_control``."""

    text: str
    tokens: int
    marked: bool


def prompt_blocks(body: Mapping[str, Any]) -> list[PromptBlock]:
    """Every billed block in cache order: tools, output schema, system, messages. A top-level
    ``cache_control`` marks the last block."""
    blocks = [*_tool_blocks(body), *_schema_blocks(body), *_system_blocks(body),
              *_message_blocks(body)]
    if body.get("cache_control") and blocks:
        last = blocks[-1]
        blocks[-1] = PromptBlock(last.text, last.tokens, marked=True)
    return blocks


def _tool_blocks(body: Mapping[str, Any]) -> Iterator[PromptBlock]:
    for tool in body.get("tools") or []:
        if not isinstance(tool, Mapping):
            continue
        name, description = str(tool.get("name", "")), str(tool.get("description", ""))
        schema = compact_json(tool.get("input_schema", {}))
        tokens = TOOL_OVERHEAD + count_tokens(name) + count_tokens(description)
        yield PromptBlock(compact_json([name, description, schema]),
                          tokens + count_tokens(schema), _marked(tool))


def _schema_blocks(body: Mapping[str, Any]) -> Iterator[PromptBlock]:
    schema = output_schema(body)
    if schema is not None:
        text = compact_json(schema)
        yield PromptBlock(text, OUTPUT_SCHEMA_OVERHEAD + count_tokens(text), marked=False)


def _system_blocks(body: Mapping[str, Any]) -> Iterator[PromptBlock]:
    system = body.get("system") or []
    for index, block in enumerate([system] if isinstance(system, str) else system):
        framing = BLOCK_OVERHEAD + (SYSTEM_OVERHEAD if index == 0 else 0)
        text = block_text(block)
        yield PromptBlock(text, framing + count_tokens(text), _marked(block))


def _message_blocks(body: Mapping[str, Any]) -> Iterator[PromptBlock]:
    for message in body.get("messages") or []:  # validated: objects with a role and content
        role = str(message.get("role", ""))
        for index, block in enumerate(content_blocks(message.get("content", ""))):
            framing = BLOCK_OVERHEAD + (MESSAGE_OVERHEAD if index == 0 else 0)
            text = block_text(block)
            # The role is part of the cache key: the same words from the other side differ.
            yield PromptBlock(f"{role}:{text}", framing + count_tokens(text), _marked(block))


def _marked(block: Any) -> bool:
    return isinstance(block, Mapping) and bool(block.get("cache_control"))


def count_input_tokens(body: Mapping[str, Any]) -> int:
    """Every input token the request is billed for, cached or not (what count_tokens says)."""
    return REQUEST_OVERHEAD + sum(block.tokens for block in prompt_blocks(body))


def cacheable_prefix(blocks: list[PromptBlock]) -> list[PromptBlock]:
    """The blocks up to and including the last one carrying ``cache_control``."""
    cut = max((index + 1 for index, block in enumerate(blocks) if block.marked), default=0)
    return blocks[:cut]


class PromptCache:
    """Cached prefixes by key, each alive for CACHE_TTL_SECONDS after its last use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}

    def prefix_seen(self, key: str, now: float) -> bool:
        """Whether the prefix is cached; either way it is (re)cached as of ``now``."""
        with self._lock:
            expired = [k for k, seen in self._seen.items() if now - seen > CACHE_TTL_SECONDS]
            for stale in expired:
                del self._seen[stale]
            hit = key in self._seen
            self._seen[key] = now
            return hit


def compute_usage(
    cache: PromptCache, body: Mapping[str, Any], content: list[dict[str, Any]]
) -> dict[str, int]:
    """The ``usage`` of an answer: a cached prefix at or above the model's minimum is a cache
    read (or write, the first time); everything else is ``input_tokens``."""
    blocks = prompt_blocks(body)
    total = REQUEST_OVERHEAD + sum(block.tokens for block in blocks)
    usage = {"input_tokens": total, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0, "output_tokens": count_tokens(output_text(content))}
    prefix = cacheable_prefix(blocks)
    prefix_tokens = sum(block.tokens for block in prefix)
    model = str(body["model"])
    if prefix and prefix_tokens >= min_cacheable_tokens(model):
        hit = cache.prefix_seen(_prefix_key(model, prefix), time.monotonic())
        usage["cache_read_input_tokens" if hit else "cache_creation_input_tokens"] = prefix_tokens
        usage["input_tokens"] = total - prefix_tokens
    return usage


def output_text(content: list[dict[str, Any]]) -> str:
    """What the model wrote: the text of text blocks, a tool call's name and input JSON."""
    parts = [str(block.get("text", "")) if block.get("type") == "text"
             else str(block.get("name", "")) + compact_json(block.get("input", {}))
             for block in content]
    return "".join(parts)


def _prefix_key(model: str, prefix: list[PromptBlock]) -> str:
    # Per model, as the real cache is; a dated id and its alias are the same model.
    texts = [block.text for block in prefix]
    return hashlib.sha256(json.dumps([model_family(model), texts]).encode()).hexdigest()
