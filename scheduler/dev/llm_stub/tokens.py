"""Token counts and usage: what a request is billed, prompt cache included."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from scheduler.dev.llm_stub.content import block_text, content_blocks

CACHE_TTL_SECONDS = 300.0
MIN_CACHEABLE_TOKENS = 1024
CHARS_PER_TOKEN = 4


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


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _prompt_blocks(body: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """(text, carries cache_control) per prompt block, in cache order: tools, system, messages."""
    blocks = [(json.dumps(tool, sort_keys=True), _marked(tool)) for tool in body.get("tools") or []]
    system = body.get("system") or []
    for block in [system] if isinstance(system, str) else system:
        blocks.append((block_text(block), _marked(block)))
    for message in body.get("messages", []):
        for block in content_blocks(message.get("content", "")):
            blocks.append((block_text(block), _marked(block)))
    if body.get("cache_control") and blocks:
        blocks[-1] = (blocks[-1][0], True)
    return blocks


def _marked(block: Any) -> bool:
    return isinstance(block, Mapping) and bool(block.get("cache_control"))


def count_input_tokens(body: Mapping[str, Any]) -> int:
    return math.ceil(sum(len(text) for text, _ in _prompt_blocks(body)) / CHARS_PER_TOKEN)


def compute_usage(cache: PromptCache, body: Mapping[str, Any], output: str) -> dict[str, int]:
    """Token usage, splitting off a cached prefix as the real prompt cache does."""
    blocks = _prompt_blocks(body)
    total = sum(len(text) for text, _ in blocks)
    cut = max((i + 1 for i, (_, marked) in enumerate(blocks) if marked), default=0)
    prefix = blocks[:cut]
    prefix_chars = sum(len(text) for text, _ in prefix)
    tokens = _chars_to_tokens
    usage = {"input_tokens": tokens(total), "output_tokens": count_tokens(output)}
    usage |= {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if cut and tokens(prefix_chars) >= MIN_CACHEABLE_TOKENS:
        key = _prefix_key(str(body["model"]), [text for text, _ in prefix])
        field_name = "cache_read" if cache.prefix_seen(key, time.monotonic()) else "cache_creation"
        usage[f"{field_name}_input_tokens"] = tokens(prefix_chars)
        usage["input_tokens"] = tokens(total - prefix_chars)
    return usage


def _chars_to_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def _prefix_key(model: str, texts: list[str]) -> str:
    # The cache is per model, as the real one is.
    return hashlib.sha256(json.dumps([model, texts]).encode()).hexdigest()
