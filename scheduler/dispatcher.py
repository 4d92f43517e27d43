"""Dispatcher: keeps at most a window of messages per job in the broker, sends after commit.

Also the reconciler: items whose lease expired (worker died) or whose message was lost go back
to pending; every job whose items are all terminal is marked completed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import text

from shared.celery_app import ANALYZE_SESSION
from shared.db import Database
from shared.settings import Settings

log = logging.getLogger("backfill.scheduler")

_RUNNING_JOBS = text("SELECT id FROM backfill_jobs WHERE state = 'running' ORDER BY created_at")

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

_EXPIRED_LEASES = text("""
    UPDATE backfill_items
       SET state = CASE WHEN attempts >= :cap THEN 'failed' ELSE 'pending' END,
           error_kind = 'lease_expired',
           error = 'the worker running this item stopped answering (lease expired)',
           finished_at = CASE WHEN attempts >= :cap THEN clock_timestamp() END,
           lease_expires_at = NULL, queued_at = NULL
     WHERE state = 'running' AND lease_expires_at < clock_timestamp()
""")

_LOST_MESSAGES = text("""
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
class Dispatcher:
    db: Database
    celery: Celery
    settings: Settings

    def tick(self) -> int:
        """One pass over every running job; returns how many messages were sent."""
        self.reconcile()
        sent = 0
        for job_id in self._running_jobs():
            sent += self.dispatch_job(job_id)
        self.complete_finished_jobs()
        return sent

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sent = self.tick()
            except Exception:  # a failed pass (DB restart, broker blip) is retried next pass
                log.exception("dispatch pass failed; retrying")
                sent = 0
            if sent == 0:
                stop.wait(self.settings.dispatch_interval_s)

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

    def reconcile(self) -> None:
        with self.db.transaction() as tx:
            tx.execute(_EXPIRED_LEASES, {"cap": self.settings.max_attempts})
            tx.execute(_LOST_MESSAGES, {"deadline_s": self.settings.queued_deadline_s})

    def complete_finished_jobs(self) -> list[str]:
        with self.db.transaction() as tx:
            return [row.id for row in tx.execute(_COMPLETE_JOBS)]

    def _running_jobs(self) -> list[str]:
        with self.db.transaction() as tx:
            return [row.id for row in tx.execute(_RUNNING_JOBS)]
