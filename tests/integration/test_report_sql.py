"""The change report in SQL (`scheduler.jobs.report`) against the plain-Python oracle
(`tests/support/report_oracle.py`): the same runs, stored in Postgres, give the same report,
every number of it; plus the cases the generator does not reach (a cut candidate set of
examples, many custom fields, another workspace)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Connection, text

from scheduler.jobs import report
from shared.db import Database
from shared.errors import NotFound
from tests.support.report_oracle import RunRecord, compute_report
from tests.support.report_runs import run_records

pytestmark = pytest.mark.integration

PROPERTY = hypothesis_settings(database=None, deadline=None, max_examples=150,
                               suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def tx(db: Database) -> Iterator[Connection]:
    """A transaction rolled back afterwards: what a test stored vanishes."""
    with db.engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


@contextmanager
def example(tx: Connection) -> Iterator[Connection]:
    """A savepoint rolled back after one generated example, so examples never see each other."""
    savepoint = tx.begin_nested()
    try:
        yield tx
    finally:
        savepoint.rollback()


def store_job(tx: Connection, kind: str, runs: Sequence[RunRecord], *, trial: bool = False,
              workspace: str | None = None) -> str:
    """A job whose succeeded items wrote `runs` (before None: a run older than the feature)."""
    suffix = secrets.token_hex(4)
    workspace = workspace or f"ws_report_{suffix}"
    job_id = f"bf_report_{suffix}"
    tx.execute(text("INSERT INTO workspaces (id) VALUES (:ws) ON CONFLICT DO NOTHING"),
               {"ws": workspace})
    tx.execute(text("""
        INSERT INTO backfill_jobs (id, workspace_id, kind, filters, options, state, matched)
        VALUES (:id, :ws, :kind, '[]', CAST(:options AS jsonb), 'completed', :n)
    """), {"id": job_id, "ws": workspace, "kind": kind, "n": len(runs),
           "options": json.dumps({"trial_size": 10} if trial else {})})
    for run in runs:
        tx.execute(text("""
            INSERT INTO sessions (session_id, kind, workspace_id, agent_id)
            VALUES (:sid, :kind, :ws, 'agent')
        """), {"sid": run.session_id, "kind": kind, "ws": workspace})
        tx.execute(text("""
            INSERT INTO analysis_runs (session_id, job_id, workspace_id, agent_id, agent_version,
                                       used_draft, model, config_hash, result, before,
                                       field_types, started_at)
            VALUES (:sid, :job, :ws, 'agent', 1, true, 'claude-haiku-4-5', 'h',
                    CAST(:after AS jsonb), CAST(:before AS jsonb), CAST(:types AS jsonb), now())
        """), {"sid": run.session_id, "job": job_id, "ws": workspace,
               "after": json.dumps(run.after),
               "before": None if run.before is None else json.dumps(run.before),
               "types": json.dumps(run.field_types)})
    return job_id


def prefixed(runs: Sequence[RunRecord], prefix: str) -> list[RunRecord]:
    """Session ids of our own (sessions are global), in the same code-point order."""
    return [replace(run, session_id=prefix + run.session_id) for run in runs]


@PROPERTY
@given(kind=st.sampled_from(["call", "chat"]), trial=st.booleans(), data=st.data())
def test_the_sql_report_is_the_oracle_report(tx: Connection, kind: str, trial: bool,
                                             data: st.DataObject) -> None:
    runs = prefixed(data.draw(run_records(kind)), "rp_")
    with example(tx):
        job_id = store_job(tx, kind, runs, trial=trial)
        assert report.change_report(tx, job_id) == compute_report(job_id, trial, kind, runs)


def call(summary: str, successful: bool = True, **custom: Any) -> dict[str, Any]:
    return {"call_summary": summary, "call_successful": successful,
            "user_sentiment": "Neutral", "custom_analysis_data": custom}


def test_examples_of_a_rare_field_past_the_candidates_are_found(tx: Connection) -> None:
    # Every session changes its summary; only the last few change `rare`, so their first
    # five lie past the first EXAMPLE_CANDIDATES changed runs.
    count = report.EXAMPLE_CANDIDATES + 30
    prefix = f"rare{secrets.token_hex(3)}_"
    runs = [RunRecord(f"{prefix}{n:05d}", call("old", rare=0),
                      call(f"new {n}", rare=1 if n >= count - 7 else 0), {"rare": "number"})
            for n in range(count)]
    job_id = store_job(tx, "call", runs)
    found = report.change_report(tx, job_id)
    assert found == compute_report(job_id, False, "call", runs)
    rare = [e["session_id"] for e in found["examples"]
            if e["field"] == "custom_analysis_data.rare"]
    assert rare == [f"{prefix}{n:05d}" for n in range(count - 7, count - 2)]


def test_more_custom_fields_than_one_statement_holds(tx: Connection) -> None:
    names = [f"field_{n:03d}" for n in range(report.FIELDS_PER_STATEMENT + 15)]
    prefix = f"wide{secrets.token_hex(3)}_"
    runs = [RunRecord(f"{prefix}{n}", call("same", **{name: n for name in names[n:]}),
                      call("same", **{name: n % 2 for name in names}),
                      {name: "number" for name in names}) for n in range(4)]
    job_id = store_job(tx, "call", runs)
    assert report.change_report(tx, job_id) == compute_report(job_id, False, "call", runs)


def test_another_workspace_sees_no_report(tx: Connection) -> None:
    job_id = store_job(tx, "call", [], workspace=f"ws_mine_{secrets.token_hex(3)}")
    with pytest.raises(NotFound):
        report.change_report(tx, job_id, workspace_id="ws_someone_else")
    with pytest.raises(NotFound):
        report.change_report(tx, "bf_missing")
    assert report.change_report(tx, job_id)["sessions"]["analysed"] == 0
