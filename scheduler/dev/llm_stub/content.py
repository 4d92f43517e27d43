"""The parts of a request that several modules read: the text of content blocks, the
structured-output schema.

Read by the bill (what is counted), the answers (the transcript, the schema to fit) and the
fault rules (the ``session_id=<ID>`` markers), so all of them see a request the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.dev.llm_stub.wire import ApiError


def compact_json(value: Any) -> str:
    """JSON as the bill counts it: compact, non-ASCII characters as themselves."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def block_text(block: Any) -> str:
    """The text a content block contributes; blocks other than text and tool_result count by
    their JSON (without ``cache_control``, which is a marker, not content)."""
    if isinstance(block, str):
        return block
    if not isinstance(block, Mapping):
        return compact_json(block)
    if block.get("type") == "text":
        return str(block.get("text", ""))
    if block.get("type") == "tool_result":
        return content_text(block.get("content", ""))
    return compact_json({k: v for k, v in block.items() if k != "cache_control"})


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


def output_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``output_config.format.schema`` when the format is ``json_schema``, else None."""
    output_format = (body.get("output_config") or {}).get("format") or {}
    if output_format.get("type") != "json_schema":
        return None
    schema = output_format.get("schema")
    if not isinstance(schema, Mapping):
        raise ApiError(400, "output_config.format.schema: must be an object")
    return schema
