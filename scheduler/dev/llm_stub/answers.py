"""The answers: values derived from the transcript that fit the requested schema (the rules
are in the package doc)."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from scheduler.dev.llm_stub.content import output_schema
from scheduler.dev.llm_stub.tokens import count_tokens, truncate_to_tokens
from scheduler.dev.llm_stub.transcript import (
    Reading,
    Word,
    choice_stems,
    count_cues,
    keywords,
    transcript_of,
)
from scheduler.dev.llm_stub.wire import ApiError

SUMMARY_WORDS = 12
LABEL_WORDS = 6
FORMAT_SAMPLES: dict[str, str] = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uri": "https://example.com/",
}
REFUSAL_TEXT = "I can't help with analysing this conversation."

# Cues, as lower-case words or phrases, matched word for word, not by stem: "book" is a
# request, "booked" an outcome.
YES_CUES = frozenset({("yes",), ("yeah",), ("yep",), ("yup",), ("sure",), ("correct",),
                      ("absolutely",), ("definitely",), ("certainly",), ("booked",),
                      ("confirmed",)})
NO_CUES = frozenset({("no",), ("nope",), ("not",), ("never",), ("cancel",), ("cancelled",),
                     ("canceled",)})
SUCCESS_CUES = frozenset({("booked",), ("confirmed",), ("resolved",), ("scheduled",),
                          ("refunded",), ("thank", "you"), ("thanks",), ("perfect",),
                          ("great",)})
FAILURE_CUES = frozenset({("cancel",), ("cancelled",), ("canceled",), ("not", "interested"),
                          ("hang", "up"), ("hung", "up"), ("complaint",), ("complain",),
                          ("unresolved",), ("wrong", "number")})
POSITIVE_CUES = frozenset({("thanks",), ("thank",), ("great",), ("perfect",), ("wonderful",),
                           ("excellent",), ("awesome",), ("amazing",), ("glad",), ("happy",),
                           ("appreciate",), ("helpful",), ("fantastic",), ("love",)})
NEGATIVE_CUES = frozenset({("angry",), ("terrible",), ("frustrated",), ("frustrating",),
                           ("awful",), ("horrible",), ("complaint",), ("complain",), ("upset",),
                           ("annoyed",), ("ridiculous",), ("worst",), ("disappointed",),
                           ("unacceptable",), ("useless",), ("hate",)})
# Fewer user words than this and there is nothing to judge the user's sentiment by.
MIN_USER_WORDS_FOR_SENTIMENT = 3


# --- values that fit a schema -----------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    """The property a value is for: its name and the description the schema gives it."""

    name: str
    description: str = ""

    def described(self, schema: Mapping[str, Any]) -> _Field:
        """The same field, with the schema's description if it has one (an ``anyOf`` wrapper
        carries it for its branches)."""
        description = schema.get("description")
        return replace(self, description=description) if isinstance(description, str) else self

    def stems(self) -> frozenset[str]:
        return keywords(self.name, self.description)


@dataclass(frozen=True)
class _Derivation:
    """What every derived value depends on: the transcript and the root schema (for $ref)."""

    reading: Reading
    root: Mapping[str, Any]

    def digest(self, name: str) -> int:
        return int(hashlib.sha256((self.reading.transcript + name).encode()).hexdigest(), 16)


def derive(schema: Mapping[str, Any], transcript: str) -> Any:
    """A value that fits ``schema``, derived from the transcript (rules in the package doc)."""
    return _value(schema, _Field(""), _Derivation(Reading(transcript), schema))


def _value(schema: Mapping[str, Any], field: _Field, ctx: _Derivation) -> Any:
    schema = _resolve(schema, ctx.root)
    field = field.described(schema)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return _enum_value(list(schema["enum"]), field, ctx)
    branches = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if branches:
        return _value(_first_non_null(branches), field, ctx)
    return _TYPE_RULES[_schema_type(schema)](schema, field, ctx)


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


# --- enum ---


def _enum_value(choices: list[Any], field: _Field, ctx: _Derivation) -> Any:
    candidates = [choice for choice in choices if choice is not None] or choices
    if not candidates:
        return None
    if field.name.lower().endswith("sentiment"):
        label = _sentiment(ctx.reading)
        matching = [choice for choice in candidates if str(choice).lower() == label.lower()]
        if matching:
            return matching[0]
    mentioned = _most_mentioned(candidates, ctx.reading)
    if mentioned is not None:
        return mentioned
    return candidates[ctx.digest(field.name) % len(candidates)]


def _most_mentioned(choices: list[Any], reading: Reading) -> Any | None:
    """The choice whose words the user said most often (then: said most often by anyone,
    then: said last by the user, then: first in choice order); None if none is said."""
    best: tuple[int, int, int] = (0, 0, -1)
    chosen = None
    for choice in choices:
        stems = choice_stems(str(choice))
        said = [word for word in reading.words if word.stem in stems]
        by_user = [word.position for word in said if word.by_user]
        score = (len(by_user), len(said), max(by_user, default=-1))
        if said and score > best:
            best, chosen = score, choice
    return chosen


def _sentiment(reading: Reading) -> str:
    """Positive or Negative by the balance of cue words in the user's turns; Neutral when
    they are even (or absent); Unknown when the user said almost nothing."""
    words = reading.user_words()
    if len(words) < MIN_USER_WORDS_FOR_SENTIMENT:
        return "Unknown"
    balance = count_cues(words, POSITIVE_CUES) - count_cues(words, NEGATIVE_CUES)
    return "Positive" if balance > 0 else "Negative" if balance < 0 else "Neutral"


# --- boolean ---


def _boolean_value(schema: Mapping[str, Any], field: _Field, ctx: _Derivation) -> bool:
    name = field.name.lower()
    is_verdict = name == "successful" or name.endswith("_successful")
    found = _succeeded(ctx.reading) if is_verdict else _answered_yes(field.stems(), ctx.reading)
    return found if found is not None else ctx.digest(field.name) % 2 == 0


def _succeeded(reading: Reading) -> bool | None:
    """By the balance of success and failure cues over every turn; None when even."""
    balance = count_cues(reading.words, SUCCESS_CUES) - count_cues(reading.words, FAILURE_CUES)
    return None if balance == 0 else balance > 0


def _answered_yes(stems: frozenset[str], reading: Reading) -> bool | None:
    """By the balance of yes and no cues in the user's turns about the field (turns that name
    one of its words, or answer a turn that does); None when even or never asked."""
    balance = 0
    for index, turn in enumerate(reading.turns):
        previous = reading.turns[index - 1] if index else None
        asked = previous is not None and not previous.by_user and reading.mentions(
            index - 1, stems)
        if turn.by_user and (asked or reading.mentions(index, stems)):
            words = reading.turn_words(index)
            balance += count_cues(words, YES_CUES) - _no_cues(words)
    return None if balance == 0 else balance > 0


def _no_cues(words: list[Word]) -> int:
    return count_cues(words, NO_CUES) + sum(word.text.endswith("n't") for word in words)


# --- number ---


def _number_value(schema: Mapping[str, Any], field: _Field, ctx: _Derivation) -> int | float:
    found = _nearest_number(field.stems(), ctx.reading)
    return _clamp(found if found is not None else ctx.digest(field.name) % 10, schema)


def _nearest_number(stems: frozenset[str], reading: Reading) -> int | float | None:
    """The number said nearest (in words) to one of the field's words, the earlier one on a
    tie; the first number when no field word is said; None when there is no number."""
    numbers = [word for word in reading.words if word.number is not None]
    anchors = [word.position for word in reading.words if word.stem in stems]
    if not numbers:
        return None
    if not anchors:
        return numbers[0].number
    nearest = min(numbers, key=lambda word: (
        min(abs(word.position - anchor) for anchor in anchors), word.position))
    return nearest.number


def _integer_value(schema: Mapping[str, Any], field: _Field, ctx: _Derivation) -> int:
    return int(_number_value(schema, field, ctx))


def _clamp(value: int | float, schema: Mapping[str, Any]) -> int | float:
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(high, int | float) and value > high:
        value = high
    return value


# --- string, object, array, null ---


def _string_value(schema: Mapping[str, Any], field: _Field, ctx: _Derivation) -> str:
    sample = FORMAT_SAMPLES.get(str(schema.get("format", "")))
    if sample is None and field.name.lower().endswith("summary"):
        sample = _first_words(ctx.reading.first_user_line(), SUMMARY_WORDS)
    if sample is None:
        line = _line_about(field.stems(), ctx.reading)
        sample = f"{field.name}: {_first_words(line, LABEL_WORDS)}".rstrip()
    return _fit_length(sample, schema)


def _first_words(line: str, count: int) -> str:
    return " ".join(line.split()[:count])


def _line_about(stems: frozenset[str], reading: Reading) -> str:
    """The first turn that names one of the field's words; else the first user line."""
    for index, turn in enumerate(reading.turns):
        if reading.mentions(index, stems):
            return turn.text
    return reading.first_user_line()


def _fit_length(text: str, schema: Mapping[str, Any]) -> str:
    text = text.ljust(int(schema.get("minLength", 0)), ".")
    limit = schema.get("maxLength")
    return text[: int(limit)] if isinstance(limit, int) else text


def _object_value(schema: Mapping[str, Any], field: _Field, ctx: _Derivation) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    return {key: _value(sub, _Field(key), ctx) for key, sub in properties.items()}


def _array_value(schema: Mapping[str, Any], field: _Field, ctx: _Derivation) -> list[Any]:
    items = schema.get("items")
    count = max(1, int(schema.get("minItems", 1)))
    item_schema = items if isinstance(items, Mapping) else {}
    return [_value(item_schema, field, ctx) for _ in range(count)]


def _null_value(schema: Mapping[str, Any], field: _Field, ctx: _Derivation) -> None:
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
