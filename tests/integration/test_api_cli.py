"""The operator side of the API issue through the real CLI: `api-key create|revoke`, `api`,
`--reason` on the state-changing verbs, and the audit trail in `show`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from test_api_support import Tenant, held_job, make_tenant

from scheduler.dev import processes
from scheduler.dev.processes import free_port
from shared.db import Database
from shared.settings import Settings

pytestmark = pytest.mark.integration

LOG_DIR = Path(__file__).resolve().parents[2] / ".run" / "test" / "logs"


@pytest.fixture(scope="module")
def env(settings: Settings) -> dict[str, str]:
    return {"DATABASE_URL": settings.require_database_url(),
            "BROKER_URL": settings.require_broker_url(), "BACKFILL_QUEUE": settings.queue_name}


@pytest.fixture(scope="module")
def tenant(db: Database) -> Tenant:
    return make_tenant(db, "apicli", calls=3, chats=0)


def backfill(env: dict[str, str], *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(processes.backfill_command(*args), env={**os.environ, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def api_url(env: dict[str, str]) -> Iterator[str]:
    """`backfill api` as a real process."""
    port = free_port()
    log_path = LOG_DIR / "api.log"
    log_path.unlink(missing_ok=True)
    process = processes.start(
        processes.backfill_command("api", "--host", "127.0.0.1", "--port", str(port)),
        log_path, env)
    try:
        processes.wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout_s=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        processes.stop(process)


def test_api_key_create_prints_the_key_once(env: dict[str, str], tenant: Tenant,
                                            db: Database, api_url: str) -> None:
    created = json.loads(backfill(env, "api-key", "create", "--workspace",
                                  tenant.workspace_id, "--json").stdout)
    assert set(created) == {"key", "key_id", "workspace_id"}
    assert created["workspace_id"] == tenant.workspace_id
    plain = backfill(env, "api-key", "create", "--workspace", tenant.workspace_id)
    assert plain.stdout.strip().startswith("bfk_") and len(plain.stdout.splitlines()) == 1
    with db.transaction() as tx:
        stored = tx.execute(text("SELECT * FROM api_keys WHERE id = :id"),
                            {"id": created["key_id"]}).one()
        audit = tx.execute(text("SELECT actor, action FROM audit_events WHERE workspace_id = :ws"
                                " AND action = 'api_key_create'"),
                           {"ws": tenant.workspace_id}).all()
    assert created["key"] not in [str(value) for value in stored]
    assert all(actor.startswith("os:") for actor, _ in audit) and len(audit) >= 2
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert httpx.get(f"{api_url}/v1/backfills", headers=headers).status_code == 200
    backfill(env, "api-key", "revoke", created["key_id"])
    assert httpx.get(f"{api_url}/v1/backfills", headers=headers).status_code == 401


def test_api_key_for_an_unknown_workspace_exits_2(env: dict[str, str]) -> None:
    result = backfill(env, "api-key", "create", "--workspace", "ws_nobody_here", expect=2)
    assert "unknown workspace" in result.stderr


def test_api_process_serves_health_and_openapi(api_url: str) -> None:
    assert httpx.get(f"{api_url}/healthz").json()["status"] == "ok"
    schema = httpx.get(f"{api_url}/openapi.json").json()
    assert "/v1/backfills/{job_id}/requeue" in schema["paths"]


@pytest.mark.parametrize("verb", ["pause", "resume", "cancel", "requeue"])
def test_state_changes_need_a_reason(env: dict[str, str], db: Database, tenant: Tenant,
                                     verb: str) -> None:
    job_id = held_job(db, tenant, failed=(tenant.call_ids[0],))
    missing = backfill(env, verb, job_id, expect=2)
    assert "--reason" in missing.stderr
    blank = backfill(env, verb, job_id, "--reason", "  ", expect=2)
    assert "--reason" in blank.stderr
    with db.transaction() as tx:
        state = tx.execute(text("SELECT state FROM backfill_jobs WHERE id = :id"),
                           {"id": job_id}).scalar_one()
    assert state == "paused"


def test_show_lists_the_audit_trail(env: dict[str, str], db: Database, tenant: Tenant) -> None:
    job_id = held_job(db, tenant, failed=(tenant.call_ids[1],))
    dry = json.loads(backfill(env, "requeue", job_id, "--dry-run", "--json").stdout)
    assert dry == {"requeued": 1, "dry_run": True}  # a dry run needs no reason
    backfill(env, "requeue", job_id, "--error-kind", "llm_refusal", "--reason", "prompt fixed")
    backfill(env, "cancel", job_id, "--reason", "wrong workspace")
    document: dict[str, Any] = json.loads(backfill(env, "show", job_id, "--json").stdout)
    trail = [(event["action"], event["reason"]) for event in document["audit"]]
    assert trail == [("requeue", "prompt fixed"), ("cancel", "wrong workspace")]
    assert all(event["actor"].startswith("os:") for event in document["audit"])
    table = backfill(env, "show", job_id).stdout
    assert "audit" in table and "prompt fixed" in table and "wrong workspace" in table


def test_create_and_rerun_are_audited(env: dict[str, str], tenant: Tenant) -> None:
    job = json.loads(backfill(env, "create", "--workspace", tenant.workspace_id, "--kind",
                              "call", "--filters", "[]", "--reason", "new prompt",
                              "--json").stdout)
    assert [(e["action"], e["reason"]) for e in job["audit"]] == [("create", "new prompt")]
    rerun = json.loads(backfill(env, "rerun", tenant.call_ids[2], "--reason", "customer asked",
                                "--json").stdout)
    assert [(e["action"], e["reason"], e["details"]) for e in rerun["audit"]] == [
        ("rerun", "customer asked", {"session_id": tenant.call_ids[2]})]


def test_failed_lists_failed_items(env: dict[str, str], db: Database, tenant: Tenant) -> None:
    job_id = held_job(db, tenant, failed=(tenant.call_ids[0],), pending=(tenant.call_ids[1],))
    items = json.loads(backfill(env, "failed", job_id, "--json").stdout)
    assert items == [{"session_id": tenant.call_ids[0], "error_kind": "llm_refusal",
                      "error": "the model refused", "attempts": 1}]
    table = backfill(env, "failed", job_id).stdout
    assert tenant.call_ids[0] in table and "llm_refusal" in table
