"""Promote (DESIGN "Safe to apply") through the real pipeline: a completed trial becomes an applied
job; trial sessions whose configuration is unchanged get the trial's result without a second
LLM call (counted by the stand-in), live and batch; a changed configuration is analysed again;
a later run elsewhere still wins; only a completed trial promotes, and only once."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from test_api_support import held_job, make_tenant

from scheduler.dev import processes
from scheduler.dev.llm_stub import StubServer
from scheduler.http.app import create_app
from scheduler.jobs import changes, documents, operations
from scheduler.jobs.operations import JobStateConflict
from shared.db import Database
from shared.errors import NotFound
from shared.settings import Settings
from tests.integration.safe_support import (
    FIELDS,
    RUN_ID,
    audit_of,
    current,
    job_row,
    runs_of,
    seed,
    set_draft_fields,
    wait_for_job,
)

pytestmark = pytest.mark.integration


def trial_of(db: Database, settings: Settings, workspace_id: str, size: int,
             mode: str | None = None) -> str:
    job_id = operations.create_job(db, settings, workspace_id, "call", [], actor="os:pytest",
                                   options={"trial_size": size}, mode=mode).job_id
    assert wait_for_job(db, job_id).state == "completed"
    return job_id


def promoted(db: Database, settings: Settings, trial_id: str) -> str:
    made = changes.promote(db, settings, trial_id, actor="os:pytest", reason="looks right")
    assert made.created
    assert wait_for_job(db, made.job_id).state == "completed"
    return made.job_id


@pytest.mark.parametrize("mode", ["live", "batch"])
def test_promote_applies_the_trial_without_a_second_llm_call(
        pipeline: Any, db: Database, settings: Settings, stub_server: StubServer,
        mode: str) -> None:
    seeded = seed(db, 10, label=f"promote_{mode}")
    trial_id = trial_of(db, settings, seeded.workspace_id, 6, mode=mode)
    trial_runs = runs_of(db, trial_id)
    analysable = set(seeded.analysable)
    assert trial_runs and set(trial_runs) <= analysable

    requests_before = stub_server.request_count
    job_id = promoted(db, settings, trial_id)
    # Only the sessions the trial did not analyse reached the LLM.
    assert stub_server.request_count - requests_before == len(analysable - set(trial_runs))

    runs, now = runs_of(db, job_id), current(db, seeded.session_ids)
    assert set(runs) == analysable
    for session_id, trial_run in trial_runs.items():
        reused = runs[session_id]
        assert reused.result == trial_run.result
        assert reused.started_at == trial_run.started_at  # a later run elsewhere still wins
        assert (reused.input_tokens, reused.output_tokens) == (0, 0)
        assert reused.config_hash == trial_run.config_hash and reused.applied
        assert reused.before == trial_run.before  # nothing wrote the session in between
        assert now[session_id][RUN_ID] == reused.id  # it is the session's current analysis
    for session_id in analysable - set(trial_runs):
        fresh = runs[session_id]
        assert fresh.input_tokens > 0 and now[session_id][RUN_ID] == fresh.id
    with db.transaction() as tx:
        document = documents.job_json(tx, settings, job_id)
        trial_document = documents.job_json(tx, settings, trial_id)
    assert document["promoted_from"] == trial_id and document["trial"] is False
    assert "trial_size" not in document["options"]
    assert (document["options"].get("mode") == "batch") == (mode == "batch")
    assert trial_document["state"] == "completed"  # the trial itself is unchanged
    assert [row.details for row in audit_of(db, job_id, "promote")] == [
        {"promoted_from": trial_id}]
    assert [row.details for row in audit_of(db, trial_id, "promote")] == [
        {"promoted_to": job_id}]


def test_a_trial_whose_configuration_changed_is_analysed_again(
        pipeline: Any, db: Database, settings: Settings, stub_server: StubServer) -> None:
    seeded = seed(db, 6, label="promote_edited")
    trial_id = trial_of(db, settings, seeded.workspace_id, len(seeded.session_ids))
    set_draft_fields(db, seeded.workspace_id, [*FIELDS, {
        "type": "string", "name": "preferred_time", "description": "When?"}])
    requests_before = stub_server.request_count
    job_id = promoted(db, settings, trial_id)
    assert stub_server.request_count - requests_before == len(seeded.analysable)
    trial_runs = runs_of(db, trial_id)
    for session_id, run in runs_of(db, job_id).items():
        assert run.config_hash != trial_runs[session_id].config_hash
        assert run.input_tokens > 0


def test_a_run_that_started_after_the_trial_wins_over_the_reused_result(
        pipeline: Any, db: Database, settings: Settings) -> None:
    seeded = seed(db, 3, label="promote_later")
    # Every matched session in the trial: a smaller sample (by the hash of random ids) would
    # not always hold the session this test reruns.
    trial_id = trial_of(db, settings, seeded.workspace_id, len(seeded.session_ids))
    first = seeded.analysable[0]
    rerun = operations.rerun_session(db, settings, first, actor="os:pytest")
    assert wait_for_job(db, rerun).state == "completed"
    rerun_run = runs_of(db, rerun)[first]
    job_id = promoted(db, settings, trial_id)
    reused = runs_of(db, job_id)[first]
    assert reused.started_at < rerun_run.started_at
    assert reused.before["call_summary"] == rerun_run.result["call_summary"]
    assert current(db, [first])[first][RUN_ID] == rerun_run.id  # the rerun's analysis stays


def test_only_a_completed_trial_promotes_and_only_once(
        pipeline: Any, db: Database, settings: Settings) -> None:
    tenant = make_tenant(db, "promoteapi", calls=4, chats=0)
    applied = operations.create_job(db, settings, tenant.workspace_id, "call", [],
                                    actor="os:pytest").job_id
    wait_for_job(db, applied)
    paused_trial = held_job(db, tenant, pending=(tenant.call_ids[0],))
    with db.transaction() as tx:
        tx.execute(text("""UPDATE backfill_jobs SET options = '{"trial_size": 1}'
                            WHERE id = :id"""), {"id": paused_trial})
    for job_id, problem in ((applied, "is not a trial"), (paused_trial, "is paused")):
        with pytest.raises(JobStateConflict, match=problem):
            changes.promote(db, settings, job_id, actor="os:pytest")
    with pytest.raises(NotFound):
        changes.promote(db, settings, "bf_missing", actor="os:pytest")
    trial_id = trial_of(db, settings, tenant.workspace_id, 2)

    with TestClient(create_app(settings)) as client:
        url = f"/v1/backfills/{trial_id}/promote"
        first = client.post(url, headers=tenant.headers, json={"reason": "ship it"})
        assert first.status_code == 201, first.text
        assert first.json()["promoted_from"] == trial_id
        again = client.post(url, headers=tenant.headers)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        refused = client.post(f"/v1/backfills/{applied}/promote", headers=tenant.headers)
        assert refused.status_code == 409 and refused.json()["error"]["type"] == "conflict"
        other = make_tenant(db, "promoteother", calls=1, chats=0)
        assert client.post(url, headers=other.headers).status_code == 404
    with db.transaction() as tx:
        promotions = tx.execute(text("SELECT count(*) FROM backfill_jobs "
                                     "WHERE promoted_from = :t"), {"t": trial_id}).scalar_one()
    assert promotions == 1
    wait_for_job(db, first.json()["id"])

    env = {**os.environ, **pipeline.env}
    cli = subprocess.run(processes.backfill_command("promote", trial_id, "--json"), env=env,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["id"] == first.json()["id"]
    assert "promoted already" in cli.stderr
    refused_cli = subprocess.run(processes.backfill_command("promote", applied), env=env,
                                 capture_output=True, text=True, timeout=120)
    assert refused_cli.returncode == 2 and "is not a trial" in refused_cli.stderr
    assert job_row(db, applied).promoted_from is None
