"""The LLM boundary: one Messages API call through the real anthropic SDK.

Errors are wrapped at this boundary into the item's error kinds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anthropic

from shared import errors
from shared.settings import Settings

STUB_API_KEY = "local-stand-in"


@dataclass(frozen=True)
class LLMReply:
    text: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    latency_ms: int


def make_client(settings: Settings) -> anthropic.Anthropic:
    """SDK retries are off: the item's retry policy is the one owner of retries."""
    if settings.llm_mode == "stub" and not settings.anthropic_base_url:
        raise errors.BackfillError(
            "BACKFILL_LLM=stub needs ANTHROPIC_BASE_URL pointing at `backfill llm-stub`"
        )
    return anthropic.Anthropic(
        api_key=settings.anthropic_api_key or STUB_API_KEY,
        base_url=settings.anthropic_base_url,
        max_retries=0,
        timeout=settings.llm_timeout_s,
    )


def complete(client: anthropic.Anthropic, request: dict[str, Any]) -> LLMReply:
    """Send one request; return the text of the answer or raise an AnalysisError subclass."""
    started = time.monotonic()
    try:
        message = client.messages.create(**request)
    except anthropic.APIError as exc:
        raise wrap_api_error(exc) from exc
    latency_ms = int((time.monotonic() - started) * 1000)
    return LLMReply(
        text=_answer_text(message),
        input_tokens=message.usage.input_tokens or 0,
        output_tokens=message.usage.output_tokens or 0,
        cache_read_tokens=getattr(message.usage, "cache_read_input_tokens", None) or 0,
        cache_write_tokens=getattr(message.usage, "cache_creation_input_tokens", None) or 0,
        latency_ms=latency_ms,
    )


def _answer_text(message: Any) -> str:
    if message.stop_reason == "refusal":
        raise errors.LLMRefusal("the model refused to analyse this session")
    if message.stop_reason == "max_tokens":
        raise errors.LLMInvalidOutput("the answer was cut off at max_tokens")
    texts = [block.text for block in message.content if block.type == "text"]
    if not texts:
        raise errors.LLMInvalidOutput("the answer has no text block")
    return "".join(texts)


_STATUS_ERRORS: dict[int, type[errors.AnalysisError]] = {
    400: errors.LLMBadRequest,
    401: errors.LLMAuth,
    402: errors.LLMBilling,
    403: errors.LLMAuth,
    413: errors.LLMBadRequest,
    429: errors.LLMRateLimited,
    529: errors.LLMOverloaded,
}


def wrap_api_error(exc: anthropic.APIError) -> errors.AnalysisError:
    """Map an SDK error to the item's error kind; keep the provider's message, not the prompt."""
    if isinstance(exc, anthropic.APITimeoutError):
        return errors.LLMTimeout(f"no answer within the client timeout: {exc.message}")
    if isinstance(exc, anthropic.APIConnectionError):
        return errors.LLMConnection(f"cannot reach the LLM provider: {exc.message}")
    if isinstance(exc, anthropic.APIStatusError):
        return _wrap_status_error(exc)
    return errors.LLMServerError(f"unexpected LLM error: {exc.message}")


def _wrap_status_error(exc: anthropic.APIStatusError) -> errors.AnalysisError:
    status = exc.status_code
    if _error_type(exc) == "billing_error":
        return errors.LLMBilling(f"{status}: {exc.message}")
    error_class = _STATUS_ERRORS.get(status)
    if error_class is None:
        error_class = errors.LLMServerError if status >= 500 else errors.LLMBadRequest
    return error_class(f"{status}: {exc.message}", retry_after_s=_retry_after(exc))


def _error_type(exc: anthropic.APIStatusError) -> str | None:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
