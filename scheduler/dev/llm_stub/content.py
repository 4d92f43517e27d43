"""The text that a request's content blocks carry.

Read by the token counter (what is billed), the answers (the transcript) and the fault rules
(the ``session_id=<ID>`` markers), so all three see a block the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def block_text(block: Any) -> str:
    """The text a content block contributes; blocks other than text and tool_result count by
    their JSON (without ``cache_control``, which is a marker, not content)."""
    if isinstance(block, str):
        return block
    if not isinstance(block, Mapping):
        return json.dumps(block)
    if block.get("type") == "text":
        return str(block.get("text", ""))
    if block.get("type") == "tool_result":
        return content_text(block.get("content", ""))
    return json.dumps({k: v for k, v in block.items() if k != "cache_control"}, sort_keys=True)


def content_blocks(content: Any) -> list[Any]:
    """A message's content as a list of blocks (a plain string is one text block)."""
    return list(content) if isinstance(content, list) else [content]


def content_text(content: Any) -> str:
    return "\n".join(block_text(block) for block in content_blocks(content))


def messages_text(messages: Iterable[Any], roles: frozenset[str] | None = None) -> str:
    """The text of every message (or of those whose role is in ``roles``), one per line."""
    parts = [
        content_text(message.get("content", ""))
        for message in messages
        if isinstance(message, Mapping) and (roles is None or message.get("role") in roles)
    ]
    return "\n".join(parts)
