"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any, Protocol

from scheduler.dev.llm_stub.answers import answer_content, faulty_content, forced_tool
from scheduler.dev.llm_stub.billing import PromptCache, compute_usage, count_input_tokens
from scheduler.dev.llm_stub.faults import (
    CONNECTION_BEHAVIOURS,
    ConnectionFault,
    FaultConfig,
    pick_fault,
    raise_status_fault,
)
from scheduler.dev.llm_stub.ratewindow import RequestWindow, check_rate_limit
from scheduler.dev.llm_stub.wire import (
    Answer,
    check_api_key,
    parse_body,
    validate_count_tokens_request,
    validate_messages_request,
)


class MessagesServer(Protocol):
    """What the Messages handlers read and update on the server (shared by handler threads)."""

    latency_ms: int
    faults: FaultConfig
    prompt_cache: PromptCache
    request_window: RequestWindow | None

    def next_request_number(self) -> int:
        """Count a Messages request; the number also seeds the error-rate draw."""
        ...

    def note_count_tokens_request(self) -> None:
        """Count a count_tokens request (apart from Messages requests)."""
        ...

    def note_billed(self, model: str, usage: Mapping[str, int], batch: bool) -> None:
        """Keep what an answer was billed (the stand-in's invoice)."""
        ...


def build_message(
    server: MessagesServer, body: Mapping[str, Any], fault: str | None = None, *,
    batch: bool = False,
) -> dict[str, Any]:
    """The answer to a request (live, or one request of a batch), billed to the server."""
    content, stop_reason = faulty_content(body, fault) if fault else answer_content(body)
    usage = compute_usage(server.prompt_cache, body, content)
    server.note_billed(str(body["model"]), usage, batch)
    return {
        "id": "msg_" + secrets.token_hex(12),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


def handle_messages(server: MessagesServer, headers: Mapping[str, str], raw: bytes) -> Answer:
    check_rate_limit(server.request_window)
    number = server.next_request_number()
    # Latency first, so even errors take as long as a round trip to the real API would.
    time.sleep(server.latency_ms / 1000)
    check_api_key(headers)
    body = parse_body(raw)
    validate_messages_request(body)
    faults = server.faults  # one read: an admin update mid-request applies to the next one
    fault = pick_fault(faults, body, raw, number)
    if fault in CONNECTION_BEHAVIOURS:
        raise ConnectionFault(fault, faults.hang_s)
    if fault is not None:
        raise_status_fault(fault)
    return 200, build_message(server, body, fault)


def handle_count_tokens(server: MessagesServer, headers: Mapping[str, str], raw: bytes) -> Answer:
    """``{"input_tokens": N}``: N is exactly the input, cache write and cache read tokens that
    ``/v1/messages`` bills for the same body (the cache's state does not change N)."""
    server.note_count_tokens_request()
    check_api_key(headers)
    body = parse_body(raw)
    validate_count_tokens_request(body)
    forced_tool(body)  # a tool_choice naming no tool is a 400 here too
    return 200, {"input_tokens": count_input_tokens(body)}
