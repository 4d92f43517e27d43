"""Prompt caching end to end, and what a job reports it cost.

A configuration whose static prefix is above the cacheable minimum: the first session of
the job writes the prefix to the stand-in's cache, every later one reads it; the job's
`usage` adds up its runs and prices them; `preview` estimated about as much beforehand.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from typing import Any

import pytest
from sqlalchemy import text

from scheduler.dev import processes
from scheduler.dev.llm_stub import min_cacheable_tokens
from scheduler.jobs import documents, estimates, planner
from shared.db import Database
from shared.pricing import Tokens, cost_usd
from shared.settings import Settings
from tests.integration.conftest import Pipeline

pytestmark = pytest.mark.integration

SESSIONS = 12


def long_fields(marker: str) -> list[dict[str, Any]]:
    """~11,000 characters of field descriptions, billed twice (system prompt and output
    schema): a cached prefix of ~5,000 tokens, above the 4,096-token minimum of the agent's
    model (Claude Haiku 4.5). Unique to this run so the session-wide stand-in has never
    cached them."""
    text_ = ("Read the whole conversation carefully and note every detail that bears on this "
             "question, including corrections the caller makes later on. ") * 6
    return [{"type": "string", "name": f"detail_{n}",
             "description": f"[{marker}] Detail {n}. {text_}"} for n in range(12)]


def seed(db: Database, workspace_id: str) -> None:
    with db.transaction() as tx:
        tx.execute(text("INSERT INTO workspaces (id) VALUES (:ws)"), {"ws": workspace_id})
        tx.execute(text("""
            INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, kind,
                                        analysis_model, analysis_data)
            VALUES (:ws, 'agent_cache', 0, false, 'voice', 'claude-4.5-haiku',
                    CAST(:fields AS jsonb))
        """), {"ws": workspace_id, "fields": json.dumps(long_fields(secrets.token_hex(4)))})
        for n in range(SESSIONS):
            transcript = [{"role": "agent", "content": "Hello, how can I help?"},
                          {"role": "user", "content": f"My order {n} arrived broken, please "
                                                      "send a replacement."}]
            tx.execute(text("""
                INSERT INTO sessions (session_id, kind, workspace_id, agent_id, agent_version,
                                      status, transcript)
                VALUES (:sid, 'call', :ws, 'agent_cache', 0, 'ended', CAST(:t AS jsonb))
            """), {"sid": f"{workspace_id}_{n}", "ws": workspace_id,
                   "t": json.dumps(transcript)})


def wait_completed(db: Database, settings: Settings, job_id: str,
                   timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with db.transaction() as tx:
            document = documents.job_json(tx, settings, job_id)
        if document["state"] == "completed":
            return document
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} not completed within {timeout_s:.0f}s")


@pytest.fixture(scope="module")
def cached_job(pipeline: Pipeline, db: Database, settings: Settings) -> dict[str, Any]:
    workspace_id = f"ws_cache_{secrets.token_hex(3)}"
    seed(db, workspace_id)
    estimate = estimates.preview_estimate(db, settings, workspace_id, "call", [])
    created = planner.create_job(db, settings, workspace_id, "call", [])
    return {"estimate": estimate, "job": wait_completed(db, settings, created.job_id)}


def runs(db: Database, job_id: str) -> list[Any]:
    with db.transaction() as tx:
        return tx.execute(text("""
            SELECT model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens
              FROM analysis_runs WHERE job_id = :job ORDER BY created_at
        """), {"job": job_id}).all()


def test_first_session_writes_the_prefix_the_others_read_it(
    cached_job: dict[str, Any], db: Database
) -> None:
    rows = runs(db, cached_job["job"]["id"])
    assert len(rows) == SESSIONS
    writes = [row for row in rows if row.cache_write_tokens > 0]
    reads = [row for row in rows if row.cache_read_tokens > 0]
    assert len(writes) == 1 and len(reads) == SESSIONS - 1
    assert writes[0].cache_write_tokens >= min_cacheable_tokens("claude-haiku-4-5") == 4096
    assert {row.cache_read_tokens for row in reads} == {writes[0].cache_write_tokens}


def test_job_usage_adds_up_the_runs_and_prices_them(
    cached_job: dict[str, Any], db: Database, settings: Settings
) -> None:
    job = cached_job["job"]
    rows = runs(db, job["id"])
    total = Tokens(sum(r.input_tokens for r in rows), sum(r.output_tokens for r in rows),
                   sum(r.cache_read_tokens for r in rows), sum(r.cache_write_tokens for r in rows))
    usage = job["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_tokens"],
            usage["cache_write_tokens"]) == (total.input, total.output, total.cache_read,
                                             total.cache_write)
    assert usage["cost_usd"] == pytest.approx(cost_usd(settings, "claude-haiku-4-5", total),
                                              abs=1e-6)


def test_preview_estimated_the_job_before_it_ran(cached_job: dict[str, Any]) -> None:
    estimate = cached_job["estimate"]
    usage = cached_job["job"]["usage"]
    assert estimate["matched"] == SESSIONS
    body = estimate["estimate"]
    assert body["mode"] == "live"
    assert set(body["model_breakdown"]) == {"claude-haiku-4-5"}
    billed = usage["input_tokens"] + usage["cache_read_tokens"] + usage["cache_write_tokens"]
    # The stand-in bills with its own tokenizer and counts every block, the schema too.
    assert 0.7 * billed <= body["input_tokens"] <= 1.3 * billed
    breakdown = body["model_breakdown"]["claude-haiku-4-5"]
    assert breakdown["cache_write_tokens"] > 0 and breakdown["cache_read_tokens"] > 0
    assert body["usd"] > 0


def test_preview_in_batch_mode_costs_half(db: Database, settings: Settings,
                                          cached_job: dict[str, Any]) -> None:
    workspace_id = cached_job["job"]["workspace_id"]
    live = estimates.preview_estimate(db, settings, workspace_id, "call", [])
    batch = estimates.preview_estimate(db, settings, workspace_id, "call", [], mode="batch")
    assert batch["estimate"]["usd"] == pytest.approx(live["estimate"]["usd"] * 0.5, rel=1e-3)
    assert batch["estimate"]["mode"] == "batch"


def backfill(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(processes.backfill_command(*args), env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_cli_preview_json_and_show(pipeline: Pipeline, cached_job: dict[str, Any]) -> None:
    job = cached_job["job"]
    document = json.loads(backfill(pipeline.env, "preview", "--workspace", job["workspace_id"],
                                   "--kind", "call", "--filters", "[]", "--json"))
    assert document["matched"] == SESSIONS
    assert set(document["estimate"]) == {"input_tokens", "output_tokens", "usd",
                                         "model_breakdown", "mode", "basis"}
    # The CLI asks the stand-in's token counter; the job's runs are the output's history.
    assert document["estimate"]["basis"] == "history"
    shown = backfill(pipeline.env, "show", job["id"])
    assert "usage:" in shown and "cache read" in shown and "$" in shown
    assert json.loads(backfill(pipeline.env, "show", job["id"], "--json"))["usage"] == job["usage"]
