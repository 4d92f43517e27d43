"""Bad budget caps are refused at every door, naming the option, and create nothing: HTTP
`options.max_cost_usd` on create (and preview), the resume body's `max_cost_usd`, the CLI's
`--max-cost-usd` on create and resume (exit 2, one `error:` line). A good cap shows in the job
JSON as `max_cost_usd`, beside `pause_reason` and `spend`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from test_api_support import Tenant, held_job, make_tenant, snapshot

from scheduler.dev import processes
from scheduler.http.app import create_app
from shared.db import Database
from shared.settings import Settings

pytestmark = pytest.mark.integration

BELOW_ONE_SESSION = 1e-9


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def tenant(db: Database) -> Tenant:
    return make_tenant(db, "budget", calls=4, chats=1)


@pytest.fixture(scope="module")
def refused(db: Database) -> Tenant:
    """A workspace where every request is refused: nothing in it ever runs or changes."""
    return make_tenant(db, "budgetno", calls=2, chats=1)


def create(client: TestClient, tenant: Tenant, cap: Any) -> Any:
    return client.post("/v1/backfills", headers=tenant.headers, json={
        "kind": "call", "filters": [], "options": {"max_cost_usd": cap}})


@pytest.mark.parametrize(("cap", "problem"), [
    (0, "greater than 0"), (-1.5, "greater than 0"), ("12", "greater than 0"),
    (True, "greater than 0"), (BELOW_ONE_SESSION, "below the estimated cost of one session"),
])
def test_create_refuses_a_bad_cap_naming_the_option(client: TestClient, db: Database,
                                                    refused: Tenant, cap: Any,
                                                    problem: str) -> None:
    before = snapshot(db, refused.workspace_id)
    response = create(client, refused, cap)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_input"
    assert error["message"].startswith("options.max_cost_usd: ") and problem in error["message"]
    assert snapshot(db, refused.workspace_id)["jobs"] == before["jobs"] == []


def test_preview_validates_the_cap_too(client: TestClient, tenant: Tenant) -> None:
    response = client.post("/v1/backfills/preview", headers=tenant.headers, json={
        "kind": "call", "filters": [], "options": {"max_cost_usd": -3}})
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("options.max_cost_usd: ")


def test_a_capped_job_shows_its_cap_and_spend(client: TestClient, tenant: Tenant) -> None:
    response = create(client, tenant, 12.5)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["max_cost_usd"] == 12.5
    assert job["pause_reason"] is None
    assert set(job["spend"]) == {"spent_usd", "reserved_usd"}
    assert "max_cost_usd" not in job["options"]  # the cap lives in the budget, not here
    create_event = next(event for event in job["audit"] if event["action"] == "create")
    assert create_event["details"]["max_cost_usd"] == 12.5


@pytest.mark.parametrize(("body", "problem"), [
    ({"max_cost_usd": "abc"}, "max_cost_usd"), ({"max_cost_usd": 0}, "max_cost_usd"),
    ({"max_cost_usd": -2}, "max_cost_usd"), ({"max_cost_usd": None, "extra": 1}, "extra"),
])
def test_resume_refuses_a_bad_cap(client: TestClient, db: Database, tenant: Tenant,
                                  body: dict[str, Any], problem: str) -> None:
    job_id = held_job(db, tenant, pending=(tenant.call_ids[0],))
    response = client.post(f"/v1/backfills/{job_id}/resume", headers=tenant.headers, json=body)
    assert response.status_code == 422, response.text
    assert problem in response.json()["error"]["message"]
    assert state_of(db, job_id) == "paused"


def test_resume_gives_an_uncapped_job_a_cap(client: TestClient, db: Database,
                                            tenant: Tenant) -> None:
    job_id = held_job(db, tenant, pending=(tenant.call_ids[1],))
    response = client.post(f"/v1/backfills/{job_id}/resume", headers=tenant.headers,
                           json={"max_cost_usd": 3, "reason": "with a budget"})
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["max_cost_usd"] == 3 and job["state"] in ("running", "completed")
    with db.transaction() as tx:
        estimate = tx.execute(text("""
            SELECT estimate_base_usd, estimate_usd_per_char FROM backfill_jobs WHERE id = :id
        """), {"id": job_id}).one()
    assert estimate.estimate_base_usd > 0 and estimate.estimate_usd_per_char > 0


def state_of(db: Database, job_id: str) -> str:
    with db.transaction() as tx:
        return str(tx.execute(text("SELECT state FROM backfill_jobs WHERE id = :id"),
                              {"id": job_id}).scalar_one())


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"DATABASE_URL": settings.require_database_url(),
           "BROKER_URL": settings.require_broker_url(), "BACKFILL_QUEUE": settings.queue_name}
    return subprocess.run(processes.backfill_command(*args), env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], result.stderr


@pytest.mark.parametrize(("value", "needles"), [
    ("abc", ("--max-cost-usd", "'abc'")), ("0", ("--max-cost-usd",)),
    ("nan", ("--max-cost-usd",)), ("-4", ("--max-cost-usd",)),
    (str(BELOW_ONE_SESSION), ("max_cost_usd", "below the estimated cost of one session")),
])
def test_cli_create_refuses_a_bad_cap(settings: Settings, db: Database, refused: Tenant,
                                      value: str, needles: tuple[str, ...]) -> None:
    result = cli(settings, "create", "--workspace", refused.workspace_id, "--kind", "call",
                 "--filters", "[]", "--max-cost-usd", value)
    assert_refused(result, *needles)
    assert snapshot(db, refused.workspace_id)["jobs"] == []


def test_cli_resume_refuses_a_bad_cap(settings: Settings, db: Database, tenant: Tenant) -> None:
    job_id = held_job(db, tenant, pending=(tenant.call_ids[2],))
    assert_refused(cli(settings, "resume", job_id, "--reason", "more", "--max-cost-usd", "-1"),
                   "--max-cost-usd")
    assert state_of(db, job_id) == "paused"
