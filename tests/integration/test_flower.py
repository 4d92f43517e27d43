"""`backfill flower` as a real process next to the running pipeline: it needs basic auth to
start and to answer, shows the worker, and lists `backfill.analyze_session` tasks with their
job and session ids (ids only, never a transcript)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_api_support import make_tenant

from scheduler.dev import processes
from scheduler.dev.processes import free_port
from scheduler.jobs import documents, operations
from shared.broker import ANALYZE_SESSION
from shared.db import Database
from shared.settings import Settings

pytestmark = pytest.mark.integration

LOG_DIR = Path(__file__).resolve().parents[2] / ".run" / "test" / "logs"
CREDENTIALS = ("oncall", "s3cret-flower")


def _env_without_flower_auth() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}


@pytest.fixture(scope="module")
def flower_url(pipeline: Any) -> Iterator[str]:
    port = free_port()
    log_path = LOG_DIR / "flower.log"
    log_path.unlink(missing_ok=True)
    env = {**pipeline.env, "FLOWER_BASIC_AUTH": ":".join(CREDENTIALS)}
    process = processes.start(processes.backfill_command("flower", "--port", str(port)),
                              log_path, env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_answering(url, process, log_path)
        yield url
    finally:
        processes.stop(process)


def _wait_until_answering(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(f"{url}/api/workers", auth=CREDENTIALS, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"Flower did not answer; see {log_path}")


def _poll(check: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_flower_refuses_to_start_without_basic_auth(settings: Settings) -> None:
    env = {**_env_without_flower_auth(), "DATABASE_URL": settings.require_database_url(),
           "BROKER_URL": settings.require_broker_url()}
    for value in (None, "no-colon", ":password", "user:"):
        run_env = env if value is None else {**env, "FLOWER_BASIC_AUTH": value}
        result = subprocess.run(processes.backfill_command("flower", "--port", "1"),
                                env=run_env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (value, result.stderr)
        assert "FLOWER_BASIC_AUTH" in result.stderr


def test_flower_api_is_refused_without_credentials(flower_url: str) -> None:
    for path in ("/api/workers", "/api/tasks"):
        assert httpx.get(f"{flower_url}{path}", timeout=10).status_code == 401
        wrong = httpx.get(f"{flower_url}{path}", auth=("oncall", "nope"), timeout=10)
        assert wrong.status_code == 401


def test_flower_shows_the_worker(flower_url: str) -> None:
    def workers() -> dict[str, Any]:
        response = httpx.get(f"{flower_url}/api/workers?refresh=1", auth=CREDENTIALS,
                             timeout=30)
        assert response.status_code == 200
        found: dict[str, Any] = response.json()
        return {name: info for name, info in found.items() if name.startswith("worker-main@")}

    assert _poll(workers), "the pipeline's worker is not listed"


def test_flower_lists_tasks_with_ids_only(flower_url: str, db: Database,
                                          settings: Settings) -> None:
    tenant = make_tenant(db, "flower", calls=2, chats=0)
    created = operations.create_job(db, settings, tenant.workspace_id, "call", [],
                                    actor="os:pytest")

    def finished() -> bool:
        with db.transaction() as tx:
            return bool(documents.job_json(tx, settings, created.job_id)["state"] == "completed")

    assert _poll(finished), "the job did not complete"

    def our_tasks() -> list[dict[str, Any]]:
        response = httpx.get(f"{flower_url}/api/tasks", params={"limit": 5000},
                             auth=CREDENTIALS, timeout=30)
        assert response.status_code == 200
        tasks: dict[str, Any] = response.json()
        return [task for task in tasks.values() if created.job_id in str(task.get("args"))]

    tasks = _poll(lambda: len(our_tasks()) >= 2 and our_tasks())
    assert tasks, "Flower lists no task of the job"
    assert {task["name"] for task in tasks} == {ANALYZE_SESSION}
    assert {task["args"] for task in tasks} == {
        repr([created.job_id, session_id]) for session_id in tenant.call_ids}
    dump = json.dumps(tasks)
    assert "book a table" not in dump and "How can I help" not in dump  # no transcript
