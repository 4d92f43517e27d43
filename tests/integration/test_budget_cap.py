"""A budget cap on real processes: two worker processes at concurrency 32 against a stand-in
with some latency, a job capped at about a third of what it would cost.

It must pause at the cap (`pause_reason: budget_exhausted`, an audit event), spent + reserved
must stay within the cap at every sample taken while it runs, and the stand-in's own invoice
may pass the cap by at most 5%. Resumed with a higher cap it runs on and completes, still
within the new cap. A run of its own, so the stand-in's invoice holds only this job.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from scheduler.jobs import estimates, operations
from shared.errors import InvalidInput
from shared.state import budget
from tests.integration.conftest import LOG_DIR
from tests.support import spend
from tests.support.spend import SpendRun

pytestmark = pytest.mark.integration

SESSIONS = 240
CAP_SHARE = 0.3
WORKERS = 2
CONCURRENCY = 32
# The settled figures are exact decimals; the document rounds each to 6 places.
ROUNDING = 2e-6


@dataclass
class Samples:
    """spent + reserved of the job, as the job JSON shows it and as its row holds it."""

    shown: list[float] = field(default_factory=list)
    row: list[Decimal] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


@pytest.fixture(scope="module")
def run(database_url: str, broker_url: str) -> Iterator[SpendRun]:
    with spend.spend_run(database_url, broker_url, LOG_DIR, latency_ms=300) as spend_run:
        spend_run.start_scheduler()
        for n in range(WORKERS):
            spend_run.start_worker(f"worker-cap-{n}", CONCURRENCY)
        yield spend_run


@pytest.fixture(scope="module")
def workspace(run: SpendRun) -> str:
    workspace_id = f"ws_cap_{secrets.token_hex(3)}"
    haiku = spend.agents(secrets.token_hex(4))[0]
    spend.seed_workspace(run.db, workspace_id, [haiku], {haiku.agent_id: {"all": SESSIONS}})
    return workspace_id


def sample_while_running(run: SpendRun, job_id: str, samples: Samples) -> threading.Thread:
    """The figures the job JSON shows (`budget.spend_of`, what `documents` reads) and the
    job row's settled ones, every few milliseconds."""
    def sample() -> None:
        while not samples.stop.is_set():
            with run.db.transaction() as tx:
                shown = budget.spend_of(tx, [job_id])[job_id]
                samples.shown.append(float(shown.spent_usd + shown.reserved_usd))
                samples.row.append(tx.execute(text(
                    "SELECT spent_usd + reserved_usd FROM backfill_jobs WHERE id = :id"),
                    {"id": job_id}).scalar_one())
            samples.stop.wait(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    return thread


@dataclass
class Capped:
    estimate_usd: float
    cap: float
    job_id: str
    paused: dict[str, Any]
    samples: Samples
    billed_usd: float


@pytest.fixture(scope="module")
def capped(run: SpendRun, workspace: str) -> Capped:
    rows = spend.filters("short_haiku")
    estimate = estimates.preview_estimate(run.db, run.settings, workspace, "call", rows)
    cap = round(estimate["estimate"]["usd"] * CAP_SHARE, 6)
    created = operations.create_job(run.db, run.settings, workspace, "call", rows,
                                    actor="os:test", options={"max_cost_usd": cap})
    samples = Samples()
    sampler = sample_while_running(run, created.job_id, samples)
    try:
        paused = run.wait_for(created.job_id, ["paused", "completed"], timeout_s=180)
    finally:
        samples.stop.set()
        sampler.join(5)
    return Capped(estimate["estimate"]["usd"], cap, created.job_id, paused, samples,
                  spend.billed_usd(run.settings, run.stub.billed))


def test_the_job_pauses_at_its_cap(capped: Capped) -> None:
    job = capped.paused
    assert job["state"] == "paused"
    assert job["pause_reason"] == "budget_exhausted"
    assert job["max_cost_usd"] == pytest.approx(capped.cap)
    assert job["state_reason"].startswith("budget_exhausted: ")
    # Stopped at the cap, not long before it: the cap covers about a third of the sessions.
    assert 0.2 * SESSIONS < job["counts"]["succeeded"] < 0.45 * SESSIONS
    assert job["counts"]["pending"] == SESSIONS - job["counts"]["succeeded"]
    assert job["spend"]["spent_usd"] >= 0.85 * capped.cap
    assert job["spend"]["reserved_usd"] == 0
    pause = [event for event in job["audit"] if event["action"] == "pause"]
    assert pause and pause[-1]["actor"] == "system:scheduler"
    assert pause[-1]["reason"] == "budget_exhausted"


def test_spent_plus_reserved_never_passed_the_cap(capped: Capped) -> None:
    assert len(capped.samples.shown) > 20  # sampled all along, not once at the end
    assert max(capped.samples.shown) <= capped.cap
    assert max(capped.samples.row) <= Decimal(str(capped.cap))
    # Reservations were made while it ran (the samples saw sessions in flight).
    assert any(value > 0 for value in capped.samples.shown)


def test_the_stand_ins_bill_stays_within_5_percent_of_the_cap(capped: Capped) -> None:
    assert capped.billed_usd <= capped.cap * 1.05
    assert capped.paused["spend"]["spent_usd"] == pytest.approx(capped.billed_usd, abs=ROUNDING)


def test_resuming_without_a_higher_cap_is_refused(run: SpendRun, capped: Capped) -> None:
    with pytest.raises(operations.JobStateConflict, match="higher max_cost_usd"):
        operations.resume(run.db, capped.job_id, actor="os:test", reason="try again",
                          settings=run.settings)
    with pytest.raises(InvalidInput, match="max_cost_usd: .* leaves no room"):
        operations.resume(run.db, capped.job_id, actor="os:test", reason="too little",
                          settings=run.settings, max_cost_usd=capped.cap)
    assert run.job(capped.job_id)["state"] == "paused"


def test_resumed_with_a_higher_cap_it_completes_within_it(run: SpendRun,
                                                          capped: Capped) -> None:
    new_cap = round(capped.estimate_usd * 1.5, 6)
    operations.resume(run.db, capped.job_id, actor="os:test", reason="approved",
                      settings=run.settings, max_cost_usd=new_cap)
    samples = Samples()
    sampler = sample_while_running(run, capped.job_id, samples)
    try:
        job = run.wait_for(capped.job_id, ["completed", "paused"], timeout_s=240)
    finally:
        samples.stop.set()
        sampler.join(5)
    assert job["state"] == "completed", job["state_reason"]
    assert job["counts"]["succeeded"] == SESSIONS
    assert job["max_cost_usd"] == pytest.approx(new_cap) and job["pause_reason"] is None
    billed = spend.billed_usd(run.settings, run.stub.billed)
    assert billed <= new_cap * 1.05
    assert max(samples.shown) <= new_cap
    resume = [event for event in job["audit"] if event["action"] == "resume"][-1]
    assert resume["details"]["max_cost_usd"] == pytest.approx(new_cap)
    assert resume["details"]["previous_max_cost_usd"] == pytest.approx(capped.cap)
    # Settled: nothing is held any more, and the spend is the whole invoice.
    settled = run.wait_for(capped.job_id, ["completed"], timeout_s=5)
    assert settled["spend"]["reserved_usd"] == 0
    assert settled["spend"]["spent_usd"] == pytest.approx(billed, abs=ROUNDING)
