"""The stand-in's Message Batches endpoints through the real SDK (`client.messages.batches`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from scheduler.dev.llm_stub import FaultConfig, StubServer, make_server
from scheduler.dev.llm_stub import batches as stub_batches

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[StubServer]:
    stub = make_server("127.0.0.1", 0, faults=FaultConfig(fail_session_ids={"live400": 400}))
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    yield stub
    stub.shutdown()
    stub.server_close()


@pytest.fixture
def client(server: StubServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="test", max_retries=0,
                             base_url=f"http://127.0.0.1:{server.server_address[1]}") as client:
        yield client


def request(custom_id: str, content: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "params": {
        "model": "claude-haiku-4-5", "max_tokens": 200,
        "messages": [{"role": "user", "content": content}]}}


def test_batch_ends_after_the_delay_and_answers_like_messages(
    server: StubServer, client: anthropic.Anthropic
) -> None:
    stub_batches.configure(server, delay_ms=300)
    batch = client.messages.batches.create(requests=[request("a", "user: hello there")])
    assert (batch.processing_status, batch.request_counts.processing) == ("in_progress", 1)
    assert batch.results_url is None
    time.sleep(0.4)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.results_url
    assert ended.request_counts.succeeded == 1
    [line] = list(client.messages.batches.results(batch.id))
    live = client.messages.create(model="claude-haiku-4-5", max_tokens=200,
                                  messages=[{"role": "user", "content": "user: hello there"}])
    assert line.custom_id == "a" and line.result.type == "succeeded"
    assert line.result.message.content == live.content


def test_batch_faults_per_session_marker(server: StubServer,
                                         client: anthropic.Anthropic) -> None:
    stub_batches.configure(server, fail_session_ids={"e1": "expired", "c1": "canceled",
                                                         "o1": "errored:overloaded_error"},
                               fail_limit={"e1": 1})
    requests = [request("e", "session_id=e1"), request("c", "session_id=c1"),
                request("o", "session_id=o1"), request("s", "session_id=live400"),
                request("ok", "fine")]
    batch = client.messages.batches.create(requests=requests)
    types = {line.custom_id: line.result for line in client.messages.batches.results(batch.id)}
    assert {key: result.type for key, result in types.items()} == {
        "e": "expired", "c": "canceled", "o": "errored", "s": "errored", "ok": "succeeded"}
    assert types["o"].error.error.type == "overloaded_error"
    assert types["s"].error.error.type == "invalid_request_error"  # the live fault rule
    again = client.messages.batches.create(requests=[request("e", "session_id=e1")])
    [line] = list(client.messages.batches.results(again.id))
    assert line.result.type == "succeeded"  # fail_limit reached


@pytest.mark.parametrize("requests", [
    [], [request("bad id!", "x")], [request("a", "x"), request("a", "y")],
])
def test_bad_batches_are_refused(client: anthropic.Anthropic, requests: Any) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.create(requests=requests)


def test_unknown_batch_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_nope")


def test_admin_route_sets_batch_faults(server: StubServer, client: anthropic.Anthropic) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    answer = httpx2.post(f"{base}/_batches", json={"delay_ms": 5,
                                                   "fail_session_ids": {"x": "expired"}})
    assert answer.status_code == 200 and answer.json()["fail_session_ids"] == {"x": "expired"}
    refused = httpx2.post(f"{base}/_batches", json={"fail_session_ids": {"x": "nope"}})
    assert refused.status_code == 400
