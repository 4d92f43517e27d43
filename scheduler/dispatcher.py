"""Dispatcher: keeps at most a window of messages per job in the broker, sends after commit.

Also the reconciler, run every `BACKFILL_RECONCILE_INTERVAL_S`, which is how Postgres stays the
source of truth when processes or the broker fail:

- **Expired leases.** A running item's lease is renewed by its worker's heartbeat; when it
  lapses (the worker was killed, or could not write its outcome because Postgres was away) the
  item goes back to `pending`, or ends `failed` with `lease_expired` once its attempts reach
  `BACKFILL_MAX_ATTEMPTS`.
- **Lost messages.** A `queued` item older than `BACKFILL_LOST_MESSAGE_GRACE_S` whose message
  is neither waiting in the Redis queue nor held unacknowledged by a worker that took it within
  that grace goes back to `pending` (a flushed broker, a worker killed before its claim, a
  claim that failed because Postgres was away). Reading the broker keeps this exact: items
  whose messages merely wait in a long queue are left alone, so no storm of duplicates. Lost
  messages do not count as attempts: the item never ran.
- **Overdue queued items.** Without a broker that can be read, a `queued` item older than
  `BACKFILL_QUEUED_DEADLINE_S` goes back to `pending`.

A duplicate message is harmless for correctness (the claim is a conditional UPDATE); the
checks above only keep duplicates rare, because each one costs an LLM call.
Every job whose items are all terminal is marked completed. Batch-mode jobs (`options.mode`
= `batch`) are not dispatched here: each pass also runs their Message Batches cycle
(scheduler/batches.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

from celery import Celery
from sqlalchemy import CursorResult, text

from scheduler.batches import BatchCycle
from shared.celery_app import ANALYZE_SESSION, BrokerSnapshot, broker_snapshot
from shared.db import Database
from shared.settings import Settings

log = logging.getLogger("backfill.scheduler")

# Lost-message candidates read per reconcile pass; the rest wait for the next pass.
MAX_SUSPECTS = 20_000

# Batch-mode jobs are not dispatched to workers: scheduler/batches.py sends them.
_RUNNING_JOBS = text("""
    SELECT id FROM backfill_jobs
     WHERE state = 'running' AND NOT options @> '{"mode": "batch"}'::jsonb
     ORDER BY created_at
""")

_IN_FLIGHT = text("""
    SELECT count(*) FROM backfill_items WHERE job_id = :job_id AND state IN ('queued', 'running')
""")

_CLAIM_PENDING = text("""
    UPDATE backfill_items AS i
       SET state = 'queued', queued_at = clock_timestamp(), not_before = NULL
      FROM (SELECT job_id, session_id FROM backfill_items
             WHERE job_id = :job_id AND state = 'pending'
               AND (not_before IS NULL OR not_before <= clock_timestamp())
             ORDER BY session_id
             LIMIT :limit
               FOR UPDATE SKIP LOCKED) AS next
     WHERE i.job_id = next.job_id AND i.session_id = next.session_id
 RETURNING i.session_id
""")

_UNQUEUE = text("""
    UPDATE backfill_items SET state = 'pending', queued_at = NULL
     WHERE job_id = :job_id AND session_id = ANY(:session_ids) AND state = 'queued'
""")

# A cancelled job's stranded item ends cancelled; otherwise it is retried up to the cap.
_EXPIRED_LEASES = text("""
    UPDATE backfill_items AS i
       SET state = CASE WHEN j.state = 'cancelled' THEN 'cancelled'
                        WHEN i.attempts >= :cap THEN 'failed' ELSE 'pending' END,
           error_kind = CASE WHEN j.state = 'cancelled' THEN i.error_kind
                             ELSE 'lease_expired' END,
           error = CASE WHEN j.state = 'cancelled' THEN i.error
                        ELSE 'the worker running this item stopped answering (lease expired)'
                   END,
           finished_at = CASE WHEN j.state = 'cancelled' OR i.attempts >= :cap
                              THEN clock_timestamp() END,
           lease_expires_at = NULL, queued_at = NULL
      FROM backfill_jobs AS j
     WHERE j.id = i.job_id AND i.state = 'running' AND i.lease_expires_at < clock_timestamp()
 RETURNING i.state
""")

_QUEUED_SUSPECTS = text("""
    SELECT i.job_id, i.session_id, i.queued_at
      FROM backfill_items AS i JOIN backfill_jobs AS j ON j.id = i.job_id
     WHERE j.state IN ('running', 'paused') AND i.state = 'queued'
       AND i.queued_at < clock_timestamp() - make_interval(secs => :grace_s)
     LIMIT :limit
""")

# Fenced on queued_at: an item sent again since it was read is not touched.
_REQUEUE_LOST = text("""
    UPDATE backfill_items AS i SET state = 'pending', queued_at = NULL
      FROM unnest(CAST(:job_ids AS text[]), CAST(:session_ids AS text[]),
                  CAST(:queued_ats AS timestamptz[])) AS l(job_id, session_id, queued_at)
     WHERE i.job_id = l.job_id AND i.session_id = l.session_id
       AND i.state = 'queued' AND i.queued_at = l.queued_at
""")

_OVERDUE_QUEUED = text("""
    UPDATE backfill_items SET state = 'pending', queued_at = NULL
     WHERE state = 'queued'
       AND queued_at < clock_timestamp() - make_interval(secs => :deadline_s)
""")

_COMPLETE_JOBS = text("""
    UPDATE backfill_jobs AS j SET state = 'completed', finished_at = clock_timestamp()
     WHERE j.state = 'running'
       AND NOT EXISTS (SELECT 1 FROM backfill_items AS i
                        WHERE i.job_id = j.id AND i.state IN ('pending', 'queued', 'running'))
 RETURNING j.id
""")


@dataclass
class ReconcileReport:
    """What one reconcile pass changed (logged when anything did)."""

    leases_requeued: int = 0
    leases_failed: int = 0
    leases_cancelled: int = 0
    lost_requeued: int = 0
    overdue_requeued: int = 0

    def changed(self) -> bool:
        return any(vars(self).values())


@dataclass
class Dispatcher:
    db: Database
    celery: Celery
    settings: Settings
    _next_reconcile: float = field(default=0.0, init=False, repr=False)
    batches: BatchCycle = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.batches = BatchCycle(self.db, self.settings)

    def tick(self) -> int:
        """One pass over every running job; returns how many messages were sent (plus batch
        requests submitted and results written, so a busy batch cycle does not idle)."""
        self.reconcile_if_due()
        sent = 0
        for job_id in self._running_jobs():
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
            in_flight = int(tx.execute(_IN_FLIGHT, {"job_id": job_id}).scalar_one())
            room = self.settings.dispatch_window - in_flight
            if room <= 0:
                return 0
            rows = tx.execute(_CLAIM_PENDING, {"job_id": job_id, "limit": room})
            session_ids = [row.session_id for row in rows]
        # Published only after the commit, so a worker always finds the queued row.
        return self._publish(job_id, session_ids)

    def _publish(self, job_id: str, session_ids: list[str]) -> int:
        for index, session_id in enumerate(session_ids):
            try:
                self.celery.send_task(
                    ANALYZE_SESSION, args=[job_id, session_id], queue=self.settings.queue_name
                )
            except Exception:
                log.exception("broker refused a message; unsent items go back to pending")
                self._unqueue(job_id, session_ids[index:])
                return index
        return len(session_ids)

    def _unqueue(self, job_id: str, session_ids: list[str]) -> None:
        with self.db.transaction() as tx:
            tx.execute(_UNQUEUE, {"job_id": job_id, "session_ids": session_ids})

    def reconcile_if_due(self) -> ReconcileReport | None:
        """Reconcile at most every reconcile_interval_s; a failed pass is retried next tick."""
        if time.monotonic() < self._next_reconcile:
            return None
        report = self.reconcile()
        self._next_reconcile = time.monotonic() + self.settings.reconcile_interval_s
        return report

    def reconcile(self) -> ReconcileReport:
        report = ReconcileReport()
        self._expire_leases(report)
        report.lost_requeued = self.requeue_lost_messages()
        with self.db.transaction() as tx:
            report.overdue_requeued = _rowcount(tx.execute(
                _OVERDUE_QUEUED, {"deadline_s": self.settings.queued_deadline_s}))
        if report.changed():
            log.warning("reconciler: %s", report)
        return report

    def _expire_leases(self, report: ReconcileReport) -> None:
        with self.db.transaction() as tx:
            states = [row.state for row in tx.execute(
                _EXPIRED_LEASES, {"cap": self.settings.max_attempts})]
        report.leases_requeued = states.count("pending")
        report.leases_failed = states.count("failed")
        report.leases_cancelled = states.count("cancelled")

    def requeue_lost_messages(self) -> int:
        """Queued items past the grace whose message the broker no longer holds → pending."""
        grace_s = self.settings.lost_message_grace_s
        with self.db.transaction() as tx:
            suspects = tx.execute(
                _QUEUED_SUSPECTS, {"grace_s": grace_s, "limit": MAX_SUSPECTS}).all()
        if not suspects:
            return 0
        # Read after the suspects: a message still on its way to a worker is then visible.
        snapshot = self._broker_snapshot()
        if snapshot is None:
            return 0
        taken_since = time.time() - grace_s
        lost = [row for row in suspects
                if not snapshot.holds((row.job_id, row.session_id), taken_since)]
        if not lost:
            return 0
        with self.db.transaction() as tx:
            return _rowcount(tx.execute(_REQUEUE_LOST, {
                "job_ids": [row.job_id for row in lost],
                "session_ids": [row.session_id for row in lost],
                "queued_ats": [row.queued_at for row in lost],
            }))

    def _broker_snapshot(self) -> BrokerSnapshot | None:
        try:
            return broker_snapshot(self.celery, self.settings.queue_name)
        except Exception as exc:  # the broker is away: nothing is declared lost this pass
            log.warning("cannot read the broker to find lost messages: %s", type(exc).__name__)
            return None

    def complete_finished_jobs(self) -> list[str]:
        with self.db.transaction() as tx:
            return [row.id for row in tx.execute(_COMPLETE_JOBS)]

    def _running_jobs(self) -> list[str]:
        with self.db.transaction() as tx:
            return [row.id for row in tx.execute(_RUNNING_JOBS)]


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount
