"""The SDK boundary over real HTTP: each provider failure becomes the right error kind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from scheduler.dev.llm_stub import FaultConfig, make_server
from shared import errors
from shared.settings import Settings
from worker import llm

pytestmark = pytest.mark.integration

STATUS_KINDS = {
    400: "llm_bad_request",
    401: "llm_auth",
    402: "llm_billing",
    413: "llm_bad_request",
    429: "llm_rate_limited",
    500: "llm_server_error",
    529: "llm_overloaded",
}


@pytest.fixture(scope="module")
def faulty_url() -> Iterator[str]:
    faults = FaultConfig(fail_session_ids={f"s{status}": status for status in STATUS_KINDS})
    server = make_server("127.0.0.1", 0, faults=faults)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def request_for(marker: str) -> dict[str, object]:
    return {
        "model": "claude-haiku-4-5", "max_tokens": 256,
        "messages": [{"role": "user", "content": f"session_id={marker} hello"}],
        "output_config": {"format": {"type": "json_schema", "schema": {
            "type": "object", "properties": {"summary": {"type": "string"}},
            "required": ["summary"], "additionalProperties": False}}},
    }


def client_for(url: str, timeout_s: float = 10.0) -> llm.Caller:
    return llm.make_caller(Settings(anthropic_base_url=url, backfill_llm="stub",
                                    llm_timeout_s=timeout_s))


@pytest.mark.parametrize(("status", "kind"), sorted(STATUS_KINDS.items()))
def test_status_maps_to_error_kind(faulty_url: str, status: int, kind: str) -> None:
    with client_for(faulty_url) as client, pytest.raises(errors.AnalysisError) as caught:
        client.complete(request_for(f"s{status}"))
    assert caught.value.kind == kind


def test_rate_limit_carries_retry_after(faulty_url: str) -> None:
    with client_for(faulty_url) as client, pytest.raises(errors.LLMRateLimited) as caught:
        client.complete(request_for("s429"))
    assert caught.value.retry_after_s == 1.0


def test_success_returns_text_and_usage(faulty_url: str) -> None:
    with client_for(faulty_url) as client:
        reply = client.complete(request_for("ok"))
    usage = reply.message["usage"]
    assert reply.message["content"][0]["text"].startswith("{")
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0 and reply.latency_ms >= 0


def test_unreachable_server_is_a_connection_error() -> None:
    from scheduler.dev.processes import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with client_for(url) as client, pytest.raises(errors.LLMConnection):
        client.complete(request_for("x"))


def test_slow_server_is_a_timeout() -> None:
    server = make_server("127.0.0.1", 0, latency_ms=2000)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with client_for(url, timeout_s=0.3) as client, pytest.raises(errors.LLMTimeout):
            client.complete(request_for("x"))
    finally:
        server.shutdown()
        server.server_close()
