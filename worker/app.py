"""Celery entry point for workers: `celery -A worker.app worker` (or `backfill worker`)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

from shared.celery_app import ANALYZE_SESSION, make_celery
from shared.db import Database
from shared.settings import Settings, get_settings
from worker import llm
from worker.service import WorkerContext, analyze_session

log = logging.getLogger("backfill.worker")

app = make_celery(get_settings())
_context: WorkerContext | None = None


def worker_context() -> WorkerContext:
    """Engine and LLM client per worker process, made on first use (never before a fork)."""
    global _context
    if _context is None:
        settings: Settings = get_settings()
        pool_size = max(settings.worker_concurrency, 5)
        _context = WorkerContext(
            settings=settings,
            db=Database.from_settings(settings, pool_size=pool_size),
            client=llm.make_client(settings),
        )
    return _context


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    global _context
    _context = None


@worker_ready.connect
def _warm_up(**_: Any) -> None:
    worker_context()


@worker_process_shutdown.connect
def _dispose(**_: Any) -> None:
    if _context is not None:
        _context.db.dispose()


class AnalyzeTask(Task):  # type: ignore[misc]
    """Arguments are ids only: nothing personal reaches the broker or Flower."""

    acks_late = True
    ignore_result = True


@app.task(name=ANALYZE_SESSION, base=AnalyzeTask, bind=True)
def analyze_session_task(self: Task, job_id: str, session_id: str) -> str:
    outcome = analyze_session(worker_context(), job_id, session_id)
    log.info("session analysed", extra={"job_id": job_id, "session_id": session_id,
                                         "outcome": outcome})
    return outcome
