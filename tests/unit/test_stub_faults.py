"""The stand-in's fault rules: names, shares, per-session markers, runtime replacement."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from scheduler.dev.llm_stub import (
    ApiError,
    ConnectionFault,
    FaultConfig,
    faults_from_flags,
    faulty_content,
    handle_messages,
    pick_fault,
    raise_status_fault,
    route,
)
from scheduler.dev.llm_stub.billing import PromptCache
from scheduler.dev.llm_stub.ratewindow import RequestWindow

SCHEMA = {"type": "object", "properties": {"summary": {"type": "string"}},
          "required": ["summary"], "additionalProperties": False}


def body_for(text: str) -> dict[str, Any]:
    return {"model": "claude-haiku-4-5", "max_tokens": 256,
            "messages": [{"role": "user", "content": text}],
            "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}


def raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


class FakeServer:
    """What the request handlers read from the server, without a socket."""

    def __init__(self, faults: FaultConfig) -> None:
        self.faults = faults
        self.latency_ms = 0
        self.prompt_cache = PromptCache()
        self.request_window: RequestWindow | None = None
        self.count = 0

    def next_request_number(self) -> int:
        self.count += 1
        return self.count

    def note_count_tokens_request(self) -> None:
        """Not counted: these tests only send Messages requests."""

    def note_billed(self, model: str, usage: Mapping[str, int], batch: bool) -> None:
        """Not kept: these tests check answers, not the bill."""


@pytest.mark.parametrize(("given", "name"), [
    (429, "429"), ("529", "529"), ("reset", "reset"), ("connection_reset", "reset"),
    ("timeout", "hang"), ("malformed", "malformed_json"), ("REFUSAL", "refusal"),
    ("max_tokens", "max_tokens"),
])
def test_fault_names_are_normalised(given: int | str, name: str) -> None:
    config = FaultConfig(fail_session_ids={"s": given}, rates={given: 0.1})
    assert config.fail_session_ids == {"s": name}
    assert config.rates == {name: 0.1}


@pytest.mark.parametrize("bad", [{"rates": {"nope": 0.1}}, {"rates": {"200": 0.1}},
                                 {"rates": {"429": 0.7, "529": 0.7}},
                                 {"rates": {"429": -0.1}}, {"error_rate": 1.5},
                                 {"fail_session_ids": {"s": "teapot"}}, {"hang_s": -1}])
def test_bad_configs_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaultConfig(**bad)


def test_a_session_marker_wins_over_the_draw() -> None:
    config = FaultConfig(fail_session_ids={"call_7": "refusal"}, rates={"529": 1.0})
    body = body_for("user: hi\nsession_id=call_7")
    assert pick_fault(config, body, raw(body), 1) == "refusal"
    longer = body_for("session_id=call_77")  # a longer id is another session
    assert pick_fault(config, longer, raw(longer), 1) == "529"


def test_shares_split_the_requests_reproducibly() -> None:
    config = FaultConfig(rates={"429": 0.1, "reset": 0.1, "hang": 0.1, "401": 0.1})
    body = body_for("user: hello")
    picks = [pick_fault(config, body, raw(body), n) for n in range(4000)]
    assert picks == [pick_fault(config, body, raw(body), n) for n in range(4000)]
    for fault in ("429", "reset", "hang", "401"):
        assert 300 < picks.count(fault) < 500
    assert 2200 < picks.count(None) < 2600


def test_the_legacy_error_rate_draws_first_as_before() -> None:
    body = body_for("x")
    legacy = FaultConfig(error_rate=0.5, error_status=500)
    both = FaultConfig(error_rate=0.5, error_status=500, rates={"429": 0.5})
    for number in range(200):
        before = pick_fault(legacy, body, raw(body), number)
        assert pick_fault(both, body, raw(body), number) == (before or "429")


def test_status_faults_raise_the_api_error_and_behaviours_do_not() -> None:
    with pytest.raises(ApiError) as caught:
        raise_status_fault("529")
    assert (caught.value.status, caught.value.message) == (529, "Overloaded")
    raise_status_fault("refusal")  # answered as a 200, not raised


def test_malformed_json_and_max_tokens_answers_do_not_parse() -> None:
    body = body_for("user: I want a refund of 40 dollars")
    for fault, stop in (("malformed_json", "end_turn"), ("max_tokens", "max_tokens")):
        content, stop_reason = faulty_content(body, fault)
        assert stop_reason == stop
        with pytest.raises(json.JSONDecodeError):
            json.loads(content[0]["text"])


def test_refusal_answer() -> None:
    content, stop_reason = faulty_content(body_for("user: hi"), "refusal")
    assert stop_reason == "refusal" and content[0]["type"] == "text"


def test_connection_faults_are_raised_for_the_handler() -> None:
    server = FakeServer(FaultConfig(fail_session_ids={"a": "hang", "b": "reset"},
                                         hang_s=7))
    for marker, behaviour in (("a", "hang"), ("b", "reset")):
        body = body_for(f"session_id={marker}")
        with pytest.raises(ConnectionFault) as caught:
            handle_messages(server, {"x-api-key": "k"}, raw(body))
        assert caught.value.behaviour == behaviour
        assert caught.value.hang_s == 7


def test_faults_are_replaced_at_runtime_and_bad_ones_refused() -> None:
    server: Any = SimpleNamespace(faults=FaultConfig())
    update = {"rates": {"401": 1.0}, "fail_session_ids": {"s1": "400"}}
    status, shown = route(server, "POST", "/_faults", {}, json.dumps(update).encode())
    assert status == 200 and shown["rates"] == {"401": 1.0}
    assert server.faults.fail_session_ids == {"s1": "400"}
    assert route(server, "GET", "/_faults", {}, b"")[1] == shown
    for bad in ({"rates": {"401": 2}}, {"nope": 1}, [1, 2], {"rates": "x"}):
        with pytest.raises(ApiError) as caught:
            route(server, "POST", "/_faults", {}, json.dumps(bad).encode())
        assert caught.value.status == 400
    assert server.faults.rates == {"401": 1.0}  # a refused update changes nothing


def test_command_line_flags() -> None:
    config = faults_from_flags(fail_sessions=["call=1=refusal"], rates=["429=0.05", "reset=0.1"],
                               retry_after_s=3, hang_s=9)
    assert config.fail_session_ids == {"call=1": "refusal"}
    assert config.rates == {"429": 0.05, "reset": 0.1}
    assert (config.retry_after_s, config.hang_s) == (3, 9)
    for bad in (["429"], ["429=lots"], ["=0.1"]):
        with pytest.raises(ValueError):
            faults_from_flags(rates=bad)
