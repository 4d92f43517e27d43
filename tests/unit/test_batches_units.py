"""Message Batches mode without services: request ids, chunking, modes, result errors, and the
stand-in's batch answers."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.dev.llm_stub.wire import JsonLines, encode_payload
from scheduler.jobs.options import resolve_mode
from scheduler.run.batches import (
    chunk_requests,
    custom_id_for,
    request_size,
    result_error,
)
from shared import errors, llm

SAFE_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@given(job=st.text(max_size=80), session=st.text(max_size=200),
       attempt=st.integers(min_value=0, max_value=10_000))
def test_custom_id_is_always_safe(job: str, session: str, attempt: int) -> None:
    assert SAFE_ID.match(custom_id_for(job, session, attempt))


def test_custom_id_differs_per_claim_and_is_stable() -> None:
    ids = {custom_id_for("bf_1", sid, attempt)
           for sid in ("call/1", "call 1", "call_1", "ćall_1") for attempt in (1, 2)}
    assert len(ids) == 8
    assert custom_id_for("bf_1", "call_1", 1) == custom_id_for("bf_1", "call_1", 1)
    # A separator in the digest input: (job, session) pairs that concatenate alike differ.
    assert custom_id_for("bf_1", "2call", 1) != custom_id_for("bf_12", "call", 1)


def _request(index: int, padding: int = 0) -> dict[str, Any]:
    return {"custom_id": f"r{index}", "params": {"model": "m", "max_tokens": 1,
                                                 "messages": [{"role": "user",
                                                               "content": "x" * padding}]}}


def test_chunks_respect_the_request_count() -> None:
    chunks = list(chunk_requests([_request(i) for i in range(7)], max_requests=3,
                                 max_bytes=10**9))
    assert [len(chunk) for chunk in chunks] == [3, 3, 1]
    assert [r["custom_id"] for chunk in chunks for r in chunk] == [f"r{i}" for i in range(7)]


def test_chunks_respect_the_body_size() -> None:
    requests = [_request(i, padding=1000) for i in range(10)]
    one = request_size(requests[0])
    limit = 16 + 3 * one  # room for exactly three requests and the envelope
    chunks = list(chunk_requests(requests, max_requests=100, max_bytes=limit))
    assert [len(chunk) for chunk in chunks] == [3, 3, 3, 1]
    for chunk in chunks:
        body = json.dumps({"requests": chunk}, separators=(",", ":")).encode()
        assert len(body) <= limit


def test_no_empty_chunks() -> None:
    assert list(chunk_requests([], 10, 10**6)) == []


@pytest.mark.parametrize(("requested", "matched", "threshold", "expected"), [
    (None, 10, 0, "live"), (None, 10, 10, "live"), (None, 11, 10, "batch"),
    ("live", 10**6, 10, "live"), ("batch", 1, 0, "batch"),
])
def test_resolve_mode(requested: str | None, matched: int, threshold: int, expected: str) -> None:
    assert resolve_mode(requested, matched, threshold) == expected


def _errored(error_type: str) -> Any:
    return SimpleNamespace(type="errored", error=SimpleNamespace(
        type="error", error=SimpleNamespace(type=error_type, message="boom")))


@pytest.mark.parametrize(("result", "kind", "retryable", "fatal"), [
    (SimpleNamespace(type="expired"), "llm_timeout", True, False),
    (SimpleNamespace(type="canceled"), "llm_server_error", True, False),
    (_errored("invalid_request_error"), "llm_bad_request", False, False),
    (_errored("overloaded_error"), "llm_overloaded", True, False),
    (_errored("rate_limit_error"), "llm_rate_limited", True, False),
    (_errored("api_error"), "llm_server_error", True, False),
    (_errored("something_new"), "llm_server_error", True, False),
    (_errored("authentication_error"), "llm_auth", False, True),
    (_errored("billing_error"), "llm_billing", False, True),
])
def test_result_errors_map_to_error_kinds(result: Any, kind: str, retryable: bool,
                                          fatal: bool) -> None:
    error = result_error(result)
    assert (error.kind, error.retryable, error.job_fatal) == (kind, retryable, fatal)


def test_answer_text_follows_the_live_rules() -> None:
    block = {"type": "text", "text": '{"a": 1}'}
    assert llm.answer_text({"stop_reason": "end_turn", "content": [block]}) == '{"a": 1}'
    with pytest.raises(errors.LLMRefusal):
        llm.answer_text({"stop_reason": "refusal", "content": [block]})
    with pytest.raises(errors.LLMInvalidOutput):
        llm.answer_text({"stop_reason": "max_tokens", "content": [block]})
    with pytest.raises(errors.LLMInvalidOutput, match="no text block"):
        llm.answer_text({"stop_reason": "end_turn", "content": [{"type": "tool_use"}]})


def test_results_are_json_lines() -> None:
    body, content_type = encode_payload(JsonLines([{"custom_id": "a"}, {"custom_id": "b"}]))
    assert [json.loads(line) for line in body.decode().splitlines()] == [
        {"custom_id": "a"}, {"custom_id": "b"}]
    assert body.endswith(b"\n") and content_type != "application/json"
    assert encode_payload({"ok": True}) == (b'{"ok": true}', "application/json")
