"""The LLM stand-in, driven through the real Anthropic SDK (the path the worker takes)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import TextBlockParam

from scheduler.dev.llm_stub import FaultConfig, StubServer, make_server

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "claude-haiku-4-5"
SENTIMENTS = ["Positive", "Negative", "Neutral", "Unknown"]
INTENTS = ["booking", "billing", "other"]

ANALYSIS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "call_summary": {"type": "string"},
        "call_successful": {"type": "boolean"},
        "user_sentiment": {"type": "string", "enum": SENTIMENTS},
        "intent": {"enum": INTENTS},
        "party_size": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        "guests": {"type": "integer"},
        "callback_time": {"type": ["string", "null"]},
        "details": {
            "type": "object",
            "properties": {"is_new_customer": {"type": "boolean"}},
            "required": ["is_new_customer"],
            "additionalProperties": False,
        },
        "topics": {"type": "array", "items": {"type": "string"}},
    },
    "required": [
        "call_summary",
        "call_successful",
        "user_sentiment",
        "intent",
        "party_size",
        "guests",
        "callback_time",
        "details",
        "topics",
    ],
    "additionalProperties": False,
}

Starter = Callable[..., StubServer]


@pytest.fixture
def start_stub() -> Iterator[Starter]:
    """Start stubs on free ports in background threads; every one is shut down afterwards."""
    running: list[tuple[StubServer, threading.Thread]] = []

    def start(latency_ms: int = 0, faults: FaultConfig | None = None) -> StubServer:
        server = make_server("127.0.0.1", 0, latency_ms=latency_ms, faults=faults)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def stub(start_stub: Starter) -> StubServer:
    return start_stub()


def client_for(server: StubServer, api_key: str = "test") -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=api_key, base_url=base_url(server), max_retries=0)


def base_url(server: StubServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def transcript_prompt(transcript: str) -> str:
    return f"Analyse the call below.\n<transcript>\n{transcript}\n</transcript>"


def ask_json(server: StubServer, transcript: str, schema: dict[str, Any] | None = None) -> Any:
    with client_for(server) as client:
        message = client.messages.create(
            model=MODEL,
            max_tokens=512,
            system=[{"type": "text", "text": "You analyse calls."}],
            messages=[{"role": "user", "content": transcript_prompt(transcript)}],
            output_config={"format": {"type": "json_schema", "schema": schema or ANALYSIS_SCHEMA}},
        )
    assert message.stop_reason == "end_turn"
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "text"
    return json.loads(block.text)


def hash_choice(transcript: str, name: str, choices: list[str]) -> str:
    digest = int(hashlib.sha256((transcript + name).encode()).hexdigest(), 16)
    return choices[digest % len(choices)]


def raw_post(server: StubServer, path: str, body: bytes, api_key: str = "test") -> tuple[int, Any]:
    request = urllib.request.Request(
        base_url(server) + path,
        data=body,
        method="POST",
        headers={"content-type": "application/json", "x-api-key": api_key},
    )
    return open_url(request)


def open_url(request: urllib.request.Request | str) -> tuple[int, Any]:
    # An empty ProxyHandler: a proxy set in the environment must not see local requests.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_json_answer_has_exactly_the_schema_keys_and_types(stub: StubServer) -> None:
    answer = ask_json(stub, "agent: Hello\nuser: I would like to book a table")

    assert set(answer) == set(ANALYSIS_SCHEMA["properties"])
    assert isinstance(answer["call_summary"], str)
    assert isinstance(answer["call_successful"], bool)
    assert answer["user_sentiment"] in SENTIMENTS
    assert answer["intent"] in INTENTS
    assert isinstance(answer["party_size"], int | float)
    assert isinstance(answer["guests"], int) and not isinstance(answer["guests"], bool)
    assert isinstance(answer["callback_time"], str)
    assert set(answer["details"]) == {"is_new_customer"}
    assert isinstance(answer["details"]["is_new_customer"], bool)
    assert len(answer["topics"]) == 1 and isinstance(answer["topics"][0], str)


def test_enum_picks_the_choice_the_user_said_last_when_said_as_often(stub: StubServer) -> None:
    # "billing" comes first in the text, "other" is said last.
    answer = ask_json(stub, "user: A BILLING question, and some OTHER thing too")

    assert answer["intent"] == "other"


def test_enum_needs_a_whole_word(stub: StubServer) -> None:
    transcript = "user: I am rebooking my visit"
    answer = ask_json(stub, transcript)

    assert answer["intent"] == hash_choice(transcript, "intent", INTENTS)


def test_enum_without_a_named_choice_is_picked_by_hash(stub: StubServer) -> None:
    transcript = "user: Hi there, my name is Sam"
    answer = ask_json(stub, transcript)

    assert answer["intent"] == hash_choice(transcript, "intent", INTENTS)
    assert answer["user_sentiment"] == "Neutral"  # the user said enough, but no cue word


def test_user_sentiment_and_success_come_from_cue_words(stub: StubServer) -> None:
    happy = ask_json(stub, "agent: You are booked for Friday.\nuser: Perfect, thank you!")
    angry = ask_json(stub, "user: This is terrible, cancel it, I am not interested")

    assert (happy["user_sentiment"], happy["call_successful"]) == ("Positive", True)
    assert (angry["user_sentiment"], angry["call_successful"]) == ("Negative", False)


def test_numbers_come_from_the_transcript_next_to_the_fields_words(stub: StubServer) -> None:
    answer = ask_json(stub, "user: My budget is 42.5 dollars for 3 guests")

    assert answer["party_size"] == 42.5  # no word of "party_size" is said: the first number
    assert answer["guests"] == 3  # next to "guests"


def test_number_without_digits_in_the_transcript_is_below_ten(stub: StubServer) -> None:
    answer = ask_json(stub, "user: no digits here at all")

    assert 0 <= answer["guests"] < 10


def test_summary_is_the_first_user_line_inside_the_transcript_tags(stub: StubServer) -> None:
    transcript = (
        "agent: Thanks for calling, how can I help?\n"
        "user: Hi, I'd like to book a cleaning for two people next Tuesday, please, thanks.\n"
        "agent: Done."
    )
    answer = ask_json(stub, transcript)

    assert answer["call_summary"] == "Hi, I'd like to book a cleaning for two people next Tuesday,"
    assert answer["callback_time"] == "callback_time: Hi, I'd like to book a"


def test_text_outside_the_transcript_tags_is_ignored(stub: StubServer) -> None:
    transcript = "user: hello there"
    with client_for(stub) as client:
        message = client.messages.create(
            model=MODEL,
            max_tokens=512,
            messages=[{"role": "user", "content": "billing 99 " + transcript_prompt(transcript)}],
            output_config={"format": {"type": "json_schema", "schema": ANALYSIS_SCHEMA}},
        )
    block = message.content[0]
    assert block.type == "text"
    answer = json.loads(block.text)

    assert answer["intent"] == hash_choice(transcript, "intent", INTENTS)
    assert answer["guests"] != 99


def test_same_request_gives_the_same_answer(stub: StubServer) -> None:
    transcript = "user: Please call me back at 5 about my invoice"

    first, second = ask_json(stub, transcript), ask_json(stub, transcript)
    other = ask_json(stub, "user: something else entirely, 7 people")

    assert first == second
    assert other != first


def test_forced_strict_tool_gets_a_tool_use_block_that_fits(stub: StubServer) -> None:
    with client_for(stub) as client:
        message = client.messages.create(
            model=MODEL,
            max_tokens=512,
            messages=[{"role": "user", "content": transcript_prompt("user: booking for 2")}],
            tools=[
                {
                    "name": "record_analysis",
                    "description": "Record the analysis.",
                    "input_schema": ANALYSIS_SCHEMA,
                    "strict": True,
                }
            ],
            tool_choice={"type": "tool", "name": "record_analysis"},
        )

    assert message.stop_reason == "tool_use"
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.name == "record_analysis"
    assert block.id.startswith("toolu_")
    assert set(block.input) == set(ANALYSIS_SCHEMA["properties"])
    assert block.input["intent"] == "booking"
    assert block.input["guests"] == 2


def test_plain_request_gets_a_one_sentence_text(stub: StubServer) -> None:
    with client_for(stub) as client:
        message = client.messages.create(
            model=MODEL,
            max_tokens=256,
            messages=[{"role": "user", "content": "user: my sink is leaking"}],
        )

    assert message.stop_reason == "end_turn"
    block = message.content[0]
    assert block.type == "text"
    assert block.text.endswith(".") and block.text.count(".") == 1
    assert "sink is leaking" in block.text
    assert message.id.startswith("msg_") and len(message.id) == len("msg_") + 24
    assert message.model == MODEL


def test_answer_longer_than_max_tokens_stops_with_max_tokens(stub: StubServer) -> None:
    with client_for(stub) as client:
        message = client.messages.create(
            model=MODEL,
            max_tokens=3,
            messages=[{"role": "user", "content": transcript_prompt("user: hi")}],
            output_config={"format": {"type": "json_schema", "schema": ANALYSIS_SCHEMA}},
        )

    assert message.stop_reason == "max_tokens"
    block = message.content[0]
    assert block.type == "text"
    with pytest.raises(json.JSONDecodeError):
        json.loads(block.text)


def test_invalid_api_key_raises_authentication_error(stub: StubServer) -> None:
    with (
        client_for(stub, api_key="invalid") as client,
        pytest.raises(anthropic.AuthenticationError),
    ):
        client.messages.create(
            model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )


def test_error_rate_one_raises_overloaded(start_stub: Starter) -> None:
    server = start_stub(faults=FaultConfig(error_rate=1.0))

    with client_for(server) as client, pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.create(
            model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )

    assert caught.value.status_code == 529
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": caught.value.response.headers["request-id"],
    }


def test_session_fault_429_raises_rate_limit_with_retry_after(start_stub: Starter) -> None:
    server = start_stub(faults=FaultConfig(fail_session_ids={"call_7": 429}))

    with client_for(server) as client:
        with pytest.raises(anthropic.RateLimitError) as caught:
            client.messages.create(
                model=MODEL,
                max_tokens=16,
                messages=[{"role": "user", "content": "session_id=call_7\nuser: hi"}],
            )
        # A longer id that merely starts with the marked one is not affected.
        ok = client.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": "session_id=call_77\nuser: hi"}],
        )

    assert caught.value.response.headers["retry-after"] == "1"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert ok.stop_reason == "end_turn"


def test_error_rate_draws_are_reproducible(start_stub: Starter) -> None:
    faults = FaultConfig(error_rate=0.5, error_status=500)
    bodies = [
        json.dumps(
            {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": str(n)}]}
        )
        for n in range(24)
    ]

    runs = []
    for _ in range(2):
        server = start_stub(faults=faults)
        runs.append([raw_post(server, "/v1/messages", body.encode())[0] for body in bodies])

    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}


# 8 tokens a copy ("Follow| these| analy|sis| rules| careful|ly|."): 2,000 tokens, above the
# minimum of Sonnet 4.5 (1,024), below those of Sonnet 4.6 (2,048) and Haiku 4.5 (4,096).
LONG_RULES = "Follow these analysis rules carefully. " * 250


def ask_with_rules(server: StubServer, model: str, cache_control: bool) -> anthropic.types.Usage:
    block: TextBlockParam = {"type": "text", "text": LONG_RULES}
    if cache_control:
        block["cache_control"] = {"type": "ephemeral"}
    with client_for(server) as client:
        return client.messages.create(
            model=model,
            max_tokens=256,
            system=[block],
            messages=[{"role": "user", "content": transcript_prompt("user: hi")}],
        ).usage


def test_prompt_cache_writes_then_reads_a_long_marked_prefix(stub: StubServer) -> None:
    model = "claude-sonnet-4-5"  # caches from 1,024 tokens
    uncached, first, second = (ask_with_rules(stub, model, mark) for mark in (False, True, True))

    assert uncached.cache_creation_input_tokens == 0 and uncached.cache_read_input_tokens == 0
    assert first.cache_creation_input_tokens and 2000 <= first.cache_creation_input_tokens < 2048
    assert first.cache_read_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens < uncached.input_tokens
    assert second.input_tokens + second.cache_read_input_tokens == uncached.input_tokens


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-haiku-4-5-20251001",
                                   "claude-sonnet-4-6"])
def test_a_prefix_below_the_models_minimum_is_never_cached(stub: StubServer, model: str) -> None:
    uncached = ask_with_rules(stub, model, False)
    marked = [ask_with_rules(stub, model, True) for _ in range(2)]

    for usage in marked:
        assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
        assert usage.input_tokens == uncached.input_tokens


def test_short_marked_prefix_is_not_cached(stub: StubServer) -> None:
    with client_for(stub) as client:
        usage = client.messages.create(
            model=MODEL,
            max_tokens=256,
            system=[{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": "user: hi"}],
        ).usage

    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert usage.input_tokens > 0


EPHEMERAL: dict[str, Any] = {"type": "ephemeral"}
RECORD_TOOL: Any = {"name": "record_analysis", "description": "Record the analysis.",
                               "input_schema": ANALYSIS_SCHEMA}
# name: (what the body adds, whether its marked prefix reaches Sonnet 4.5's minimum)
COUNTED_BODIES: dict[str, tuple[dict[str, Any], bool]] = {
    "plain": ({}, False),
    "system string and schema": ({
        "system": "You analyse calls.",
        "output_config": {"format": {"type": "json_schema", "schema": ANALYSIS_SCHEMA}}}, False),
    "tools": ({"tools": [RECORD_TOOL],
               "tool_choice": {"type": "tool", "name": "record_analysis"}}, False),
    "marked system and schema": ({
        "system": [{"type": "text", "text": LONG_RULES, "cache_control": EPHEMERAL}],
        "output_config": {"format": {"type": "json_schema", "schema": ANALYSIS_SCHEMA}}}, True),
    "marked tool, too short": ({"tools": [RECORD_TOOL | {"cache_control": EPHEMERAL}]}, False),
    "top-level marker": ({"system": LONG_RULES, "cache_control": EPHEMERAL}, True),
    "several turns": ({"messages": [
        {"role": "user", "content": transcript_prompt("user: my invoice is wrong")},
        {"role": "assistant", "content": [{"type": "text", "text": "Which invoice?"}]},
        {"role": "user", "content": [{"type": "text", "text": "The one from May, 240 dollars"}]},
    ]}, False),
}


@pytest.mark.parametrize("name", list(COUNTED_BODIES))
def test_count_tokens_is_exactly_what_messages_bills(stub: StubServer, name: str) -> None:
    parts, cached = COUNTED_BODIES[name]
    body: dict[str, Any] = {"model": "claude-sonnet-4-5", "messages": [
        {"role": "user", "content": transcript_prompt("user: hi")}]} | parts
    with client_for(stub) as client:
        counted = client.messages.count_tokens(**body).input_tokens
        first, second = (client.messages.create(max_tokens=512, **body).usage for _ in range(2))

    for usage in (first, second):  # a cache write, then a read: the same total either way
        billed = (usage.input_tokens + (usage.cache_creation_input_tokens or 0)
                  + (usage.cache_read_input_tokens or 0))
        assert counted == billed
    assert bool(second.cache_read_input_tokens) == cached
    assert stub.count_tokens_requests == 1 and stub.request_count == 2


def test_count_tokens_counts_the_schema_and_the_tools(stub: StubServer) -> None:
    messages: list[Any] = [{"role": "user", "content": "user: hi"}]
    schema: Any = {"format": {"type": "json_schema", "schema": ANALYSIS_SCHEMA}}
    with client_for(stub) as client:
        plain = client.messages.count_tokens(model=MODEL, messages=messages).input_tokens
        with_schema = client.messages.count_tokens(model=MODEL, messages=messages,
                                                   output_config=schema).input_tokens
        with_tool = client.messages.count_tokens(model=MODEL, messages=messages,
                                                 tools=[RECORD_TOOL]).input_tokens

    schema_json = len(json.dumps(ANALYSIS_SCHEMA, separators=(",", ":")))
    assert with_schema - plain > schema_json / 5  # the schema's JSON, and an overhead
    assert with_tool - plain > schema_json / 5


@pytest.mark.parametrize(("body", "field"), [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "", "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": MODEL}, "messages"),
    ({"model": MODEL, "messages": []}, "messages"),
    ({"model": MODEL, "messages": [{"role": "system", "content": "hi"}]}, "messages.0.role"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
      "output_config": {"format": {"type": "json_schema", "schema": "x"}}}, "output_config"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
      "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice"),
])
def test_count_tokens_refuses_what_messages_refuses(
    stub: StubServer, body: dict[str, Any], field: str
) -> None:
    status, payload = raw_post(stub, "/v1/messages/count_tokens", json.dumps(body).encode())

    assert (status, payload["error"]["type"]) == (400, "invalid_request_error")
    assert payload["error"]["message"].startswith(field)


def test_count_tokens_with_a_bad_key_is_401(stub: StubServer) -> None:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with (client_for(stub, api_key="invalid") as client,
          pytest.raises(anthropic.AuthenticationError)):
        client.messages.count_tokens(**body)
    status, _ = raw_post(stub, "/v1/messages/count_tokens", json.dumps(body).encode(), api_key="")

    assert status == 401
    assert stub.count_tokens_requests == 2 and stub.request_count == 0


def test_missing_max_tokens_is_a_400_naming_the_field(stub: StubServer) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}

    status, payload = raw_post(stub, "/v1/messages", json.dumps(body).encode())

    assert status == 400
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in payload["error"]["message"]


def test_bad_json_unknown_path_and_missing_key(stub: StubServer) -> None:
    bad_json = raw_post(stub, "/v1/messages", b"{not json")
    unknown = raw_post(stub, "/v1/nothing", b"{}")
    no_key = raw_post(stub, "/v1/messages", b"{}", api_key="")

    assert (bad_json[0], bad_json[1]["error"]["type"]) == (400, "invalid_request_error")
    assert (unknown[0], unknown[1]["error"]["type"]) == (404, "not_found_error")
    assert (no_key[0], no_key[1]["error"]["type"]) == (401, "authentication_error")


def test_healthz_and_request_count(stub: StubServer) -> None:
    assert open_url(base_url(stub) + "/healthz") == (200, {"ok": True})
    assert stub.request_count == 0

    ask_json(stub, "user: hi")
    ask_json(stub, "user: hi")
    with client_for(stub) as client:
        client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "hi"}])

    assert stub.request_count == 2
    assert stub.count_tokens_requests == 1


def test_latency_is_applied_per_request(start_stub: Starter) -> None:
    server = start_stub(latency_ms=300)

    started = time.monotonic()
    ask_json(server, "user: hi")

    assert time.monotonic() - started >= 0.3


def test_response_headers(stub: StubServer) -> None:
    with client_for(stub) as client:
        raw = client.messages.with_raw_response.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )

    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["request-id"].startswith("req_")
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "100000"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "99999"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_module_runs_as_a_process_and_stops_on_sigterm() -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler.dev.llm_stub", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        banner = process.stderr.readline().strip()
        assert banner == f"llm-stub listening on http://127.0.0.1:{port}"
        assert open_url(f"http://127.0.0.1:{port}/healthz") == (200, {"ok": True})

        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
