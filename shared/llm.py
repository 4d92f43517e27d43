"""The LLM boundary both sides share: the SDK client, and what an answer or an SDK error means.

The worker sends one Messages request per session; the scheduler's batch cycle sends Message
Batches. Both read an answer the same way — its text or the error its stop reason means, and
the tokens the provider billed — and map SDK errors to the same error kinds, here.

`anthropic` costs about 1.8 s of CPU to import, so it is imported inside the functions that
call it: a CLI verb that reads the database never pays for it. For the same reason the
provider's token counter (`count_tokens`, asked by `backfill preview`) is one small request
of the standard library, not an SDK call.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared import errors
from shared.pricing import Tokens
from shared.settings import Settings

if TYPE_CHECKING:
    import anthropic

# The stand-in accepts any key; the SDK refuses to start without one.
STUB_API_KEY = "local-stand-in"
# A local token estimate, for where the provider's counter is not asked (a rate-limit
# reservation before a call, an estimate while the provider cannot be reached).
LOCAL_CHARS_PER_TOKEN = 4
DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
# The parameters of a Messages request that `count_tokens` takes (it refuses the others,
# `max_tokens` first among them).
_COUNTED_PARAMS = ("model", "messages", "system", "tools", "tool_choice", "thinking",
                   "output_config")


def local_token_estimate(chars: int) -> int:
    return -(-chars // LOCAL_CHARS_PER_TOKEN)


def api_key(settings: Settings) -> str:
    return settings.anthropic_api_key or STUB_API_KEY


def make_client(settings: Settings, *, max_retries: int = 0) -> anthropic.Anthropic:
    """One client per process (its connection pool is shared by every thread). SDK retries are
    off by default: the item's retry policy is the one owner of retries."""
    if settings.llm_mode == "stub" and not settings.anthropic_base_url:
        raise errors.BackfillError(
            "BACKFILL_LLM=stub needs ANTHROPIC_BASE_URL pointing at `backfill llm-stub`"
        )
    import anthropic

    return anthropic.Anthropic(
        api_key=api_key(settings),
        base_url=settings.anthropic_base_url,
        max_retries=max_retries,
        timeout=settings.llm_timeout_s,
    )


# --------------------------------------------------------------------------- token counts


class CountUnavailable(errors.BackfillError):
    """The provider's token counter could not be asked or did not answer a count."""


def count_tokens(settings: Settings, request: Mapping[str, Any], timeout_s: float) -> int:
    """The input tokens the provider would bill for this Messages request (cached or not):
    `POST /v1/messages/count_tokens`, within `timeout_s`. Raises CountUnavailable with the
    reason (never the request, which holds a transcript)."""
    if settings.llm_mode == "stub" and not settings.anthropic_base_url:
        raise CountUnavailable("no ANTHROPIC_BASE_URL for the stand-in")
    body = json.dumps({name: request[name] for name in _COUNTED_PARAMS if name in request},
                      ensure_ascii=False).encode("utf-8")
    base_url = (settings.anthropic_base_url or DEFAULT_BASE_URL).rstrip("/")
    call = urllib.request.Request(
        f"{base_url}/v1/messages/count_tokens", data=body, method="POST",
        headers={"x-api-key": api_key(settings), "anthropic-version": API_VERSION,
                 "content-type": "application/json"})
    try:
        with urllib.request.urlopen(call, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        exc.close()  # its body is the provider's error; only the status is kept
        raise CountUnavailable(f"the token counter answered {exc.code}") from None
    except (OSError, ValueError) as exc:  # unreachable, timed out, or not JSON
        raise CountUnavailable(f"cannot reach the token counter: {type(exc).__name__}") from None
    tokens = answer.get("input_tokens") if isinstance(answer, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        raise CountUnavailable("the token counter's answer holds no count")
    return tokens


# --------------------------------------------------------------------------- the answer


def answer_text(message: Mapping[str, Any]) -> str:
    """The text of a decoded Messages answer, or the AnalysisError its stop reason means."""
    stop_reason = message.get("stop_reason")
    if stop_reason == "refusal":
        raise errors.LLMRefusal("the model refused to analyse this session")
    if stop_reason == "max_tokens":
        raise errors.LLMInvalidOutput("the answer was cut off at max_tokens")
    texts = [block.get("text") or "" for block in message.get("content") or ()
             if isinstance(block, Mapping) and block.get("type") == "text"]
    if not texts:
        raise errors.LLMInvalidOutput("the answer has no text block")
    return "".join(texts)


def answer_tokens(message: Mapping[str, Any]) -> Tokens:
    """What the provider billed, from the answer's `usage` (`input` excludes the cache)."""
    usage = message.get("usage") or {}
    return Tokens(
        input=usage.get("input_tokens") or 0,
        output=usage.get("output_tokens") or 0,
        cache_read=usage.get("cache_read_input_tokens") or 0,
        cache_write=usage.get("cache_creation_input_tokens") or 0,
    )


# --------------------------------------------------------------------------- SDK errors

# Anthropic error types (the `error.type` of an error body) → the item's error kinds.
_ERROR_TYPES: dict[str, type[errors.AnalysisError]] = {
    "invalid_request_error": errors.LLMBadRequest,
    "request_too_large": errors.LLMBadRequest,
    "not_found_error": errors.LLMBadRequest,
    "authentication_error": errors.LLMAuth,
    "permission_error": errors.LLMAuth,
    "billing_error": errors.LLMBilling,
    "rate_limit_error": errors.LLMRateLimited,
    "overloaded_error": errors.LLMOverloaded,
    "timeout_error": errors.LLMTimeout,
    "api_error": errors.LLMServerError,
}

_STATUS_ERRORS: dict[int, type[errors.AnalysisError]] = {
    400: errors.LLMBadRequest,
    401: errors.LLMAuth,
    402: errors.LLMBilling,
    403: errors.LLMAuth,
    413: errors.LLMBadRequest,
    429: errors.LLMRateLimited,
    529: errors.LLMOverloaded,
}


def error_for_type(error_type: str | None, message: str) -> errors.AnalysisError:
    """An error body's type as the item's error; an unknown type is a server-side problem:
    transient, retried."""
    error_class = _ERROR_TYPES.get(error_type or "", errors.LLMServerError)
    return error_class(f"{error_type or 'error'}: {message}")


def wrap_api_error(exc: anthropic.APIError) -> errors.AnalysisError:
    """Map an SDK error to the item's error kind; keep the provider's message, not the prompt."""
    import anthropic

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
