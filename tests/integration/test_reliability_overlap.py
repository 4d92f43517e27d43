"""Idempotent create under concurrency, and overlapping backfills on the same sessions: the
current analysis is the one from the run that started last, whatever order runs finish in."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from chaos.cluster import scratch_database
from chaos.seed import running_job, workspace_with_calls
from scheduler.dev.llm_stub import make_server
from scheduler.jobs import planner
from shared.db import Database
from shared.settings import Settings
from shared.state import items as item_states
from tests.integration.conftest import prepared, worker_context
from worker.context import WorkerContext
from worker.service import run_and_record

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scratch_url(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, "backfill_overlap") as url:
        yield url


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    server = make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def settings(scratch_url: str, stub_url: str) -> Settings:
    return Settings(database_url=scratch_url, anthropic_base_url=stub_url, backfill_llm="stub")


@pytest.fixture(scope="module")
def db(settings: Settings) -> Iterator[Database]:
    database = Database.from_settings(settings, pool_size=10)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def context(settings: Settings, db: Database) -> Iterator[WorkerContext]:
    with worker_context(settings, db) as context:
        yield context


def workspace(db: Database, calls: int) -> tuple[str, list[str]]:
    suffix = secrets.token_hex(4)
    sids = [f"call_{suffix}_{n}" for n in range(calls)]
    workspace_with_calls(db, f"ws_{suffix}", {sid: f"call number {n}" for n, sid in
                                               enumerate(sids)})
    return f"ws_{suffix}", sids


def count(db: Database, sql: str, **params: Any) -> int:
    with db.transaction() as tx:
        return int(tx.execute(text(sql), params).scalar_one())


def test_concurrent_creates_with_one_key_make_one_job_expanded_once(
        db: Database, settings: Settings) -> None:
    ws, sids = workspace(db, 25)
    barrier = threading.Barrier(8)
    created: list[planner.CreatedJob] = []

    def create() -> None:
        barrier.wait()
        created.append(planner.create_job(db, settings, ws, "call", [],
                                          idempotency_key="nightly-rerun"))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({c.job_id for c in created}) == 1
    assert sorted(c.created for c in created) == [False] * 7 + [True]
    job = created[0].job_id
    assert count(db, "SELECT count(*) FROM backfill_jobs WHERE workspace_id = :ws", ws=ws) == 1
    assert count(db, "SELECT count(*) FROM backfill_items WHERE job_id = :j", j=job) == len(sids)
    again = planner.create_job(db, settings, ws, "call", [], idempotency_key="nightly-rerun")
    assert (again.job_id, again.created) == (job, False)


def test_the_same_key_in_another_workspace_is_another_job(db: Database,
                                                          settings: Settings) -> None:
    first, _ = workspace(db, 1)
    second, _ = workspace(db, 1)
    one = planner.create_job(db, settings, first, "call", [], idempotency_key="k")
    other = planner.create_job(db, settings, second, "call", [], idempotency_key="k")
    assert one.job_id != other.job_id and other.created


def current_run_job(db: Database, sid: str) -> str:
    with db.transaction() as tx:
        return str(tx.execute(text("""
            SELECT r.job_id FROM sessions AS s JOIN analysis_runs AS r ON r.id = s.analysis_run_id
             WHERE s.session_id = :s"""), {"s": sid}).scalar_one())


def claim(db: Database, job: str, sid: str) -> item_states.Claim:
    with db.transaction() as tx:
        found = item_states.claim(tx, job, sid, 600)
    assert found is not None
    return found


@pytest.mark.parametrize("later_finishes_first", [True, False])
def test_the_run_that_started_last_wins(db: Database, context: WorkerContext,
                                        later_finishes_first: bool) -> None:
    ws, [sid] = workspace(db, 1)
    earlier, later = f"bf_{secrets.token_hex(4)}", f"bf_{secrets.token_hex(4)}"
    for job in (earlier, later):
        running_job(db, job, ws, [sid], state="queued")
    first_claim = claim(db, earlier, sid)
    second_claim = claim(db, later, sid)
    assert first_claim.started_at < second_claim.started_at
    order = [second_claim, first_claim] if later_finishes_first else [first_claim,
                                                                       second_claim]
    assert [run_and_record(context, prepared(context, c)) for c in order] == [
        "succeeded", "succeeded"]
    assert current_run_job(db, sid) == later
    # Both runs stay in history.
    assert count(db, "SELECT count(*) FROM analysis_runs WHERE session_id = :s", s=sid) == 2
