"""A budget cap in batch mode: the scheduler's batch cycle claims only as many sessions into a
Message Batch as the cap has room for (each reserving its batch-priced estimate), charges
each result at the batch discount, and pauses the job at the cap. The stand-in's invoice,
priced as the provider bills batches, stays within 5% of the cap."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from scheduler.dev.llm_stub import batches as stub_batches
from scheduler.jobs import estimates, operations
from tests.integration.conftest import LOG_DIR
from tests.support import spend
from tests.support.spend import SpendRun

pytestmark = pytest.mark.integration

SESSIONS = 60


@pytest.fixture(scope="module")
def run(database_url: str, broker_url: str) -> Iterator[SpendRun]:
    env = {"BACKFILL_BATCH_POLL_INTERVAL_S": "0.5"}
    with spend.spend_run(database_url, broker_url, LOG_DIR, env=env) as spend_run:
        stub_batches.configure(spend_run.stub, delay_ms=1500)
        spend_run.start_scheduler()
        yield spend_run


def test_a_batch_job_pauses_at_its_cap(run: SpendRun) -> None:
    workspace_id = f"ws_batchcap_{secrets.token_hex(3)}"
    haiku = spend.agents(secrets.token_hex(4))[0]
    spend.seed_workspace(run.db, workspace_id, [haiku], {haiku.agent_id: {"all": SESSIONS}})
    rows = spend.filters(haiku.agent_id)
    estimate = estimates.preview_estimate(run.db, run.settings, workspace_id, "call", rows,
                                          mode="batch")
    cap = round(estimate["estimate"]["usd"] * 0.4, 6)
    job_id = operations.create_job(run.db, run.settings, workspace_id, "call", rows,
                                   actor="os:test", options={"max_cost_usd": cap},
                                   mode="batch").job_id
    job, held = run.wait_sampling_held(job_id, ["paused", "completed"], timeout_s=120,
                                       every_s=0.02)
    assert job["state"] == "paused" and job["pause_reason"] == "budget_exhausted"
    assert 0.25 * SESSIONS < job["counts"]["succeeded"] < 0.5 * SESSIONS
    answers = run.stub.billed
    assert answers and all(answer.batch for answer in answers)
    billed = spend.billed_usd(run.settings, answers)
    assert billed <= cap * 1.05
    assert job["spend"]["spent_usd"] == pytest.approx(billed, abs=2e-6)
    assert job["usage"]["cost_usd"] == pytest.approx(billed, abs=2e-6)
    assert len(held) > 20 and max(held) <= cap
