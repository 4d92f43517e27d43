"""The answers: values derived from the transcript that fit the requested schema (the rules
are in the package doc)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.dev.llm_stub.content import messages_text, output_schema
from scheduler.dev.llm_stub.tokens import count_tokens, truncate_to_tokens
from scheduler.dev.llm_stub.wire import ApiError

SUMMARY_WORDS = 12
LABEL_WORDS = 6
USER_ROLES = frozenset({"user", "customer", "caller", "human", "client", "visitor"})
FORMAT_SAMPLES: dict[str, str] = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uri": "https://example.com/",
}
REFUSAL_TEXT = "I can't help with analysing this conversation."

_TRANSCRIPT_SECTION = re.compile(r"<transcript>(.*?)</transcript>", re.DOTALL)
_ROLE_PREFIX = re.compile(r"^\s*([A-Za-z][\w-]{0,30})\s*:\s*(.*)$")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


# --- transcript -------------------------------------------------------------------------------


def transcript_of(messages: Iterable[Any]) -> str:
    """The user text, narrowed to its ``<transcript>`` sections when it has any."""
    text = messages_text(messages, frozenset({"user"}))
    sections = _TRANSCRIPT_SECTION.findall(text)
    return "\n".join(section.strip() for section in sections) if sections else text


def first_user_line(transcript: str) -> str:
    """The first line spoken by the user, role prefix stripped; else the first non-empty line."""
    fallback = ""
    for line in transcript.splitlines():
        match = _ROLE_PREFIX.match(line)
        text = (match.group(2) if match else line).strip()
        if match and match.group(1).lower() in USER_ROLES and text:
            return text
        fallback = fallback or text
    return fallback


# --- values that fit a schema -----------------------------------------------------------------


@dataclass(frozen=True)
class _Derivation:
    """What every derived value depends on: the transcript and the root schema (for $ref)."""

    transcript: str
    root: Mapping[str, Any]

    def digest(self, name: str) -> int:
        return int(hashlib.sha256((self.transcript + name).encode()).hexdigest(), 16)

    def words(self, count: int) -> str:
        return " ".join(first_user_line(self.transcript).split()[:count])

    def first_number(self) -> str | None:
        match = _NUMBER.search(self.transcript)
        return match.group(0) if match else None


def derive(schema: Mapping[str, Any], transcript: str) -> Any:
    """A value that fits ``schema``, derived from the transcript (rules in the module doc)."""
    return _value(schema, "", _Derivation(transcript, schema))


def _value(schema: Mapping[str, Any], name: str, ctx: _Derivation) -> Any:
    schema = _resolve(schema, ctx.root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return _enum_value(list(schema["enum"]), name, ctx)
    branches = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if branches:
        return _value(_first_non_null(branches), name, ctx)
    return _TYPE_RULES[_schema_type(schema)](schema, name, ctx)


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/X``), as pydantic-made schemas use them."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, Mapping) else {}
    return _resolve(target, root) if isinstance(target, Mapping) else {}


def _first_non_null(branches: list[Any]) -> Mapping[str, Any]:
    for branch in branches:
        if isinstance(branch, Mapping) and branch.get("type") != "null":
            return branch
    return {"type": "null"}


def _schema_type(schema: Mapping[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((kind for kind in declared if kind != "null"), "null")
    if isinstance(declared, str) and declared in _TYPE_RULES:
        return declared
    if "properties" in schema:
        return "object"
    return "array" if "items" in schema else "string"


def _enum_value(choices: list[Any], name: str, ctx: _Derivation) -> Any:
    candidates = [choice for choice in choices if choice is not None] or choices
    for choice in candidates:
        if _mentions(ctx.transcript, str(choice)):
            return choice
    return candidates[ctx.digest(name) % len(candidates)] if candidates else None


def _mentions(text: str, word: str) -> bool:
    pattern = rf"(?<!\w){re.escape(word)}(?!\w)"
    return bool(word) and re.search(pattern, text, re.IGNORECASE) is not None


def _object_value(schema: Mapping[str, Any], name: str, ctx: _Derivation) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    return {key: _value(sub, key, ctx) for key, sub in properties.items()}


def _array_value(schema: Mapping[str, Any], name: str, ctx: _Derivation) -> list[Any]:
    items = schema.get("items")
    count = max(1, int(schema.get("minItems", 1)))
    return [_value(items if isinstance(items, Mapping) else {}, name, ctx) for _ in range(count)]


def _boolean_value(schema: Mapping[str, Any], name: str, ctx: _Derivation) -> bool:
    return ctx.digest(name) % 2 == 0


def _number_value(schema: Mapping[str, Any], name: str, ctx: _Derivation) -> int | float:
    found = ctx.first_number()
    value: int | float = ctx.digest(name) % 10
    if found is not None:
        value = float(found) if "." in found else int(found)
    return _clamp(value, schema)


def _integer_value(schema: Mapping[str, Any], name: str, ctx: _Derivation) -> int:
    return int(_number_value(schema, name, ctx))


def _clamp(value: int | float, schema: Mapping[str, Any]) -> int | float:
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(high, int | float) and value > high:
        value = high
    return value


def _string_value(schema: Mapping[str, Any], name: str, ctx: _Derivation) -> str:
    sample = FORMAT_SAMPLES.get(str(schema.get("format", "")))
    if sample is None and name.lower().endswith("summary"):
        sample = ctx.words(SUMMARY_WORDS)
    if sample is None:
        sample = f"{name}: {ctx.words(LABEL_WORDS)}".rstrip()
    return _fit_length(sample, schema)


def _fit_length(text: str, schema: Mapping[str, Any]) -> str:
    text = text.ljust(int(schema.get("minLength", 0)), ".")
    limit = schema.get("maxLength")
    return text[: int(limit)] if isinstance(limit, int) else text


def _null_value(schema: Mapping[str, Any], name: str, ctx: _Derivation) -> None:
    return None


_TYPE_RULES = {
    "object": _object_value,
    "array": _array_value,
    "boolean": _boolean_value,
    "number": _number_value,
    "integer": _integer_value,
    "string": _string_value,
    "null": _null_value,
}


# --- answers ----------------------------------------------------------------------------------


def forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    tools = [tool for tool in body.get("tools") or [] if isinstance(tool, Mapping)]
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "any" and tools:
        return tools[0]
    if choice.get("type") != "tool":
        return None
    for tool in tools:
        if tool.get("name") == choice.get("name"):
            return tool
    raise ApiError(400, f"tool_choice: no tool named {choice.get('name')!r} in tools")


def _one_sentence(transcript: str) -> str:
    words = " ".join(transcript.split()[:SUMMARY_WORDS]).rstrip(".!?,;:")
    return f"The conversation is about: {words}." if words else "The conversation was empty."


def answer_content(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The content blocks and the stop reason (which kind of answer: see the module doc)."""
    transcript = transcript_of(body["messages"])
    tool = forced_tool(body)
    if tool is not None:
        schema = tool.get("input_schema") or {"type": "object"}
        block = {"type": "tool_use", "id": "toolu_" + secrets.token_hex(12), "name": tool["name"]}
        return [block | {"input": derive(schema, transcript)}], "tool_use"
    schema = output_schema(body)
    text = json.dumps(derive(schema, transcript)) if schema else _one_sentence(transcript)
    return _cut_to_max_tokens(text, int(body["max_tokens"]))


def _cut_to_max_tokens(text: str, max_tokens: int) -> tuple[list[dict[str, Any]], str]:
    if count_tokens(text) <= max_tokens:
        return [{"type": "text", "text": text}], "end_turn"
    return [{"type": "text", "text": truncate_to_tokens(text, max_tokens)}], "max_tokens"


def faulty_content(body: Mapping[str, Any], fault: str) -> tuple[list[dict[str, Any]], str]:
    """A 200 answer that is wrong in the way ``fault`` names (see the module doc)."""
    if fault == "refusal":
        return [{"type": "text", "text": REFUSAL_TEXT}], "refusal"
    content, _ = answer_content(body)
    block = content[0]
    text = block["text"] if block["type"] == "text" else json.dumps(block["input"])
    # Any proper prefix of a JSON object is not JSON, so half the real answer never parses.
    cut = [{"type": "text", "text": text[: max(1, len(text) // 2)]}]
    return cut, "max_tokens" if fault == "max_tokens" else "end_turn"
