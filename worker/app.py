"""Celery entry point for workers: `celery -A worker.app worker` (or `backfill worker`)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Task
from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from sqlalchemy.exc import StatementError

from shared.celery_app import ANALYZE_SESSION, make_celery
from shared.db import Database
from shared.settings import Settings, get_settings
from worker import llm
from worker.leases import LeaseKeeper
from worker.service import WorkerContext, analyze_session

log = logging.getLogger("backfill.worker")

app = make_celery(get_settings())
_context: WorkerContext | None = None
_context_lock = threading.Lock()


def worker_context() -> WorkerContext:
    """Engine, LLM client and lease heartbeat per worker process, made on first use (never
    before a fork)."""
    global _context
    with _context_lock:  # the first tasks may arrive on several threads at once
        if _context is None:
            _context = _make_context()
        return _context


def _make_context() -> WorkerContext:
    settings: Settings = get_settings()
    # One connection per thread, plus one for the heartbeat.
    pool_size = max(settings.worker_concurrency + 1, 5)
    db = Database.from_settings(settings, pool_size=pool_size)
    leases = LeaseKeeper(db, settings.lease_s, max_hold_s=settings.task_deadline_s)
    leases.start()
    return WorkerContext(settings=settings, db=db, client=llm.make_client(settings),
                         leases=leases)


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    global _context
    _context = None


@worker_ready.connect
def _warm_up(**_: Any) -> None:
    worker_context()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _dispose(**_: Any) -> None:
    """After a warm shutdown has let the in-flight tasks finish (their leases renewed to the
    end), stop the heartbeat and close the pool."""
    global _context
    if _context is not None:
        if _context.leases is not None:
            _context.leases.stop()
        _context.db.dispose()
        _context = None


class AnalyzeTask(Task):  # type: ignore[misc]
    """Arguments are ids only: nothing personal reaches the broker or Flower."""

    acks_late = True
    ignore_result = True


@app.task(name=ANALYZE_SESSION, base=AnalyzeTask, bind=True)
def analyze_session_task(self: Task, job_id: str, session_id: str) -> str:
    try:
        outcome = analyze_session(worker_context(), job_id, session_id)
    except StatementError as exc:
        # A database error the service did not expect (a bug, not an outage). Its text holds
        # the statement's parameters (an analysis, personal data), so only the class goes to
        # Celery's log; the item's lease lapses and the reconciler retries it up to the cap.
        raise RuntimeError(f"database error: {type(exc.orig or exc).__name__}") from None
    log.info("session analysed", extra={"job_id": job_id, "session_id": session_id,
                                         "outcome": outcome})
    return outcome
