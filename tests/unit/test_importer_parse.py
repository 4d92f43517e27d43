"""Parsing and validation of import files, and the demo dataset (no services needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scheduler.dev.demo_data import DEMO_WORKSPACES, generate_demo_dataset, write_jsonl
from scheduler.jobs.importer import ImportBatch, parse_import_file, transcript_from_text
from shared.errors import InvalidImport

EXAMPLE = Path(__file__).resolve().parents[3] / "shared" / "examples" / "sessions.jsonl"


def _call(**overrides: Any) -> dict[str, Any]:
    call: dict[str, Any] = {
        "object": "call", "call_id": "call_x", "workspace_id": "ws_t", "agent_id": "agent_t",
        "agent_version": 0, "call_type": "phone_call", "call_status": "ended",
        "direction": "inbound", "from_number": "+1", "to_number": "+2",
        "start_timestamp": 1761955200000, "end_timestamp": 1761955260000, "duration_ms": 60000,
        "transcript_object": [{"role": "agent", "content": "Hi"}],
    }
    call.update(overrides)
    return call


def _agent(**overrides: Any) -> dict[str, Any]:
    agent: dict[str, Any] = {
        "object": "agent", "agent_id": "agent_t", "workspace_id": "ws_t", "version": 0,
        "is_published": False, "kind": "voice", "post_call_analysis_model": "claude-haiku-4-5",
        "post_call_analysis_data": [{"type": "string", "name": "x", "description": "X."}],
    }
    agent.update(overrides)
    return agent


def _write(tmp_path: Path, lines: list[Any]) -> Path:
    path = tmp_path / "import.jsonl"
    text = "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)
                     for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _problems(path: Path) -> list[tuple[int, str]]:
    with pytest.raises(InvalidImport) as caught:
        parse_import_file(path)
    return caught.value.problems


def test_shipped_example_parses() -> None:
    if not EXAMPLE.exists():
        pytest.skip(f"{EXAMPLE} is not present")
    batch = parse_import_file(EXAMPLE)
    assert batch.workspace_ids == ("ws_acme", "ws_globex")
    assert len(batch.agent_versions) == 6
    assert (batch.calls, batch.chats) == (5, 1)
    sessions = {row["session_id"]: row for row in batch.sessions}
    assert sessions["call_002"]["transfer_agent_ids"] == ["agent_billing"]
    assert sessions["call_003"]["agent_transfers"][0]["post_call_analysis_setting"] == "both_agents"
    assert sessions["call_003"]["dynamic_variables"] == {"customer_name": "Dana"}
    assert sessions["call_005"]["from_number"] is None
    assert sessions["chat_001"]["kind"] == "chat"
    assert sessions["chat_001"]["summary"] == "old"
    agents = {(row["agent_id"], row["version"]): row for row in batch.agent_versions}
    assert agents[("agent_web_chat", 0)]["analysis_model"] == "claude-haiku-4-5"
    assert agents[("agent_front_desk", 1)]["analysis_data"][2]["choices"] == [
        "booking", "billing", "other"]


def test_every_bad_line_is_reported_with_its_reason(tmp_path: Path) -> None:
    path = _write(tmp_path, [
        _agent(),                                                        # 1 fine
        "{not json",                                                     # 2
        {"object": "meeting"},                                           # 3
        _call(call_id="c1", start_timestamp="yesterday"),                # 4
        "",                                                              # 5 blank: ignored
        _call(call_id="c2", call_status="foo"),                          # 6
        _call(call_id="c3", transcript_object="hello"),                  # 7
        _agent(workspace_id="", version=1),                              # 8
        _agent(version=-1),                                              # 9
        _call(call_id="x" * 129),                                        # 10
        _agent(version=2, post_call_analysis_data=[{"type": "enum", "name": "e"}]),  # 11
        _agent(version=3, post_call_analysis_data=[{"type": "text", "name": "t"}]),  # 12
        _agent(version=4, post_call_analysis_data={"type": "string"}),  # 13
        _call(call_id="c4"),                                             # 14 fine
        _call(call_id="c4"),                                             # 15 duplicate
        _call(call_id="c\u00005"),                                       # 16
        _call(call_id=None),                                             # 17
        json.dumps(_call(call_id="c6"))[:-1] + ', "m": 1e400}',          # 18
    ])
    problems = _problems(path)
    assert problems == [
        (2, problems[0][1]),
        (3, "unknown object type 'meeting' (expected agent, call or chat)"),
        (4, "start_timestamp must be an integer (epoch ms)"),
        (6, "call_status 'foo' is not one of 'registered', 'not_connected', 'ongoing', "
            "'ended' or 'error'"),
        (7, "transcript_object must be a list of {role, content}"),
        (8, "workspace_id must be a non-empty string"),
        (9, "version must be an integer ≥ 0"),
        (10, "call_id is too long (129 characters, at most 128)"),
        (11, "post_call_analysis_data[0]: enum field 'e' needs a non-empty choices list"),
        (12, "post_call_analysis_data[0].type 'text' is not one of 'system-presets', "
             "'string', 'enum', 'boolean' or 'number'"),
        (13, "post_call_analysis_data must be a list of field objects "
             "{type, name, description, …}"),
        (15, "duplicate call_id 'c4' (also on line 14)"),
        (16, "call_id contains a NUL character"),
        (17, "call_id must be a non-empty string"),
        (18, "not valid JSON: number 1e400 is out of range"),
    ]
    assert problems[0][1].startswith("not valid JSON: ")


def test_missing_fields_and_duplicate_agents(tmp_path: Path) -> None:
    call = _call()
    del call["call_id"]
    path = _write(tmp_path, [call, _agent(), _agent()])
    assert _problems(path) == [
        (1, "missing call_id"),
        (3, "duplicate agent version 'agent_t' v0 in workspace 'ws_t' (also on line 2)"),
    ]


def test_undecodable_and_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(_call()).encode() + b"\n" + '{"call_id": "Søren"}'.encode(
        "latin-1") + b"\n")
    [(number, reason)] = _problems(path)
    assert number == 2 and reason.startswith("not valid UTF-8")
    [(number, reason)] = _problems(tmp_path / "missing.jsonl")
    assert number == 0 and reason.startswith("cannot read")


def test_tolerated_shapes(tmp_path: Path) -> None:
    web_call = _call(call_id="web", call_type="web_call", direction=None, from_number=None,
                     to_number=None, batch_call_id=None, end_timestamp=None, duration_ms=None,
                     call_status="ongoing", call_analysis={"call_summary": "partial"},
                     surprise_key={"ignored": True})
    no_batch = _call(call_id="no_batch")  # no batch_call_id key at all
    chat = {"object": "chat", "chat_id": "chat_x", "workspace_id": "ws_t",
            "agent_id": "chat_agent", "chat_status": "ended", "start_timestamp": 1,
            "retell_llm_dynamic_variables": {"plan": "gold"}, "chat_analysis": {},
            "agent_transfers": [{"from_agent_id": "chat_agent", "to_agent_id": "chat_b",
                                 "post_call_analysis_setting": "only_destination_agent"}]}
    chat_agent = {"object": "agent", "agent_id": "chat_agent", "workspace_id": "ws_t",
                  "version": 0, "is_published": True, "kind": "chat",
                  "post_chat_analysis_model": "gpt-4.1",
                  "post_chat_analysis_data": [{"type": "system-presets", "name": "chat_summary",
                                               "description": "Short."}]}
    batch = parse_import_file(_write(tmp_path, [web_call, no_batch, chat, chat_agent]))
    rows = {row["session_id"]: row for row in batch.sessions}
    assert rows["web"]["direction"] is None and rows["web"]["end_timestamp"] is None
    assert rows["web"]["summary"] == "partial" and rows["web"]["successful"] is None
    assert rows["web"]["custom_analysis_data"] == {}
    assert rows["no_batch"]["batch_call_id"] is None
    assert rows["chat_x"]["dynamic_variables"] == {"plan": "gold"}
    assert rows["chat_x"]["transfer_agent_ids"] == ["chat_b"]
    assert rows["chat_x"]["call_type"] is None and rows["chat_x"]["in_voicemail"] is None
    [agent] = batch.agent_versions
    assert agent["kind"] == "chat" and agent["analysis_model"] == "gpt-4.1"
    assert agent["analysis_data"][0]["name"] == "chat_summary"


def test_plain_transcript_string_is_accepted(tmp_path: Path) -> None:
    call = _call(transcript="Agent: Hello, Acme dental.\nUser: I need a cleaning.\n"
                            "for two people\nAgent: Booked.")
    del call["transcript_object"]
    other = _call(call_id="call_y", transcript="hello there")
    del other["transcript_object"]
    batch = parse_import_file(_write(tmp_path, [call, other]))
    assert batch.sessions[0]["transcript"] == [
        {"role": "agent", "content": "Hello, Acme dental."},
        {"role": "user", "content": "I need a cleaning.\nfor two people"},
        {"role": "agent", "content": "Booked."},
    ]
    assert batch.sessions[1]["transcript"] == [{"role": "user", "content": "hello there"}]
    assert transcript_from_text("   ") == []


def test_non_ascii_is_accepted(tmp_path: Path) -> None:
    call = _call(transcript_object=[{"role": "user", "content": "Grüße aus Köln — ¿qué tal? 🦷"}],
                 metadata={"clínica": "Søren"})
    path = tmp_path / "utf8.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(call, ensure_ascii=False).encode() + b"\r\n")
    [row] = parse_import_file(path).sessions
    assert row["transcript"][0]["content"] == "Grüße aus Köln — ¿qué tal? 🦷"
    assert row["metadata"] == {"clínica": "Søren"}


def test_demo_dataset_is_deterministic_and_varied(tmp_path: Path) -> None:
    objects = generate_demo_dataset()
    assert objects == generate_demo_dataset()
    assert objects != generate_demo_dataset(seed=8)
    agents = [obj for obj in objects if obj["object"] == "agent"]
    sessions = [obj for obj in objects if obj["object"] != "agent"]
    assert objects[: len(agents)] == agents  # agents first
    assert len(sessions) >= 2000
    assert {obj["workspace_id"] for obj in objects} == set(DEMO_WORKSPACES)
    assert {obj["object"] for obj in sessions} == {"call", "chat"}
    for workspace_id in DEMO_WORKSPACES:
        kinds = {a["kind"] for a in agents if a["workspace_id"] == workspace_id}
        assert kinds == {"voice", "chat"}
    settings = {t["post_call_analysis_setting"]
                for s in sessions for t in s.get("agent_transfers", [])}
    assert settings == {"only_destination_agent", "both_agents"}
    assert {s["object"] for s in sessions if s.get("agent_transfers")} == {"call", "chat"}
    _assert_drafts_differ(agents)


def _assert_drafts_differ(agents: list[dict[str, Any]]) -> None:
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for agent in agents:
        by_agent.setdefault(agent["agent_id"], []).append(agent)
    assert len(by_agent) == 6
    for versions in by_agent.values():
        versions.sort(key=lambda a: a["version"])
        *published, draft = versions
        assert [a["is_published"] for a in versions] == [True, True, False]
        key = "post_chat_analysis_data" if draft["kind"] == "chat" else "post_call_analysis_data"
        assert all(draft[key] != p[key] for p in published)
    drafts = [field for a in agents if not a["is_published"]
              for field in a.get("post_call_analysis_data") or a["post_chat_analysis_data"]]
    assert {f["type"] for f in drafts} == {"system-presets", "string", "enum", "boolean",
                                            "number"}
    assert any(f.get("required") for f in drafts)


def test_demo_dataset_round_trips_through_the_parser(tmp_path: Path) -> None:
    objects = generate_demo_dataset(seed=3, sessions=2400)
    path = tmp_path / "demo.jsonl"
    assert write_jsonl(objects, path) == len(objects)
    assert "Søren" in path.read_text(encoding="utf-8") or "Zoë" in path.read_text("utf-8")
    batch: ImportBatch = parse_import_file(path)
    assert batch.calls + batch.chats == 2400
    assert batch.workspace_ids == DEMO_WORKSPACES
    assert len(batch.agent_versions) == 18
