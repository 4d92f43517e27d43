"""The logs of a real run, read as an operator (or a log pipeline) would: a worker, a scheduler
and the API as processes of their own, writing to files (so JSON, the default off a terminal),
over the stand-in; the job is created and one is cancelled over HTTP, and a webhook delivers.

Every line parses as JSON and carries `ts`, `level`, `logger`, `event`; every session writes one
`session_finished` with DESIGN's fields, every state change one `job_state`; and no line holds
a transcript, an analysis value, a prompt, a key or the webhook's URL."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from test_webhooks_support import (
    AGENT_FIELDS,
    Receiver,
    Seeded,
    Stack,
    seed_workspace,
    wait_for_job,
    wait_until,
)

from scheduler.dev.processes import free_port
from scheduler.jobs import keys
from shared.db import Database

pytestmark = pytest.mark.integration

REQUIRED = ("ts", "level", "logger", "event")
SESSION_FIELDS = ("job_id", "session_id", "outcome", "error_kind", "attempt", "model",
                  "latency_ms", "input_tokens", "output_tokens")
# Printed by Celery's SIGTERM handler itself, where logging is not safe: the one line of a run
# that is not ours to format (docs/runbook.md says so).
CELERY_SHUTDOWN_NOTICE = "worker: Warm shutdown (MainProcess)"


def read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        if line == CELERY_SHUTDOWN_NOTICE:
            continue
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert all(record.get(key) for key in REQUIRED), line
        records.append(record)
    return records


def analysis_values(db: Database, session_ids: list[str]) -> list[str]:
    """Every regenerated string long enough not to be an ordinary word of a log line."""
    with db.transaction() as tx:
        rows = tx.execute(text("""
            SELECT summary, custom_analysis_data FROM sessions WHERE session_id = ANY(:ids)
        """), {"ids": session_ids}).all()
    values = [row.summary for row in rows]
    values += [v for row in rows for v in row.custom_analysis_data.values() if isinstance(v, str)]
    return [value for value in values if len(value) >= 12]


def test_every_line_is_json_with_the_fields_and_nothing_secret(
        scratch_url: str, scratch_db: Database, broker_url: str, faulty_stub_url: str) -> None:
    seeded = seed_workspace(scratch_db, succeeding=5, skipped=1, failing=1)
    key = keys.create_key(scratch_db, seeded.workspace_id, "os:pytest").key
    anthropic_key = "sk-ant-test-" + secrets.token_hex(12)
    stack = Stack(scratch_url, broker_url, faulty_stub_url,
                  extra_env={"ANTHROPIC_API_KEY": anthropic_key})
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with Receiver() as receiver:
            stack.worker()
            stack.scheduler()
            stack.api(api_port)
            hook = httpx.post(f"{api}/v1/webhooks", json={"url": receiver.url},
                              headers=headers, timeout=30)
            assert hook.status_code == 201, hook.text
            created = httpx.post(f"{api}/v1/backfills", json={"kind": "call", "filters": []},
                                 headers=headers, timeout=30)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            wait_for_job(scratch_db, job_id)
            httpx.get(f"{api}/v1/sessions/{seeded.succeeding[0]}/analysis", headers=headers,
                      timeout=30).raise_for_status()
            stack.stop("worker")  # so the next job is surely still running when cancelled
            cancelled = _create_and_cancel(api, headers)
            wait_until(lambda: len(receiver.requests) >= 2, 60, "both events delivered")
    finally:
        stack.stop_all()

    records = {name: parsed(read_lines(path)) for name, path in stack.logs.items()}
    _assert_one_session_finished_per_session(records["worker"], job_id, seeded)
    _assert_job_states(records, job_id, cancelled)
    deliveries = [r for r in records["scheduler"] if r["event"] == "webhook_delivery"]
    assert {r["result"] for r in deliveries} == {"delivered"}
    assert {r["webhook_id"] for r in deliveries} == {hook.json()["id"]}

    secrets_and_texts = [
        *seeded.transcripts, *analysis_values(scratch_db, seeded.succeeding),
        *(field["description"] for field in AGENT_FIELDS),
        anthropic_key, stack.secret_key, key, hook.json()["secret"], receiver.path,
    ]
    for name, path in stack.logs.items():
        for line in read_lines(path):
            leaked = [value for value in secrets_and_texts if value in line]
            assert not leaked, (name, line)


def _create_and_cancel(api: str, headers: dict[str, str]) -> str:
    """A job cancelled over HTTP, with a reason."""
    body = {"kind": "call", "filters": [], "options": {"limit": 2}}
    job_id = str(httpx.post(f"{api}/v1/backfills", json=body, headers=headers,
                            timeout=30).json()["id"])
    answer = httpx.post(f"{api}/v1/backfills/{job_id}/cancel",
                        json={"reason": "customer asked"}, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return job_id


def _assert_one_session_finished_per_session(worker: list[dict[str, Any]], job_id: str,
                                             seeded: Seeded) -> None:
    finished = [r for r in worker if r["event"] == "session_finished" and r["job_id"] == job_id]
    assert sorted(r["session_id"] for r in finished) == sorted(seeded.all_ids)
    for record in finished:
        assert set(SESSION_FIELDS) <= set(record), record
    by_session = {r["session_id"]: r for r in finished}
    for session_id in seeded.succeeding:
        record = by_session[session_id]
        assert record["outcome"] == "succeeded" and record["error_kind"] is None
        assert record["model"] == "claude-haiku-4-5" and record["attempt"] == 1
        assert record["input_tokens"] > 0 and record["output_tokens"] > 0
        assert isinstance(record["latency_ms"], int)
    assert [by_session[s]["outcome"] for s in seeded.skipped] == ["skipped"]
    (failed,) = (by_session[s] for s in seeded.failing)
    assert (failed["outcome"], failed["error_kind"]) == ("failed", "llm_bad_request")


def _assert_job_states(records: dict[str, list[dict[str, Any]]], job_id: str,
                       cancelled: str) -> None:
    states = [(r["job_id"], r["from"], r["to"], r["reason"])
              for lines in records.values() for r in lines if r["event"] == "job_state"]
    assert (job_id, "running", "completed", "every item finished") in states
    assert (cancelled, "running", "cancelled", "customer asked") in states
