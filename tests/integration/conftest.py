"""Real processes for integration tests: the stand-in over HTTP, a Celery worker, the scheduler."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_webhooks_support import open_scratch, start_faulty_stub

from scheduler.dev import processes
from scheduler.dev.llm_stub import StubServer, make_server
from scheduler.dev.processes import wait_for_log
from shared.db import Database
from shared.pipeline import Prepared, prepare
from shared.settings import Settings
from shared.state.items import Claim
from worker import llm
from worker.context import WorkerContext

LOG_DIR = Path(__file__).resolve().parents[2] / ".run" / "test" / "logs"


@pytest.fixture(scope="session")
def stub_server() -> Iterator[StubServer]:
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def stub_url(stub_server: StubServer) -> str:
    return f"http://127.0.0.1:{stub_server.server_address[1]}"


@dataclass
class Pipeline:
    """A running worker and scheduler, sharing the test run's database, broker and queue."""

    worker: subprocess.Popen[bytes]
    scheduler: subprocess.Popen[bytes]
    env: dict[str, str]


def service_env(settings: Settings, stub_url: str) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.require_database_url(),
        "BROKER_URL": settings.require_broker_url(),
        "BACKFILL_QUEUE": settings.queue_name,
        "ANTHROPIC_BASE_URL": stub_url,
        "BACKFILL_LLM": "stub",
        "BACKFILL_DISPATCH_INTERVAL_S": "0.2",
        "BACKFILL_RETRY_BASE_S": "0.2",
        "BACKFILL_RETRY_CAP_S": "2",
    }


def start_worker(env: dict[str, str], name: str, concurrency: int = 8) -> subprocess.Popen[bytes]:
    log_path = LOG_DIR / f"{name}.log"
    log_path.unlink(missing_ok=True)
    process = processes.start(
        processes.backfill_command("worker", "--concurrency", str(concurrency), "--",
                                   "--hostname", f"{name}@%h"),
        log_path, env,
    )
    try:
        wait_for_log(log_path, "ready.", process)
    except BaseException:
        processes.stop(process)  # a worker that never got ready must not outlive the tests
        raise
    return process


@pytest.fixture(scope="session")
def pipeline(settings: Settings, stub_url: str) -> Iterator[Pipeline]:
    env = service_env(settings, stub_url)
    worker = start_worker(env, "worker-main")
    scheduler_log = LOG_DIR / "scheduler.log"
    scheduler_log.unlink(missing_ok=True)
    scheduler = processes.start(processes.backfill_command("scheduler"), scheduler_log, env)
    wait_for_log(scheduler_log, "scheduler running", scheduler)
    yield Pipeline(worker=worker, scheduler=scheduler, env=env)
    processes.stop(scheduler)
    processes.stop(worker)


def prepared(context: WorkerContext, claim: Claim) -> Prepared:
    """What the worker reads in the claim's transaction, for a claim a test made itself."""
    with context.db.transaction() as tx:
        ready = prepare(tx, context.settings, claim)
    assert isinstance(ready, Prepared), ready
    return ready


@contextmanager
def worker_context(settings: Settings, db: Database) -> Iterator[WorkerContext]:
    """What a worker process builds, on a test's own settings and database; the SDK client
    (and its rate limiter's Redis connection) is closed afterwards."""
    with llm.make_caller(settings) as caller:
        yield WorkerContext(settings, db, caller)


# --------------------------------------------------------------------------- observed runs
# The log, metric and webhook tests run their stacks (`test_webhooks_support.Stack`) on a
# database of the module's own, some over a stand-in that fails chosen sessions at once.


@pytest.fixture(scope="module")
def scratch_url(database_url: str) -> Iterator[str]:
    yield from open_scratch(database_url)


@pytest.fixture(scope="module")
def scratch_db(scratch_url: str) -> Iterator[Database]:
    database = Database.from_settings(Settings(database_url=scratch_url), pool_size=3)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def faulty_stub_url() -> Iterator[str]:
    server, url = start_faulty_stub()
    yield url
    server.shutdown()
    server.server_close()
