"""Celery entry point for workers: `celery -A worker.app worker` (or `backfill worker`).

The task is thin: it reads ids and runs `worker.service.analyze_session` on the process's
context (the pipeline logs and counts each outcome). Arguments are ids only, so nothing
personal reaches the broker or Flower. Logging is ours, not Celery's (`setup_logging`), so
Celery's lines and ours share one format; `/metrics` is served when BACKFILL_METRICS_PORT is
set (one port per worker process).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Task
from celery.signals import (
    celeryd_init,
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from sqlalchemy.exc import StatementError

from shared import logs, metrics
from shared.broker import ANALYZE_SESSION, make_celery
from shared.db import Database
from shared.errors import EnvironmentProblem
from shared.migrate import require_schema_at_head
from shared.settings import get_settings
from worker.context import ProcessContext
from worker.service import analyze_session

_PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")

settings = get_settings()
app = make_celery(settings)
context = ProcessContext(settings)


@celeryd_init.connect
@setup_logging.connect
def _configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """`celeryd_init` comes first, before Celery's own start-up warnings (which then go
    through our formatter too); `setup_logging`, connected, tells Celery to leave logging
    alone and brings the worker's --loglevel. Our formatter serves every logger, Celery's
    included, and stdout is not redirected into a logger."""
    logs.configure(settings.log_format, level=loglevel or logging.INFO)
    # A session's line is ours (`session_finished`, with its ids); Celery's per-task "received"
    # and "succeeded" lines name only the task's uuid, and would triple the volume. Their
    # warnings and errors (a task that raised) still show.
    for name in _PER_TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@worker_init.connect
def _refuse_a_schema_behind_head(**_: Any) -> None:
    """A worker on an older schema would fail every session it takes. Celery logs and ignores
    exceptions of signal handlers, but not SystemExit: the worker stops here, saying why."""
    db = Database.from_settings(settings, pool_size=1)
    try:
        require_schema_at_head(db, settings.database_url)
    except EnvironmentProblem as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None
    finally:
        db.dispose()


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    if settings.metrics_port is None:
        return
    try:
        metrics.serve(settings.metrics_port)
    except OSError as exc:
        print(f"error: cannot serve metrics on port {settings.metrics_port}: {exc.strerror}",
              file=sys.stderr, flush=True)
        raise SystemExit(3) from None


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    context.forget()


@worker_ready.connect
def _warm_up(**_: Any) -> None:
    context.get()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _dispose(**_: Any) -> None:
    context.close()


class AnalyzeTask(Task):  # type: ignore[misc]
    acks_late = True
    ignore_result = True

    def __call__(self, job_id: str, session_id: str) -> Any:
        # Every line logged while the task runs carries its ids; the thread's next task
        # starts without them.
        with logs.bound(job_id=job_id, session_id=session_id):
            return super().__call__(job_id, session_id)


@app.task(name=ANALYZE_SESSION, base=AnalyzeTask, bind=True)
def analyze_session_task(self: Task, job_id: str, session_id: str) -> str:
    try:
        return analyze_session(context.get(), job_id, session_id)
    except StatementError as exc:
        # A database error the service did not expect (a bug, not an outage). Its text holds
        # the statement's parameters (an analysis, personal data), so only the class goes to
        # Celery's log; the item's lease lapses and the reconciler retries it up to the cap.
        raise RuntimeError(f"database error: {type(exc.orig or exc).__name__}") from None
