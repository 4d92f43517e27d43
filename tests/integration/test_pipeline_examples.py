"""The team examples end to end: CLI → Postgres → scheduler → Redis → Celery worker → stand-in
over HTTP → Postgres. Expected outcomes are those of ../shared/examples/README.md."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from scheduler.dev import processes
from shared.broker import ANALYZE_SESSION, make_celery
from shared.db import Database
from shared.settings import Settings

pytestmark = pytest.mark.integration


def backfill(env: dict[str, str], *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        processes.backfill_command(*args), env={**__import__("os").environ, **env},
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
    return result


def backfill_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(backfill(env, *args, "--json").stdout)


@pytest.fixture(scope="module")
def imported(pipeline: Any, examples_dir: Path) -> Any:
    backfill(pipeline.env, "import", str(examples_dir / "sessions.jsonl"))
    return pipeline


@pytest.fixture(scope="module")
def call_job(imported: Any) -> dict[str, Any]:
    return backfill_json(imported.env, "create", "--workspace", "ws_acme", "--kind", "call",
                         "--filters", "[]", "--wait")


def session(env: dict[str, str], session_id: str) -> dict[str, Any]:
    document: dict[str, Any] = backfill_json(env, "session", session_id)
    return document


def test_call_backfill_completes_with_expected_counts(call_job: dict[str, Any]) -> None:
    assert call_job["state"] == "completed"
    counts = call_job["counts"]
    outcome = (counts["matched"], counts["succeeded"], counts["skipped"], counts["failed"])
    assert outcome == (4, 3, 1, 0)


def test_call_001_uses_front_desk_latest_draft(imported: Any, call_job: dict[str, Any]) -> None:
    doc = session(imported.env, "call_001")
    source = doc["analysis_source"]
    assert (source["agent_id"], source["agent_version"], source["model"]) == (
        "agent_front_desk", 1, "claude-haiku-4-5")
    assert source["job_id"] == call_job["id"]
    custom = doc["call_analysis"]["custom_analysis_data"]
    assert set(custom) == {"intent", "is_new_customer", "party_size", "callback_time"}
    assert custom["intent"] in {"booking", "billing", "other"}
    assert doc["call_analysis"]["call_summary"] != "old summary"


def test_call_002_only_destination_agent(imported: Any, call_job: dict[str, Any]) -> None:
    doc = session(imported.env, "call_002")
    source = doc["analysis_source"]
    assert (source["agent_id"], source["agent_version"], source["model"]) == (
        "agent_billing", 1, "claude-sonnet-4-5")
    custom = doc["call_analysis"]["custom_analysis_data"]
    assert set(custom) == {"intent", "disputed_amount"}
    assert custom["disputed_amount"] == 120  # the first number in the transcript


def test_call_003_both_agents(imported: Any, call_job: dict[str, Any]) -> None:
    doc = session(imported.env, "call_003")
    source = doc["analysis_source"]
    assert (source["agent_id"], source["agent_version"], source["model"]) == (
        "agent_billing", 1, "claude-sonnet-4-5")
    custom = doc["call_analysis"]["custom_analysis_data"]
    assert set(custom) == {"intent", "is_new_customer", "party_size", "callback_time",
                           "disputed_amount"}
    assert custom["intent"] in {"refund", "invoice", "plan_change", "other"}


def test_call_004_not_connected_is_skipped(imported: Any, call_job: dict[str, Any],
                                           db: Database) -> None:
    doc = session(imported.env, "call_004")
    assert doc["analysis_source"] is None
    with db.transaction() as tx:
        row = tx.execute(text("SELECT state, error FROM backfill_items "
                              "WHERE job_id = :j AND session_id = 'call_004'"),
                         {"j": call_job["id"]}).one()
    assert (row.state, row.error) == ("skipped", "not connected")


def test_other_workspace_untouched(imported: Any, call_job: dict[str, Any]) -> None:
    doc = session(imported.env, "call_005")
    assert doc["analysis_source"] is None
    assert doc["call_analysis"]["call_summary"] == "old summary"


def test_chat_backfill(imported: Any) -> None:
    job = backfill_json(imported.env, "create", "--workspace", "ws_acme", "--kind", "chat",
                        "--filters", "[]", "--wait")
    assert (job["state"], job["counts"]["succeeded"]) == ("completed", 1)
    doc = session(imported.env, "chat_001")
    assert set(doc["chat_analysis"]) >= {"chat_summary", "chat_successful", "user_sentiment"}
    assert set(doc["chat_analysis"]["custom_analysis_data"]) == {"asked_for_human"}
    assert doc["analysis_source"]["agent_id"] == "agent_web_chat"


def test_example_filters_preview_matches_call_001(imported: Any, examples_dir: Path) -> None:
    result = backfill_json(imported.env, "preview", "--workspace", "ws_acme", "--kind", "call",
                           "--filters", f"@{examples_dir / 'filters.json'}")
    assert result["matched"] == 1  # with the cost estimate beside it


def test_bad_filter_row_exits_2_and_creates_nothing(imported: Any, db: Database) -> None:
    jobs_before = _count(db, "backfill_jobs")
    result = backfill(imported.env, "create", "--workspace", "ws_acme", "--kind", "call",
                      "--filters", '[{"field": "call_status", "op": "in", "value": ["ended"]},'
                      ' {"field": "nope", "op": "eq", "value": 1}]', expect=2)
    assert "filters[1]" in result.stderr and "Traceback" not in result.stderr
    assert _count(db, "backfill_jobs") == jobs_before


def test_reimport_changes_nothing(imported: Any, examples_dir: Path, db: Database) -> None:
    before = _snapshot(db)
    backfill(imported.env, "import", str(examples_dir / "sessions.jsonl"))
    assert _snapshot(db) == before


def test_second_delivery_does_nothing(imported: Any, call_job: dict[str, Any],
                                      settings: Settings, db: Database) -> None:
    app = make_celery(settings)
    try:
        for _ in range(2):
            app.send_task(ANALYZE_SESSION, args=[call_job["id"], "call_001"],
                          queue=settings.queue_name)
    finally:
        app.close()
    _wait_for_empty_queue(settings)
    with db.transaction() as tx:
        runs = tx.execute(text("SELECT count(*) FROM analysis_runs WHERE job_id = :j "
                               "AND session_id = 'call_001'"), {"j": call_job["id"]}).scalar()
        attempts = tx.execute(text("SELECT attempts FROM backfill_items WHERE job_id = :j "
                                   "AND session_id = 'call_001'"), {"j": call_job["id"]}).scalar()
    assert (runs, attempts) == (1, 1)


def _wait_for_empty_queue(settings: Settings, timeout_s: float = 30) -> None:
    import redis

    from shared.broker import redis_client_url

    deadline = time.monotonic() + timeout_s
    with redis.Redis.from_url(redis_client_url(settings.require_broker_url())) as client:
        while client.llen(settings.queue_name) and time.monotonic() < deadline:
            time.sleep(0.1)
    time.sleep(1.0)  # the worker has taken the messages; give it time to run them


def _count(db: Database, table: str) -> int:
    with db.transaction() as tx:
        return int(tx.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def _snapshot(db: Database) -> list[Any]:
    with db.transaction() as tx:
        return [
            tx.execute(text("SELECT * FROM sessions ORDER BY session_id")).all(),
            tx.execute(text("SELECT * FROM agent_versions ORDER BY agent_id, version")).all(),
        ]


def test_operator_flow_requeue_pause_resume_cancel(imported: Any, db: Database) -> None:
    """A failed item is requeued and the completed job runs again to completion."""
    job = backfill_json(imported.env, "create", "--workspace", "ws_acme", "--kind", "call",
                        "--filters", '[{"field": "call_id", "op": "eq", "value": "call_002"}]',
                        "--wait")
    assert job["counts"]["succeeded"] == 1
    with db.transaction() as tx:  # simulate a permanent failure of that item
        tx.execute(text("UPDATE backfill_items SET state = 'failed', error_kind = 'llm_refusal',"
                        " error = 'refused' WHERE job_id = :j"), {"j": job["id"]})
    failed = backfill_json(imported.env, "failed", job["id"])
    assert [(f["session_id"], f["error_kind"]) for f in failed] == [("call_002", "llm_refusal")]
    dry = backfill_json(imported.env, "requeue", job["id"], "--error-kind", "llm_refusal",
                        "--dry-run")
    assert dry == {"requeued": 1, "dry_run": True}
    assert backfill_json(imported.env, "requeue", job["id"], "--reason", "test")["requeued"] == 1
    final = backfill_json(imported.env, "watch", job["id"])
    assert (final["state"], final["counts"]["succeeded"], final["counts"]["failed"]) == (
        "completed", 1, 0)
    result = backfill(imported.env, "pause", job["id"], "--reason", "test", expect=2)
    assert "completed" in result.stderr


def test_pause_resume_cancel(imported: Any, db: Database) -> None:
    """On a job held paused (so the running scheduler leaves it alone), pending items cancel."""
    with db.transaction() as tx:
        tx.execute(text("INSERT INTO backfill_jobs (id, workspace_id, kind, filters, state,"
                        " matched) VALUES ('bf_cancel_me', 'ws_acme', 'call', '[]', 'paused', 2)"))
        tx.execute(text("INSERT INTO backfill_items (job_id, session_id) VALUES"
                        " ('bf_cancel_me', 'call_001'), ('bf_cancel_me', 'call_002')"))
    refused = backfill(imported.env, "pause", "bf_cancel_me", "--reason", "test",
                       expect=2)  # already paused
    assert "is paused" in refused.stderr
    backfill(imported.env, "cancel", "bf_cancel_me", "--reason", "changed my mind")
    final = backfill_json(imported.env, "show", "bf_cancel_me")
    assert (final["state"], final["state_reason"]) == ("cancelled", "changed my mind")
    assert (final["counts"]["cancelled"], final["counts"]["pending"]) == (2, 0)
    assert "cancelled" in backfill(imported.env, "requeue", "bf_cancel_me", "--reason", "test",
                                  expect=2).stderr


def test_rerun_one_session(imported: Any) -> None:
    doc = backfill_json(imported.env, "rerun", "call_001", "--wait")
    assert doc["analysis_source"]["agent_version"] == 1
    assert doc["analysis_source"]["job_id"].startswith("bf_")


def test_bad_import_file_exits_2_with_line_numbers(imported: Any, tmp_path: Path,
                                                   db: Database) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"object": "call", "call_id": "x1"}\nnot json\n', encoding="utf-8")
    sessions_before = _count(db, "sessions")
    result = backfill(imported.env, "import", str(bad), expect=2)
    assert "line 1" in result.stderr and "line 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert _count(db, "sessions") == sessions_before


def test_unknown_job_is_a_clean_error(imported: Any) -> None:
    result = backfill(imported.env, "show", "bf_does_not_exist", expect=1)
    assert "no backfill job" in result.stderr and "Traceback" not in result.stderr
