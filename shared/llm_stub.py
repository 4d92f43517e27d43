"""A local stand-in for the Anthropic Messages API, so the real SDK path runs in tests and demos.

Only the standard library is used, so the stub starts anywhere the project's code does.

Endpoints
---------
- ``POST /v1/messages``: the Messages API (non-streaming).
- ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}`` with the same estimate.
- ``GET /healthz``: ``{"ok": true}``.
Anything else is a 404 ``not_found_error``. Every error body is Anthropic-shaped:
``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}``.

Answers
-------
The answer is derived, deterministically, from the *transcript*: the text of every ``user``
message joined by newlines; where that text holds ``<transcript>…</transcript>`` sections, only
their inside counts (instructions around the transcript never steer the answer).

- A forced tool (``tool_choice`` ``{"type": "tool", "name": N}``, or ``{"type": "any"}`` = the
  first tool) gives one ``tool_use`` block whose ``input`` fits the tool's ``input_schema``,
  ``stop_reason: "tool_use"``.
- Else ``output_config.format`` of type ``json_schema`` gives one text block holding the JSON
  object, ``stop_reason: "end_turn"``.
- Else one text block with a one-sentence summary, ``stop_reason: "end_turn"``.
- Like the real API, a text answer longer than ``max_tokens`` is cut and
  ``stop_reason`` becomes ``"max_tokens"`` (the JSON then no longer parses).

Values that fit a JSON schema, with ``h = int(sha256(transcript + property_name), 16)``:

- ``$ref`` (``#/$defs/…``) is followed; ``const`` is returned as is.
- ``enum``: the first choice (in choice order) that appears in the transcript as a whole word,
  case-insensitively; else ``choices[h % len(choices)]`` (``null`` is never picked unless it is
  the only choice).
- ``anyOf`` / ``oneOf`` / ``allOf`` and ``type`` lists: the first branch that is not ``null``.
- ``object``: every property listed in ``properties`` (so ``required`` and
  ``additionalProperties: false`` always hold); no type but ``properties`` means object.
- ``array``: ``max(1, minItems)`` items.
- ``boolean``: ``h % 2 == 0``.
- ``number`` / ``integer``: the first number in the transcript (digits, optional decimal part),
  else ``h % 10``; ``integer`` truncates; clamped to ``minimum`` / ``maximum``.
- ``string``: a ``format`` (date-time, date, time, email, uuid, uri) gets a fixed sample; a name
  ending in ``summary`` gets the first 12 words of the transcript's first user line (a line
  ``user:``/``customer:``/``caller:``/… with the role prefix stripped; else the first non-empty
  line); any other name gets ``"<name>: "`` + the first 6 words of that line; then padded to
  ``minLength`` and cut to ``maxLength``.

Usage and prompt caching
------------------------
Tokens are estimated as ``ceil(chars / 4)``. The prompt is the blocks in the order tools,
system, messages; the cacheable prefix runs up to and including the last block carrying
``cache_control`` (a top-level ``cache_control`` marks the last block). A prefix of at least
1024 tokens is a cache read if the same model + prefix was seen in the last 300 s (a hit
refreshes it, as the real cache does), else a cache write; ``input_tokens`` is then the rest.

Faults (``FaultConfig``)
------------------------
A fault is named by an HTTP status (``"429"``, ``"529"``, ``"500"``, ``"401"``, ``"402"``, …),
answered as that Anthropic error, or by a behaviour:

- ``reset``: the connection is reset (TCP RST) before any answer;
- ``hang``: no answer for ``hang_s`` seconds (past the client's timeout), then the connection
  closes;
- ``malformed_json``: a 200 whose text is cut-off JSON (``stop_reason: "end_turn"``);
- ``refusal``: a 200 with ``stop_reason: "refusal"``;
- ``max_tokens``: a 200 whose text is cut at half (``stop_reason: "max_tokens"``).

Which request gets which fault:

- ``fail_session_ids``: ``{session_id: fault}``; a request whose message text holds
  ``session_id=<ID>`` (not followed by a word character or ``-``) always gets that fault.
- ``rates``: ``{fault: share}``, and ``error_rate`` / ``error_status`` (one more entry): one
  draw per request, ``sha256(body + request_number)`` mapped to [0, 1), walks the shares in
  order (``error_status`` first), so a given sequence of requests fails the same way on every
  run. The shares add up to at most 1.
- ``x-api-key: invalid`` gives 401; a missing key gives 401 too. 429 answers carry
  ``retry-after: <retry_after_s>`` (1 by default).

The faults can be changed while the stub runs (a fault burst, then lifting it):
``GET /_faults`` answers the current ``FaultConfig`` as JSON, ``POST /_faults`` with such a
JSON object replaces it (unknown keys or faults are a 400). These admin routes take no key: the
stub is a local test tool and binds to 127.0.0.1 by default.

Request rate limit
------------------
``--rpm-limit R`` (``enable_rate_limit``) admits at most R Messages requests in any sliding
window of ``--rl-window-s`` seconds (60 by default); a request over it is a 429
``rate_limit_error`` with ``retry-after`` (seconds until a slot frees). Every answer then
carries ``anthropic-ratelimit-requests-limit``, ``-remaining`` and ``-reset`` (RFC 3339).
``GET /_ratelimit`` answers the limit and the monotonic times of admitted and rejected
requests, so a test can check every window.

The handler never logs: request bodies hold transcripts, which are personal data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

CACHE_TTL_SECONDS = 300.0
MIN_CACHEABLE_TOKENS = 1024
CHARS_PER_TOKEN = 4
SUMMARY_WORDS = 12
LABEL_WORDS = 6
USER_ROLES = frozenset({"user", "customer", "caller", "human", "client", "visitor"})

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
STATUS_PHRASES: dict[int, str] = {529: "Overloaded"}
RATE_LIMIT_HEADERS: dict[str, str] = {
    "anthropic-ratelimit-requests-limit": "100000",
    "anthropic-ratelimit-requests-remaining": "99999",
}
FORMAT_SAMPLES: dict[str, str] = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "uri": "https://example.com/",
}

_TRANSCRIPT_SECTION = re.compile(r"<transcript>(.*?)</transcript>", re.DOTALL)
_ROLE_PREFIX = re.compile(r"^\s*([A-Za-z][\w-]{0,30})\s*:\s*(.*)$")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_LINGER_ZERO = struct.pack("ii", 1, 0)


# Faults that are not an HTTP status, and the names they may also be given by.
BEHAVIOURS = frozenset({"reset", "hang", "malformed_json", "refusal", "max_tokens"})
_FAULT_ALIASES: dict[str, str] = {
    "connection_reset": "reset", "timeout": "hang", "malformed": "malformed_json",
}


def fault_name(value: int | str) -> str:
    """The canonical name of a fault: an HTTP status as digits, or a behaviour."""
    name = str(value).strip().lower()
    name = _FAULT_ALIASES.get(name, name)
    if name in BEHAVIOURS:
        return name
    if name.isdigit() and 400 <= int(name) <= 599:
        return name
    known = ", ".join(sorted(BEHAVIOURS))
    raise ValueError(f"unknown fault {value!r}: an HTTP status 400-599 or one of {known}")


@dataclass(frozen=True)
class FaultConfig:
    """Faults to inject: a reproducible share of requests, and fixed faults for some sessions."""

    error_rate: float = 0.0
    error_status: int = 529
    fail_session_ids: Mapping[str, int | str] = field(default_factory=dict)
    rates: Mapping[str, float] = field(default_factory=dict)
    retry_after_s: float = 1.0
    hang_s: float = 30.0

    def __post_init__(self) -> None:
        # Normalised once, so a typo fails at start-up, not on the thousandth request.
        sessions = {sid: fault_name(fault) for sid, fault in self.fail_session_ids.items()}
        rates = {fault_name(fault): float(share) for fault, share in self.rates.items()}
        object.__setattr__(self, "fail_session_ids", sessions)
        object.__setattr__(self, "rates", rates)
        shares = [self.error_rate, *rates.values()]
        if any(not 0.0 <= share <= 1.0 for share in shares) or sum(shares) > 1.0 + 1e-9:
            raise ValueError("fault rates must each be in [0, 1] and add up to at most 1")
        fault_name(self.error_status)
        if self.retry_after_s < 0 or self.hang_s < 0:
            raise ValueError("retry_after_s and hang_s must not be negative")

    def draws(self) -> list[tuple[str, float]]:
        """(fault, share) in draw order: the legacy error_rate entry first."""
        legacy = [(fault_name(self.error_status), self.error_rate)] if self.error_rate else []
        return legacy + list(self.rates.items())

    def as_json(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate, "error_status": self.error_status,
            "fail_session_ids": dict(self.fail_session_ids), "rates": dict(self.rates),
            "retry_after_s": self.retry_after_s, "hang_s": self.hang_s,
        }

    @classmethod
    def from_json(cls, document: Any) -> FaultConfig:
        """The admin endpoint's body; raises ValueError naming what is wrong."""
        if not isinstance(document, Mapping):
            raise ValueError("faults must be a JSON object")
        unknown = set(document) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        try:
            return cls(**document)
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"bad fault settings: {exc}") from exc


class ApiError(Exception):
    """An error answered to the client in the Anthropic error shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StubServer(ThreadingHTTPServer):
    """The HTTP server, holding the settings and the state shared by handler threads."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], latency_ms: int, faults: FaultConfig) -> None:
        super().__init__(address, _Handler)
        self.latency_ms = latency_ms
        self.faults = faults
        self.request_count = 0
        self._lock = threading.Lock()
        self._cache: dict[str, float] = {}
        # Set by enable_rate_limit (``--rpm-limit``); None = no request limit.
        self.request_window: RequestWindow | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a killed worker, a timed-out call) is routine, not an
        error worth a traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def next_request_number(self) -> int:
        """Count a Messages request; the number also seeds the error-rate draw."""
        with self._lock:
            self.request_count += 1
            return self.request_count

    def prefix_seen(self, key: str, now: float) -> bool:
        """Whether the prefix is cached; either way it is (re)cached as of ``now``."""
        with self._lock:
            expired = [k for k, seen in self._cache.items() if now - seen > CACHE_TTL_SECONDS]
            for stale in expired:
                del self._cache[stale]
            hit = key in self._cache
            self._cache[key] = now
            return hit


def make_server(
    host: str, port: int, latency_ms: int = 0, faults: FaultConfig | None = None
) -> StubServer:
    """Bind the stub (port 0 picks a free port: read it from ``server_address[1]``)."""
    return StubServer((host, port), latency_ms, faults or FaultConfig())


# --- transcript -------------------------------------------------------------------------------


def _block_text(block: Any) -> str:
    """The text a content block contributes; non-text blocks count by their JSON size."""
    if isinstance(block, str):
        return block
    if not isinstance(block, Mapping):
        return json.dumps(block)
    if block.get("type") == "text":
        return str(block.get("text", ""))
    if block.get("type") == "tool_result":
        return _content_text(block.get("content", ""))
    return json.dumps({k: v for k, v in block.items() if k != "cache_control"}, sort_keys=True)


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(_block_text(block) for block in content)
    return _block_text(content)


def _messages_text(messages: Iterable[Any], roles: frozenset[str] | None = None) -> str:
    parts = [
        _content_text(message.get("content", ""))
        for message in messages
        if roles is None or message.get("role") in roles
    ]
    return "\n".join(parts)


def transcript_of(messages: Iterable[Any]) -> str:
    """The user text, narrowed to its ``<transcript>`` sections when it has any."""
    text = _messages_text(messages, frozenset({"user"}))
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


# --- request checks ---------------------------------------------------------------------------


def check_api_key(headers: Mapping[str, str]) -> None:
    """The SDK always sends ``x-api-key``; ``invalid`` lets tests exercise the 401 path."""
    key = headers.get("x-api-key") or _bearer_token(headers)
    if not key:
        raise ApiError(401, "x-api-key header is required")
    if key == "invalid":
        raise ApiError(401, "invalid x-api-key")


def _bearer_token(headers: Mapping[str, str]) -> str:
    value = headers.get("authorization") or ""
    return value[len("Bearer ") :].strip() if value.startswith("Bearer ") else ""


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def validate_messages_request(body: Mapping[str, Any]) -> None:
    """Refuse what the real API refuses first, naming the field as it does."""
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise ApiError(400, f"{name}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise ApiError(400, "model: must be a non-empty string")
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ApiError(400, "max_tokens: must be an integer >= 1")
    _validate_message_list(body["messages"])


def _validate_message_list(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: must be a non-empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ApiError(400, f"messages.{index}.role: must be 'user' or 'assistant'")
        if not isinstance(message.get("content"), str | list):
            raise ApiError(400, f"messages.{index}.content: must be a string or a list")


# --- faults -----------------------------------------------------------------------------------


class ConnectionFault(Exception):
    """A fault answered at the connection level (reset, hang) instead of with an HTTP answer."""

    def __init__(self, behaviour: str, hang_s: float = 0.0) -> None:
        super().__init__(behaviour)
        self.behaviour = behaviour
        self.hang_s = hang_s


def pick_fault(faults: FaultConfig, body: Mapping[str, Any], raw: bytes, number: int) -> str | None:
    """The fault this request gets, if any: a session rule first, then the rate draw."""
    text = _messages_text(body.get("messages", []))
    for session_id, fault in faults.fail_session_ids.items():
        if re.search(rf"session_id={re.escape(session_id)}(?![\w-])", text):
            return str(fault)
    draws = faults.draws()
    if not draws:
        return None
    point, ceiling = _draw(raw, number), 0.0
    for fault, share in draws:
        ceiling += share
        if point < ceiling:
            return fault
    return None


def raise_status_fault(fault: str) -> None:
    """An HTTP-status fault becomes the Anthropic error for that status."""
    if fault.isdigit():
        status = int(fault)
        raise ApiError(status, _fault_message(status))


def _draw(raw: bytes, number: int) -> float:
    """A reproducible number in [0, 1): the same body at the same position draws the same."""
    digest = hashlib.sha256(raw + str(number).encode()).hexdigest()
    return int(digest[:16], 16) / float(1 << 64)


def _fault_message(status: int) -> str:
    if status == 529:
        return "Overloaded"
    if status == 429:
        return "Number of requests has exceeded your rate limit"
    return f"injected fault (HTTP {status})"


# --- answers ----------------------------------------------------------------------------------


def _tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def _prompt_blocks(body: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """(text, carries cache_control) per prompt block, in cache order: tools, system, messages."""
    blocks = [(json.dumps(tool, sort_keys=True), _marked(tool)) for tool in body.get("tools") or []]
    system = body.get("system") or []
    for block in [system] if isinstance(system, str) else system:
        blocks.append((_block_text(block), _marked(block)))
    for message in body.get("messages", []):
        content = message.get("content", "")
        for block in [content] if isinstance(content, str) else content:
            blocks.append((_block_text(block), _marked(block)))
    if body.get("cache_control") and blocks:
        blocks[-1] = (blocks[-1][0], True)
    return blocks


def _marked(block: Any) -> bool:
    return isinstance(block, Mapping) and bool(block.get("cache_control"))


def count_input_tokens(body: Mapping[str, Any]) -> int:
    return _tokens(sum(len(text) for text, _ in _prompt_blocks(body)))


def compute_usage(server: StubServer, body: Mapping[str, Any], output: str) -> dict[str, int]:
    """Token usage, splitting off a cached prefix as the real prompt cache does."""
    blocks = _prompt_blocks(body)
    total = sum(len(text) for text, _ in blocks)
    cut = max((i + 1 for i, (_, marked) in enumerate(blocks) if marked), default=0)
    prefix = blocks[:cut]
    prefix_chars = sum(len(text) for text, _ in prefix)
    usage = {"input_tokens": _tokens(total), "output_tokens": _tokens(len(output))}
    usage |= {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if cut and _tokens(prefix_chars) >= MIN_CACHEABLE_TOKENS:
        key = _prefix_key(str(body["model"]), [text for text, _ in prefix])
        field_name = "cache_read" if server.prefix_seen(key, time.monotonic()) else "cache_creation"
        usage[f"{field_name}_input_tokens"] = _tokens(prefix_chars)
        usage["input_tokens"] = _tokens(total - prefix_chars)
    return usage


def _prefix_key(model: str, texts: list[str]) -> str:
    # The cache is per model, as the real one is.
    return hashlib.sha256(json.dumps([model, texts]).encode()).hexdigest()


def _forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
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


def _output_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    output_format = (body.get("output_config") or {}).get("format") or {}
    if output_format.get("type") != "json_schema":
        return None
    schema = output_format.get("schema")
    if not isinstance(schema, Mapping):
        raise ApiError(400, "output_config.format.schema: must be an object")
    return schema


def _one_sentence(transcript: str) -> str:
    words = " ".join(transcript.split()[:SUMMARY_WORDS]).rstrip(".!?,;:")
    return f"The conversation is about: {words}." if words else "The conversation was empty."


def answer_content(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The content blocks and the stop reason (which kind of answer: see the module doc)."""
    transcript = transcript_of(body["messages"])
    tool = _forced_tool(body)
    if tool is not None:
        schema = tool.get("input_schema") or {"type": "object"}
        block = {"type": "tool_use", "id": "toolu_" + secrets.token_hex(12), "name": tool["name"]}
        return [block | {"input": derive(schema, transcript)}], "tool_use"
    schema = _output_schema(body)
    text = json.dumps(derive(schema, transcript)) if schema else _one_sentence(transcript)
    return _cut_to_max_tokens(text, int(body["max_tokens"]))


def _cut_to_max_tokens(text: str, max_tokens: int) -> tuple[list[dict[str, Any]], str]:
    if _tokens(len(text)) <= max_tokens:
        return [{"type": "text", "text": text}], "end_turn"
    return [{"type": "text", "text": text[: max_tokens * CHARS_PER_TOKEN]}], "max_tokens"


REFUSAL_TEXT = "I can't help with analysing this conversation."


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


def build_message(
    server: StubServer, body: Mapping[str, Any], fault: str | None = None
) -> dict[str, Any]:
    content, stop_reason = faulty_content(body, fault) if fault else answer_content(body)
    return {
        "id": "msg_" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": compute_usage(server, body, json.dumps(content)),
    }


# --- rate limit (``--rpm-limit``) ---------------------------------------------------------------


class RequestWindow:
    """The provider's request limit: at most ``limit`` Messages requests in any sliding window
    of ``window_s`` seconds (60 for a per-minute limit). Requests over it get a 429 with
    ``retry-after``; every answer carries the ``anthropic-ratelimit-requests-*`` headers.
    Admitted and rejected times are kept so tests and the bench can check the limit held."""

    def __init__(self, limit: int, window_s: float = 60.0) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("the request limit and its window must be positive")
        self.limit = limit
        self.window_s = window_s
        self.admitted: list[float] = []
        self.rejected: list[float] = []
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self, now: float) -> float | None:
        """None when admitted, else the seconds until a slot frees up (the retry-after)."""
        with self._lock:
            while self._recent and now - self._recent[0] >= self.window_s:
                self._recent.popleft()
            if len(self._recent) >= self.limit:
                self.rejected.append(now)
                return self._recent[0] + self.window_s - now
            self._recent.append(now)
            self.admitted.append(now)
            return None

    def headers(self, now: float) -> dict[str, str]:
        with self._lock:
            live = [t for t in self._recent if now - t < self.window_s]
        reset = (live[0] + self.window_s) if len(live) >= self.limit else now
        wall = time.time() + (reset - now)
        return {
            "anthropic-ratelimit-requests-limit": str(self.limit),
            "anthropic-ratelimit-requests-remaining": str(max(self.limit - len(live), 0)),
            "anthropic-ratelimit-requests-reset": time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z",
        }

    def seconds_until_free(self, now: float) -> float:
        with self._lock:
            oldest = self._recent[0] if self._recent else now
        return max(oldest + self.window_s - now, 0.0)

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {"limit": self.limit, "window_s": self.window_s,
                    "admitted": list(self.admitted), "rejected": list(self.rejected)}


def enable_rate_limit(server: StubServer, limit: int, window_s: float = 60.0) -> None:
    server.request_window = RequestWindow(limit, window_s)


def check_rate_limit(server: StubServer) -> None:
    """Count a Messages request against the window; over the limit it is a 429."""
    window: RequestWindow | None = getattr(server, "request_window", None)
    if window is None:
        return
    wait_s = window.admit(time.monotonic())
    if wait_s is not None:
        raise ApiError(429, f"request rate limit of {window.limit} per "
                            f"{window.window_s:g} s exceeded")


def rate_limit_headers(server: StubServer, status: int) -> dict[str, str]:
    """Headers of every answer: the window's when a limit is set, else the fixed ones; a 429
    also carries retry-after (the window's wait when it caused the 429)."""
    window: RequestWindow | None = getattr(server, "request_window", None)
    now = time.monotonic()
    headers = dict(RATE_LIMIT_HEADERS) if window is None else window.headers(now)
    if status == 429:
        retry_after = server.faults.retry_after_s
        if window is not None and headers["anthropic-ratelimit-requests-remaining"] == "0":
            retry_after = max(retry_after, window.seconds_until_free(now))
        headers["retry-after"] = f"{math.ceil(retry_after * 1000) / 1000:g}"
    return headers


def handle_rate_window(server: StubServer) -> Answer:
    """``GET /_ratelimit``: the limit and the monotonic times of admitted/rejected requests."""
    window = server.request_window
    return 200, ({"limit": 0} if window is None else window.as_json())


# --- HTTP -------------------------------------------------------------------------------------


Answer = tuple[int, dict[str, Any]]


def error_payload(error: ApiError, request_id: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(error.status, "api_error")
    return {
        "type": "error",
        "error": {"type": kind, "message": error.message},
        "request_id": request_id,
    }


def handle_messages(server: StubServer, headers: Mapping[str, str], raw: bytes) -> Answer:
    check_rate_limit(server)
    number = server.next_request_number()
    # Latency first, so even errors take as long as a round trip to the real API would.
    time.sleep(server.latency_ms / 1000)
    check_api_key(headers)
    body = parse_body(raw)
    validate_messages_request(body)
    faults = server.faults  # one read: an admin update mid-request applies to the next one
    fault = pick_fault(faults, body, raw, number)
    if fault in ("reset", "hang"):
        raise ConnectionFault(fault, faults.hang_s)
    if fault is not None:
        raise_status_fault(fault)
    return 200, build_message(server, body, fault)


def handle_count_tokens(headers: Mapping[str, str], raw: bytes) -> Answer:
    check_api_key(headers)
    body = parse_body(raw)
    _validate_message_list(body.get("messages"))
    return 200, {"input_tokens": count_input_tokens(body)}


def handle_faults(server: StubServer, method: str, raw: bytes) -> Answer:
    """``GET`` shows the faults, ``POST`` replaces them (the chaos driver lifts a burst)."""
    if method == "POST":
        try:
            server.faults = FaultConfig.from_json(parse_body(raw))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from exc
    return 200, server.faults.as_json()


def route(
    server: StubServer, method: str, path: str, headers: Mapping[str, str], raw: bytes
) -> Answer:
    path = path.split("?", 1)[0].rstrip("/") or "/"
    if (method, path) == ("GET", "/healthz"):
        return 200, {"ok": True}
    if (method, path) == ("POST", "/v1/messages"):
        return handle_messages(server, headers, raw)
    if (method, path) == ("POST", "/v1/messages/count_tokens"):
        return handle_count_tokens(headers, raw)
    if (method, path) == ("GET", "/_ratelimit"):
        return handle_rate_window(server)
    if path == "/_faults" and method in ("GET", "POST"):
        return handle_faults(server, method, raw)
    from shared import llm_stub_batches  # Message Batches routes (imports this module)

    if llm_stub_batches.owns(path):
        return llm_stub_batches.handle(server, method, path, headers, raw)
    raise ApiError(404, f"no route for {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the SDK's pooled connections alive; every answer sets Content-Length.
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes; with Nagle's algorithm the body waits
    # for the client's delayed ACK of the headers, adding ~40 ms to every answer.
    disable_nagle_algorithm = True
    server: StubServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Silent on purpose: request lines and bodies must never reach logs."""

    def _dispatch(self, method: str) -> None:
        request_id = "req_" + secrets.token_hex(12)
        raw = self._read_body()
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            status, payload = route(self.server, method, self.path, headers, raw)
        except ApiError as error:
            status, payload = error.status, error_payload(error, request_id)
        except ConnectionFault as fault:
            self._break_connection(fault)
            return
        try:
            self._send_json(status, payload, request_id)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout fired during the latency sleep): nothing to answer.
            self.close_connection = True

    def _break_connection(self, fault: ConnectionFault) -> None:
        """No HTTP answer at all: wait out a hang, then reset the connection (RST, not FIN)."""
        if fault.behaviour == "hang":
            time.sleep(fault.hang_s)
        self.close_connection = True
        try:
            # Linger 0 makes close() send RST; the read buffer holds the socket open until
            # it is closed too, so both go now and the client sees a reset at once.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass  # the client already gave up on this connection

    def _read_body(self) -> bytes:
        # Reading the whole body, even for errors, keeps a kept-alive connection in step.
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            self.close_connection = True
            return b""
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while size := int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():
            pass  # trailers end with an empty line
        return b"".join(chunks)

    def _send_json(self, status: int, payload: dict[str, Any], request_id: str) -> None:
        from shared.llm_stub_batches import encode_payload  # JSON, or JSONL batch results

        data, content_type = encode_payload(payload)
        self.send_response(status, STATUS_PHRASES.get(status))
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", request_id)
        for name, value in rate_limit_headers(self.server, status).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


# --- process entry points ---------------------------------------------------------------------


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    latency_ms: int = 0,
    faults: FaultConfig | None = None,
    rpm_limit: int = 0,
    rl_window_s: float = 60.0,
) -> None:
    """Serve until SIGTERM or SIGINT, then close the socket and return (exit code 0)."""
    server = make_server(host, port, latency_ms, faults)
    if rpm_limit:
        enable_rate_limit(server, rpm_limit, rl_window_s)
    stop = threading.Event()
    previous = _on_stop_signals(stop)
    # serve_forever runs in a thread: shutdown() from the main thread would deadlock otherwise.
    worker = threading.Thread(target=server.serve_forever, name="llm-stub", daemon=True)
    worker.start()
    print(
        f"llm-stub listening on http://{host}:{server.server_address[1]}",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        worker.join()
        _restore_signals(previous)


SignalHandler = Any


def _on_stop_signals(stop: threading.Event) -> dict[int, SignalHandler]:
    if threading.current_thread() is not threading.main_thread():
        return {}  # signals can only be handled on the main thread; the caller stops us then

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_signals(previous: dict[int, SignalHandler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def parse_assignment(text: str, what: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the key may itself hold ``=``: the last one splits)."""
    key, sep, value = text.rpartition("=")
    if not sep or not key or not value:
        raise ValueError(f"expected {what}, got {text!r}")
    return key, value


def faults_from_flags(
    *,
    error_rate: float = 0.0,
    error_status: int = 529,
    fail_sessions: Iterable[str] = (),
    rates: Iterable[str] = (),
    retry_after_s: float = 1.0,
    hang_s: float = 30.0,
) -> FaultConfig:
    """The command-line flags (``ID=FAULT``, ``FAULT=RATE``) as a FaultConfig."""
    sessions = dict(parse_assignment(text, "SESSION_ID=FAULT") for text in fail_sessions)
    shares: dict[str, float] = {}
    for text in rates:
        fault, share = parse_assignment(text, "FAULT=RATE")
        try:
            shares[fault] = float(share)
        except ValueError as exc:
            raise ValueError(f"rate of {fault!r} is not a number: {share!r}") from exc
    return FaultConfig(error_rate, error_status, sessions, shares, retry_after_s, hang_s)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-stub", description=__doc__.split("\n")[0] if __doc__ else None
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests to fail")
    parser.add_argument("--error-status", type=int, default=529, help="status of those failures")
    parser.add_argument(
        "--fault", action="append", default=[], metavar="FAULT=RATE",
        help="fail this share of requests with FAULT (a status or " + ", ".join(sorted(BEHAVIOURS))
        + "); repeatable",
    )
    parser.add_argument(
        "--fail-session", action="append", default=[], metavar="ID=FAULT",
        help="always answer FAULT when the prompt holds session_id=ID; repeatable",
    )
    parser.add_argument("--retry-after", type=float, default=1.0, help="retry-after of 429s")
    parser.add_argument("--hang-s", type=float, default=30.0, help="how long a hang lasts")
    parser.add_argument("--rpm-limit", type=int, default=0,
                        help="at most N requests per sliding window (0 = no limit)")
    parser.add_argument("--rl-window-s", type=float, default=60.0,
                        help="the window of --rpm-limit, in seconds")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        faults = faults_from_flags(
            error_rate=args.error_rate, error_status=args.error_status,
            fail_sessions=args.fail_session, rates=args.fault,
            retry_after_s=args.retry_after, hang_s=args.hang_s,
        )
    except ValueError as exc:
        parser.error(str(exc))
    serve(args.host, args.port, args.latency_ms, faults, args.rpm_limit, args.rl_window_s)


if __name__ == "__main__":
    main()
