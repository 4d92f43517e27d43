"""The token buckets in a real Redis, and the boundary feeding them from real HTTP headers."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from scheduler.dev.llm_stub import FaultConfig, StubServer, enable_rate_limit, make_server
from scheduler.dev.processes import free_port
from shared import errors
from shared.broker import redis_client_url
from shared.llm import make_client
from shared.ratelimit import Cost, Feedback, Limits, RateLimiter
from shared.settings import Settings
from worker import llm

pytestmark = pytest.mark.integration

MODEL = "claude-haiku-4-5"


@pytest.fixture
def connection(broker_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_client_url(broker_url))
    yield client
    client.close()


def limiter(connection: redis.Redis, **limits: float) -> RateLimiter:
    # A fresh key per test: buckets of other tests never interfere.
    return RateLimiter(connection, "key-" + secrets.token_hex(6), Limits(**limits))  # type: ignore[arg-type]


def test_grants_the_burst_then_asks_to_wait(connection: redis.Redis) -> None:
    bucket = limiter(connection, requests=100, period_s=10.0)  # burst 2, ~9.8/s
    assert bucket.try_take(MODEL, Cost()) == 0.0
    assert bucket.try_take(MODEL, Cost()) == 0.0
    wait_s = bucket.try_take(MODEL, Cost())
    assert 0.0 < wait_s <= 0.2
    time.sleep(wait_s + 0.02)
    assert bucket.try_take(MODEL, Cost()) == 0.0


def test_a_call_larger_than_the_burst_leaves_a_debt(connection: redis.Redis) -> None:
    bucket = limiter(connection, input_tokens=1000, period_s=1.0)  # burst 20 tokens
    assert bucket.try_take(MODEL, Cost(input_tokens=500)) == 0.0
    assert bucket.try_take(MODEL, Cost(input_tokens=10)) > 0.4


def test_settle_refunds_what_was_not_used(connection: redis.Redis) -> None:
    bucket = limiter(connection, output_tokens=10_000, period_s=60.0)  # burst 200
    assert bucket.try_take(MODEL, Cost(output_tokens=200)) == 0.0
    assert bucket.try_take(MODEL, Cost(output_tokens=150)) > 0
    bucket.settle(MODEL, Cost(output_tokens=200), Cost(output_tokens=20))
    assert bucket.try_take(MODEL, Cost(output_tokens=150)) == 0.0


def test_tighten_blocks_every_model_user_until_retry_after(connection: redis.Redis) -> None:
    bucket = limiter(connection, requests=1000, period_s=60.0)
    bucket.tighten(MODEL, Feedback(block_s=0.5))
    assert 0.3 < bucket.try_take(MODEL, Cost()) <= 0.5
    assert bucket.try_take("claude-sonnet-4-5", Cost()) == 0.0  # buckets are per model


def test_tighten_lowers_a_bucket_to_what_remains(connection: redis.Redis) -> None:
    bucket = limiter(connection, requests=6000, period_s=60.0)  # burst 120
    assert bucket.try_take(MODEL, Cost()) == 0.0
    bucket.tighten(MODEL, Feedback(remaining=(0, None, None)))
    assert bucket.try_take(MODEL, Cost()) > 0


@pytest.fixture
def strict_stub() -> Iterator[StubServer]:
    """Two requests per 30 s; a session marked `session_id=busy` always gets a 429."""
    server = make_server("127.0.0.1", 0, faults=FaultConfig(fail_session_ids={"busy": 429},
                                                            retry_after_s=30.0))
    enable_rate_limit(server, 2, 30.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def client_for(server: StubServer, broker_url: str) -> llm.Caller:
    """Our own limit is far above the provider's: only its headers can hold us back."""
    settings = Settings(anthropic_base_url=f"http://127.0.0.1:{server.server_address[1]}",
                        backfill_llm="stub", broker_url=broker_url,
                        anthropic_api_key="key-" + secrets.token_hex(6),
                        rl_requests_per_min=1000, rl_max_wait_s=0.0)
    return llm.make_caller(settings)


def request(text: str) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}


def test_an_exhausted_budget_in_the_headers_stops_the_next_call(
    strict_stub: StubServer, broker_url: str
) -> None:
    with client_for(strict_stub, broker_url) as client:
        for _ in range(2):
            client.complete(request("hello"))
        with pytest.raises(errors.LLMRateLimited) as caught:
            client.complete(request("hello"))  # remaining 0 until reset: never sent
    window = strict_stub.request_window
    assert window is not None and window.rejected == [] and len(window.admitted) == 2
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 20


def test_a_429_blocks_the_bucket_for_retry_after(
    strict_stub: StubServer, broker_url: str
) -> None:
    with client_for(strict_stub, broker_url) as client:
        with pytest.raises(errors.LLMRateLimited):
            client.complete(request("session_id=busy hello"))  # the provider's 429
        sent = strict_stub.request_count
        with pytest.raises(errors.LLMRateLimited) as caught:
            client.complete(request("hello"))  # refused by the shared bucket
    assert strict_stub.request_count == sent
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s > 20


def test_an_unreachable_limiter_defers_the_call_instead_of_sending_it() -> None:
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    policy = llm.CallPolicy(limiter=RateLimiter(dead, "key", Limits(requests=10)),
                            max_wait_s=1.0)
    sdk = make_client(Settings(anthropic_base_url="http://127.0.0.1:9", backfill_llm="stub"))
    with llm.Caller(sdk, policy) as client, pytest.raises(errors.LLMRateLimited,
                                                        match="unavailable"):
        client.complete(request("hello"))
