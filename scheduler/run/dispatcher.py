"""Dispatcher: keeps at most a window of messages per job in the broker, sends after commit.

One pass (`tick`) over every running live job: queue up to the window's room of due pending
items (a capped job: as many as its budget has room for, each reserving its estimate), commit,
then publish one `backfill.analyze_session(job_id, session_id)` each. Around it: the
reconciler when due (`scheduler.run.reconciler`), settling spend and released reservations
(`scheduler.run.budget`), the Message Batches cycle for batch-mode jobs
(`scheduler.run.batches`), and completing every job whose items are all terminal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from celery import Celery

from scheduler.run import budget as spend
from scheduler.run.batches import BatchCycle
from scheduler.run.reconciler import Reconciler, ReconcileReport
from shared import metrics
from shared.broker import ANALYZE_SESSION
from shared.db import Database
from shared.settings import Settings
from shared.state import budget, items, jobs
from shared.vocabulary import LIVE

log = logging.getLogger("backfill.scheduler")


@dataclass
class Dispatcher:
    db: Database
    celery: Celery
    settings: Settings
    _next_reconcile: float = field(default=0.0, init=False, repr=False)
    reconciler: Reconciler = field(init=False, repr=False)
    batches: BatchCycle = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(self.db, self.celery, self.settings)
        self.batches = BatchCycle(self.db, self.settings)

    def tick(self) -> int:
        """One pass over every running job; returns how many messages were sent (plus batch
        requests submitted and results written, so a busy batch cycle does not idle)."""
        self.reconcile_if_due()
        # Before reserving: what finished or was taken back gives its reservation back.
        spend.settle(self.db)
        sent = 0
        for job_id in self._running_live_jobs():
            sent += self.dispatch_job(job_id)
        sent += self.batch_step()
        self.complete_finished_jobs()
        return sent

    def batch_step(self) -> int:
        """The Message Batches cycle; its failure (the API away, a bad key) must not stop the
        live dispatch, so it is logged and tried again next pass."""
        try:
            return self.batches.step()
        except Exception:
            log.exception("batch cycle failed; retrying next pass")
            return 0

    def dispatch_job(self, job_id: str) -> int:
        with self.db.transaction() as tx:
            room = self.settings.dispatch_window - items.in_flight(tx, job_id)
            if room <= 0:
                return 0
            reserved = budget.queue_within_budget(tx, job_id, room, self.settings.budget_margin)
            if reserved.exhausted:
                spend.exhausted(tx, job_id, reserved.next_usd)
        # Published only after the commit, so a worker always finds the queued row.
        return self._publish(job_id, reserved.session_ids)

    def _publish(self, job_id: str, session_ids: list[str]) -> int:
        for index, session_id in enumerate(session_ids):
            try:
                self.celery.send_task(
                    ANALYZE_SESSION, args=[job_id, session_id], queue=self.settings.queue_name
                )
            except Exception:
                log.exception("broker refused a message; unsent items go back to pending")
                with self.db.transaction() as tx:
                    items.unqueue(tx, job_id, session_ids[index:])
                metrics.DISPATCHED.inc(index)
                return index
        metrics.DISPATCHED.inc(len(session_ids))
        return len(session_ids)

    def reconcile_if_due(self) -> ReconcileReport | None:
        """Reconcile at most every reconcile_interval_s; a failed pass is retried next tick."""
        if time.monotonic() < self._next_reconcile:
            return None
        report = self.reconcile()
        self._next_reconcile = time.monotonic() + self.settings.reconcile_interval_s
        return report

    def reconcile(self) -> ReconcileReport:
        return self.reconciler.reconcile()

    def complete_finished_jobs(self) -> list[str]:
        with self.db.transaction() as tx:
            return jobs.complete_finished(tx)

    def _running_live_jobs(self) -> list[str]:
        with self.db.transaction() as tx:
            return jobs.running_jobs(tx, LIVE)
