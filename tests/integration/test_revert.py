"""Revert (DESIGN "Safe to apply") through the real pipeline: befores come back exactly, sessions
a later job wrote are left alone, twice changes nothing, a dry run changes nothing, a trial has
nothing to revert, only a resting job reverts — and a revert racing a running job over the same
sessions loses nothing in either direction."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from test_api_support import Tenant, held_job, make_tenant

from scheduler.dev import processes
from scheduler.dev.llm_stub import StubServer
from scheduler.http.app import create_app
from scheduler.jobs import changes, documents, operations
from scheduler.jobs.operations import JobStateConflict
from shared.db import Database
from shared.settings import Settings
from tests.integration.safe_support import (
    RUN_ID,
    audit_of,
    current,
    imported_document,
    runs_of,
    seed,
    wait_for_job,
)

pytestmark = pytest.mark.integration


def applied_job(db: Database, settings: Settings, workspace_id: str,
                session_ids: list[str] | None = None) -> str:
    filters = [] if session_ids is None else [
        {"field": "call_id", "op": "in", "value": session_ids}]
    job_id = operations.create_job(db, settings, workspace_id, "call", filters,
                                   actor="os:pytest").job_id
    assert wait_for_job(db, job_id).state == "completed"
    return job_id


def revert(db: Database, job_id: str, **options: Any) -> changes.Reverted:
    return changes.revert(db, job_id, actor="os:pytest", reason="bad prompts", **options)


def reverts_of(db: Database, job_id: str) -> dict[str, Any]:
    """The revert history rows of a job's runs, by session."""
    with db.transaction() as tx:
        rows = tx.execute(text("""
            SELECT u.* FROM analysis_runs AS u JOIN analysis_runs AS r ON r.id = u.reverted_run_id
             WHERE r.job_id = :j
        """), {"j": job_id}).all()
    return {row.session_id: row for row in rows}


@pytest.mark.parametrize("page_size", [changes.REVERT_PAGE, 3])
def test_revert_restores_befores_and_leaves_later_writes_alone(
        pipeline: Any, db: Database, settings: Settings, page_size: int) -> None:
    seeded = seed(db, 9, label="revert")
    imported = current(db, seeded.session_ids)
    job_id = applied_job(db, settings, seeded.workspace_id)
    later = seeded.analysable[:2]
    other_job = applied_job(db, settings, seeded.workspace_id, later)
    runs = runs_of(db, job_id)
    old = seeded.analysable[2]
    with db.transaction() as tx:  # a run from before the feature: no before, skipped
        tx.execute(text("UPDATE analysis_runs SET before = NULL WHERE id = :id"),
                   {"id": runs[old].id})
    untouched = current(db, [old] + later)

    assert revert(db, job_id, dry_run=True).as_json() == {
        "reverted": 6, "left_newer": 2, "dry_run": True}
    assert current(db, [old] + later) == untouched and not reverts_of(db, job_id)
    assert revert(db, job_id, page_size=page_size).as_json() == {
        "reverted": 6, "left_newer": 2, "dry_run": False}

    now = current(db, seeded.session_ids)
    back = set(seeded.analysable) - {old, *later}
    for session_id in back:
        summary, successful, sentiment, voicemail, custom, run_id, started = now[session_id]
        assert (summary, successful, sentiment, voicemail, custom, run_id) == \
            imported[session_id][:RUN_ID + 1]
        # The no-lost-update time stays the job's: a run started after it still wins.
        assert started == runs[session_id].started_at
    for session_id in later:
        assert now[session_id] == untouched[session_id]  # left alone: the other job's
        assert now[session_id][RUN_ID] == runs_of(db, other_job)[session_id].id
    assert now[old] == untouched[old]
    undone = reverts_of(db, job_id)
    assert set(undone) == back
    for session_id, row in undone.items():
        assert row.job_id is None and row.result == imported_document()
        assert row.before == runs[session_id].result and row.input_tokens == 0
    with db.transaction() as tx:
        assert documents.session_json(tx, min(back))["analysis_source"] is None
    [event] = audit_of(db, job_id, "revert")
    assert (event.actor, event.reason) == ("os:pytest", "bad prompts")
    assert event.details == {"reverted": 6, "left_newer": 2, "from_state": "completed"}

    # Twice changes nothing: the reverted are not counted again, the later ones still are.
    assert revert(db, job_id).as_json() == {"reverted": 0, "left_newer": 2, "dry_run": False}
    assert current(db, seeded.session_ids) == now
    assert len(reverts_of(db, job_id)) == len(back)
    # The other job's own revert brings back what it replaced: the first job's analysis.
    assert revert(db, other_job).reverted == 2
    assert {sid: current(db, [sid])[sid][RUN_ID] for sid in later} == {
        sid: runs[sid].id for sid in later}


def test_a_trial_has_nothing_to_revert(pipeline: Any, db: Database,
                                       settings: Settings) -> None:
    seeded = seed(db, 4, label="revert_trial")
    trial_id = operations.create_job(db, settings, seeded.workspace_id, "call", [],
                                     actor="os:pytest", options={"trial_size": 6}).job_id
    wait_for_job(db, trial_id)
    before = current(db, seeded.session_ids)
    assert revert(db, trial_id).as_json() == {"reverted": 0, "left_newer": 0, "dry_run": False}
    assert current(db, seeded.session_ids) == before


@pytest.fixture
def slow_llm(stub_server: StubServer) -> Iterator[StubServer]:
    stub_server.latency_ms = 150
    yield stub_server
    stub_server.latency_ms = 0


def test_a_revert_racing_a_running_job_loses_nothing(
        pipeline: Any, db: Database, settings: Settings, slow_llm: StubServer) -> None:
    """Job B re-analyses the sessions job A wrote while A is reverted page by page. Whatever
    lands first, each session ends with B's analysis (B started after A), B's before is what
    it really replaced, and every run of A is either reverted or left to B."""
    seeded = seed(db, 40, label="revert_race")
    first = applied_job(db, settings, seeded.workspace_id)
    a_runs = runs_of(db, first)
    second = operations.create_job(db, settings, seeded.workspace_id, "call", [],
                                   actor="os:pytest").job_id
    with pytest.raises(JobStateConflict, match="running"):
        revert(db, second)
    deadline = time.monotonic() + 60
    while not runs_of(db, second):  # some of B has landed, most is in flight
        assert time.monotonic() < deadline
        time.sleep(0.02)
    done = revert(db, first, page_size=4)
    assert wait_for_job(db, second).state == "completed"

    b_runs, now = runs_of(db, second), current(db, seeded.session_ids)
    assert done.reverted + done.left_newer == len(a_runs)
    assert done.reverted >= 1 and done.left_newer >= 1  # both orders happened
    undone = reverts_of(db, first)
    assert len(undone) == done.reverted
    for session_id in seeded.analysable:
        b_run = b_runs[session_id]
        assert now[session_id][RUN_ID] == b_run.id  # B's analysis was never lost
        if session_id in undone:  # reverted first: B replaced the restored analysis
            assert b_run.before == imported_document()
            assert b_run.started_at > a_runs[session_id].started_at
        else:  # B wrote first: the revert left it alone
            assert b_run.before == a_runs[session_id].result


@pytest.fixture(scope="module")
def tenant(db: Database) -> Tenant:
    return make_tenant(db, "revertapi", calls=3, chats=0)


def test_revert_through_the_api_and_the_cli(pipeline: Any, db: Database, settings: Settings,
                                            tenant: Tenant) -> None:
    job_id = applied_job(db, settings, tenant.workspace_id)
    with TestClient(create_app(settings)) as client:
        url = f"/v1/backfills/{job_id}/revert"
        dry = client.post(url, headers=tenant.headers, json={"dry_run": True})
        assert dry.status_code == 200 and dry.json() == {
            "reverted": 3, "left_newer": 0, "dry_run": True}
        refused = client.post(url, headers=tenant.headers, json={"dry_run": "yes"})
        assert refused.status_code == 422
        other = make_tenant(db, "revertother", calls=1, chats=0)
        assert client.post(url, headers=other.headers, json={}).status_code == 404
        done = client.post(url, headers=tenant.headers, json={"reason": "undo"})
        assert done.status_code == 200 and done.json()["reverted"] == 3
        report = client.get(f"/v1/backfills/{job_id}/report", headers=tenant.headers)
        assert report.status_code == 200 and report.json()["sessions"]["analysed"] == 3

    env = {**os.environ, **pipeline.env}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(processes.backfill_command(*args), env=env, capture_output=True,
                              text=True, timeout=120)

    again = cli("revert", job_id, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"reverted": 0, "left_newer": 0, "dry_run": False}
    text_out = cli("revert", job_id, "--dry-run")
    assert text_out.returncode == 0 and "would revert 0 sessions" in text_out.stdout
    missing = cli("revert", "bf_missing")
    assert missing.returncode == 1 and missing.stderr.startswith("error: no backfill job")

    in_flight = job_in_flight(db, tenant, "running")
    with TestClient(create_app(settings)) as client:
        refused = client.post(f"/v1/backfills/{in_flight}/revert", headers=tenant.headers,
                              json={"dry_run": True})
        assert refused.status_code == 409 and "is running" in refused.json()["error"]["message"]
    refused_cli = cli("revert", in_flight)
    assert refused_cli.returncode == 2 and "is running" in refused_cli.stderr
    # Paused, but a call is still in flight: its result would land after the revert.
    paused = job_in_flight(db, tenant, "paused")
    still = cli("revert", paused, "--dry-run")
    assert still.returncode == 2 and "still has 1 session being analysed" in still.stderr
    for job in (in_flight, paused):
        operations.cancel(db, job, actor="os:pytest", reason="test over")


def job_in_flight(db: Database, tenant: Tenant, state: str) -> str:
    """A job whose one item a worker holds (a lease far ahead): nothing else will move it."""
    job_id = held_job(db, tenant, state=state)
    with db.transaction() as tx:
        tx.execute(text("""
            INSERT INTO backfill_items (job_id, session_id, state, attempts, started_at,
                                        lease_expires_at)
            VALUES (:job, :sid, 'running', 1, now(), now() + interval '1 hour')
        """), {"job": job_id, "sid": tenant.call_ids[0]})
    return job_id
