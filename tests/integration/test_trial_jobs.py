"""Trial jobs (`create … --trial N`, `options.trial_size`) through the real pipeline, live and
batch: a deterministic sample, every run recorded with its before, and no session's current
analysis changed — every session of the workspace compared before and after."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from test_api_support import make_tenant

from scheduler.dev import processes
from scheduler.http.app import create_app
from scheduler.jobs import documents, operations, planner
from scheduler.jobs.report import change_report
from shared.db import Database
from shared.settings import Settings
from tests.integration.safe_support import (
    FIELDS,
    Seeded,
    current,
    imported_document,
    runs_of,
    seed,
    wait_for_job,
)

pytestmark = pytest.mark.integration

FIELD_TYPES = {field["name"]: field["type"] for field in FIELDS
               if field["type"] != "system-presets"}


def create_trial(db: Database, settings: Settings, seeded: Seeded, size: int,
                 mode: str | None = None, **options: Any) -> str:
    return operations.create_job(db, settings, seeded.workspace_id, "call", [],
                                 actor="os:pytest", options={"trial_size": size, **options},
                                 mode=mode).job_id


def sample_by_hash(db: Database, workspace_id: str, size: int) -> list[str]:
    """What a trial must take: the sessions lowest in the sample hash, independently written."""
    with db.transaction() as tx:
        return list(tx.execute(text("""
            SELECT session_id FROM sessions WHERE workspace_id = :ws
             ORDER BY hashtextextended(session_id, 0) & 9223372036854775807, session_id
             LIMIT :n
        """), {"ws": workspace_id, "n": size}).scalars())


@pytest.mark.parametrize("mode", ["live", "batch"])
def test_a_trial_changes_no_session_and_records_every_before(
        pipeline: Any, db: Database, settings: Settings, mode: str) -> None:
    seeded = seed(db, 14, label=f"trial_{mode}")
    before = current(db, seeded.session_ids)
    job_id = create_trial(db, settings, seeded, 8, mode=mode)
    assert wait_for_job(db, job_id).state == "completed"

    assert current(db, seeded.session_ids) == before  # every session, every column
    sampled = sample_by_hash(db, seeded.workspace_id, 8)
    with db.transaction() as tx:
        items = dict(tx.execute(text("SELECT session_id, state FROM backfill_items "
                                     "WHERE job_id = :j"), {"j": job_id}).all())
    assert sorted(items) == sorted(sampled)
    runs = runs_of(db, job_id)
    assert sorted(runs) == sorted(sid for sid, state in items.items() if state == "succeeded")
    assert {state for sid, state in items.items() if sid not in runs} <= {"skipped"}
    for run in runs.values():
        assert run.applied is False
        assert run.before == imported_document()
        assert run.before_run_id is None
        assert run.field_types == FIELD_TYPES
        assert run.input_tokens > 0  # a trial pays for its own calls

    with db.transaction() as tx:
        document = documents.job_json(tx, settings, job_id)
    assert document["trial"] is True and document["promoted_from"] is None
    assert document["options"]["trial_size"] == 8


def test_the_trial_sample_is_deterministic_nested_and_inside_the_sample_rate(
        db: Database, settings: Settings) -> None:
    seeded = seed(db, 40, label="trial_sample")
    ws = seeded.workspace_id

    def taken(**options: Any) -> set[str]:
        job = planner.create_job(db, settings, ws, "call", [], options=options,
                                 created_by="os:pytest")
        with db.transaction() as tx:
            ids = set(tx.execute(text("SELECT session_id FROM backfill_items WHERE job_id = :j"),
                                 {"j": job.job_id}).scalars())
            tx.execute(text("UPDATE backfill_jobs SET state = 'cancelled' WHERE id = :j"),
                       {"j": job.job_id})  # only the selection matters here
        return ids

    small, large = taken(trial_size=5), taken(trial_size=12)
    assert small == set(sample_by_hash(db, ws, 5)) and small == taken(trial_size=5)
    assert small < large
    sampled = taken(sample_rate=0.5)
    within = taken(trial_size=5, sample_rate=0.5)
    assert within <= sampled and len(within) == min(5, len(sampled))
    assert taken(trial_size=1000) == taken()  # fewer match than asked: all of them
    assert planner.preview(db, settings, ws, "call", [], options={"trial_size": 7}) == 7


def test_trial_through_the_api_and_the_cli(pipeline: Any, db: Database,
                                           settings: Settings) -> None:
    tenant = make_tenant(db, "trialapi", calls=6, chats=0)
    with TestClient(create_app(settings)) as client:
        created = client.post("/v1/backfills", headers=tenant.headers, json={
            "kind": "call", "filters": [], "options": {"trial_size": 3}})
        assert created.status_code == 201, created.text
        assert created.json()["trial"] is True and created.json()["counts"]["matched"] == 3
        for options, problem in (({"trial_size": 0}, "options.trial_size"),
                                 ({"trial_size": 1001}, "options.trial_size"),
                                 ({"trial_size": 20, "limit": 5}, "options.limit 5")):
            refused = client.post("/v1/backfills", headers=tenant.headers,
                                  json={"kind": "call", "filters": [], "options": options})
            assert refused.status_code == 422 and problem in refused.json()["error"]["message"]
    job_id = created.json()["id"]
    wait_for_job(db, job_id)

    env = {**os.environ, **pipeline.env, "COLUMNS": "200"}  # tables unwrapped

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(processes.backfill_command(*args), env=env, capture_output=True,
                              text=True, timeout=120)

    with db.transaction() as tx:
        jobs_before = tx.execute(text("SELECT count(*) FROM backfill_jobs")).scalar_one()
    base = ["create", "--workspace", tenant.workspace_id, "--kind", "call", "--filters", "[]"]
    for flags, problem in ((["--trial", "0"], "options.trial_size"),
                           (["--trial", "-2"], "options.trial_size"),
                           (["--trial", "1001"], "options.trial_size"),
                           (["--trial", "50", "--limit", "10"], "options.limit 10")):
        refused = cli(*base, *flags)
        assert refused.returncode == 2 and problem in refused.stderr, refused.stderr
        assert refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
    with db.transaction() as tx:
        assert tx.execute(text("SELECT count(*) FROM backfill_jobs")).scalar_one() == jobs_before

    shown = cli("show", job_id)
    assert shown.returncode == 0 and "call trial backfill" in shown.stdout
    listed = cli("list", "--workspace", tenant.workspace_id)
    assert "call trial" in listed.stdout
    as_json = json.loads(cli("show", job_id, "--json").stdout)
    assert as_json["trial"] is True


def test_the_report_of_a_trial_through_the_cli_and_the_api(
        pipeline: Any, db: Database, settings: Settings, tmp_path: Path) -> None:
    seeded = seed(db, 8, label="trial_report")
    job_id = create_trial(db, settings, seeded, 10)
    wait_for_job(db, job_id)
    with db.transaction() as tx:
        expected = change_report(tx, job_id)
    assert expected["trial"] is True
    assert expected["sessions"]["analysed"] == len(seeded.analysable)
    assert expected["sessions"]["without_before"] == 0
    assert expected["fields"]["custom_analysis_data.legacy_score"]["type"] == "number"
    assert expected["fields"]["custom_analysis_data.intent"]["type"] == "enum"

    env = {**os.environ, **pipeline.env, "COLUMNS": "200"}
    page = tmp_path / "report.html"
    made = subprocess.run(processes.backfill_command("report", job_id, "--json", "--html",
                                                     str(page)),
                          env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout) == expected
    html = page.read_text(encoding="utf-8")
    assert html.lower().startswith("<!doctype html>") and job_id in html
    assert "<script src" not in html and "<link" not in html  # self-contained
    tables = subprocess.run(processes.backfill_command("report", job_id), env=env,
                            capture_output=True, text=True, timeout=120)
    assert tables.returncode == 0 and "Change report" in tables.stdout
    assert "TRIAL" in tables.stdout and "custom_analysis_data.intent" in tables.stdout
    unwritable = subprocess.run(processes.backfill_command(
        "report", job_id, "--html", str(tmp_path / "missing" / "r.html")),
        env=env, capture_output=True, text=True, timeout=120)
    assert unwritable.returncode == 2 and unwritable.stderr.startswith("error: --html: ")
    missing = subprocess.run(processes.backfill_command("report", "bf_missing"), env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no backfill job" in missing.stderr

    tenant_key = make_tenant(db, "trialreport", calls=1, chats=0)
    with TestClient(create_app(settings)) as client:
        foreign = client.get(f"/v1/backfills/{job_id}/report", headers=tenant_key.headers)
        assert foreign.status_code == 404
