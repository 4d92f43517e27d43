"""Prometheus metrics of a real run: a worker and a scheduler with `--metrics-port`, on a
database and queue of their own, over the stand-in (which fails some sessions at once).
Scraped over HTTP, the counters must equal what the job's SQL counts say."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from test_webhooks_support import (
    Samples,
    Stack,
    job_document,
    scrape,
    seed_workspace,
    total,
    wait_for_job,
    wait_until,
)

from scheduler.dev.processes import free_port
from scheduler.jobs import operations, planner
from shared.db import Database
from shared.settings import Settings

pytestmark = pytest.mark.integration

MODEL = "claude-haiku-4-5"
ID_LABELS = {"job_id", "session_id", "workspace_id", "webhook_id", "event_id"}


@pytest.fixture(scope="module")
def stack(scratch_url: str, broker_url: str, faulty_stub_url: str) -> Iterator[Stack]:
    running = Stack(scratch_url, broker_url, faulty_stub_url)
    yield running
    running.stop_all()


def assert_no_id_in_labels(samples: Samples, ids: list[str]) -> None:
    for name, labels in samples:
        assert not ID_LABELS & {label for label, _ in labels}, name
        for _, value in labels:
            assert not any(identifier in value for identifier in ids), (name, value)


def test_counters_equal_the_job_counts_and_gauges_follow_a_running_job(
        stack: Stack, scratch_db: Database) -> None:
    seeded = seed_workspace(scratch_db, succeeding=6, skipped=2, failing=2)
    worker_port, scheduler_port = free_port(), free_port()
    stack.worker("worker", "--metrics-port", str(worker_port))
    stack.scheduler("scheduler", "--metrics-port", str(scheduler_port))
    settings = Settings()
    job_id = planner.create_job(scratch_db, settings, seeded.workspace_id, "call", [],
                                created_by="os:pytest").job_id
    wait_for_job(scratch_db, job_id)
    job = job_document(scratch_db, job_id)
    assert {k: job["counts"][k] for k in ("succeeded", "skipped", "failed")} == {
        "succeeded": 6, "skipped": 2, "failed": 2}

    worker = scrape(worker_port)
    for outcome in ("succeeded", "skipped", "failed"):
        assert total(worker, "backfill_sessions_total", outcome=outcome) == job["counts"][outcome]
    assert total(worker, "backfill_sessions_total", outcome="failed",
                 error_kind="llm_bad_request", model=MODEL) == 2
    assert total(worker, "backfill_sessions_total", outcome="skipped", error_kind="none",
                 model="none") == 2
    usage = job["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    for kind in ("input", "output", "cache_read", "cache_write"):
        assert total(worker, "backfill_llm_tokens_total", model=MODEL, type=kind) == usage[
            f"{kind}_tokens"], kind
    assert total(worker, "backfill_llm_cost_usd_total", model=MODEL) == pytest.approx(
        usage["cost_usd"], abs=1e-6)
    assert total(worker, "backfill_llm_requests_total", model=MODEL, status="200") == 6
    assert total(worker, "backfill_llm_requests_total", model=MODEL, status="400") == 2
    assert total(worker, "backfill_llm_request_duration_seconds_count", model=MODEL) == 8
    assert_no_id_in_labels(worker, [job_id, seeded.workspace_id, *seeded.all_ids])

    scheduler = scrape(scheduler_port)
    assert total(scheduler, "backfill_dispatched_messages_total") == 10
    assert total(scheduler, "backfill_scheduler_leader") == 1
    assert total(scheduler, "backfill_jobs", state="completed") == 1
    assert total(scheduler, "backfill_jobs", state="running") == 0
    assert total(scheduler, "backfill_job_items") == 0  # no job runs
    assert total(scheduler, "backfill_broker_queue_length") == 0

    # Without a worker, a second job's messages wait in the broker: the gauges show it.
    stack.stop("worker")
    second = planner.create_job(scratch_db, settings, seeded.workspace_id, "call", [],
                                created_by="os:pytest").job_id
    wait_until(lambda: total(scrape(scheduler_port), "backfill_job_items", state="queued") == 10,
               60, "the second job's items to be queued")
    scheduler = scrape(scheduler_port)
    assert total(scheduler, "backfill_job_items") == 10
    assert total(scheduler, "backfill_jobs", state="running") == 1
    assert total(scheduler, "backfill_broker_queue_length") == 10
    assert_no_id_in_labels(scheduler, [job_id, second, seeded.workspace_id, *seeded.all_ids])
    operations.cancel(scratch_db, second, actor="os:pytest", reason="test over")
    with scratch_db.transaction() as tx:
        queued = tx.execute(text("SELECT count(*) FROM backfill_items WHERE job_id = :j AND "
                                 "state = 'cancelled'"), {"j": second}).scalar_one()
    assert queued == 10
