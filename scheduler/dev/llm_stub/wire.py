"""What goes over the wire: Anthropic-shaped errors, request checks, answer encoding."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

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

# A handler's answer: the HTTP status and the JSON document (or JsonLines) to send.
Answer = tuple[int, dict[str, Any]]


class ApiError(Exception):
    """An error answered to the client in the Anthropic error shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "api_error")


def error_payload(error: ApiError, request_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type(error.status), "message": error.message},
        "request_id": request_id,
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
    _require(body, ("model", "max_tokens", "messages"))
    _validate_model(body["model"])
    _validate_max_tokens(body["max_tokens"])
    validate_message_list(body["messages"])


def validate_count_tokens_request(body: Mapping[str, Any]) -> None:
    """As for Messages, without ``max_tokens`` (a count has no answer to bound)."""
    _require(body, ("model", "messages"))
    _validate_model(body["model"])
    validate_message_list(body["messages"])


def _require(body: Mapping[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if name not in body:
            raise ApiError(400, f"{name}: Field required")


def _validate_model(model: Any) -> None:
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: must be a non-empty string")


def _validate_max_tokens(max_tokens: Any) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ApiError(400, "max_tokens: must be an integer >= 1")


def validate_message_list(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages: must be a non-empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ApiError(400, f"messages.{index}.role: must be 'user' or 'assistant'")
        if not isinstance(message.get("content"), str | list):
            raise ApiError(400, f"messages.{index}.content: must be a string or a list")


# --- answer encoding --------------------------------------------------------------------------


class JsonLines(dict[str, Any]):
    """An answer whose body is JSON Lines, not one JSON document (the batch results file)."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        super().__init__()
        self.lines = lines


def encode_payload(payload: Mapping[str, Any]) -> tuple[bytes, str]:
    """The body bytes and content type of an answer."""
    if isinstance(payload, JsonLines):
        body = "".join(json.dumps(line) + "\n" for line in payload.lines)
        return body.encode(), "application/binary"
    return json.dumps(payload).encode(), "application/json"
