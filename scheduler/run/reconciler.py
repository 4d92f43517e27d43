"""The reconciler, run every `BACKFILL_RECONCILE_INTERVAL_S`: how Postgres stays the source of
truth when processes or the broker fail.

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
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from celery import Celery

from shared.broker import BrokerSnapshot, broker_snapshot
from shared.db import Database
from shared.settings import Settings
from shared.state import items

log = logging.getLogger("backfill.scheduler")

# Lost-message candidates read per reconcile pass; the rest wait for the next pass.
MAX_SUSPECTS = 20_000


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
class Reconciler:
    db: Database
    celery: Celery
    settings: Settings

    def reconcile(self) -> ReconcileReport:
        report = ReconcileReport()
        self._expire_leases(report)
        report.lost_requeued = self.requeue_lost_messages()
        with self.db.transaction() as tx:
            report.overdue_requeued = items.requeue_overdue(tx, self.settings.queued_deadline_s)
        if report.changed():
            log.warning("reconciler: %s", report)
        return report

    def _expire_leases(self, report: ReconcileReport) -> None:
        with self.db.transaction() as tx:
            states = items.expire_leases(tx, self.settings.max_attempts)
        report.leases_requeued = states.count("pending")
        report.leases_failed = states.count("failed")
        report.leases_cancelled = states.count("cancelled")

    def requeue_lost_messages(self) -> int:
        """Queued items past the grace whose message the broker no longer holds → pending."""
        grace_s = self.settings.lost_message_grace_s
        with self.db.transaction() as tx:
            suspects = items.queued_longer_than(tx, grace_s, MAX_SUSPECTS)
        if not suspects:
            return 0
        # Read after the suspects: a message still on its way to a worker is then visible.
        snapshot = self._broker_snapshot()
        if snapshot is None:
            return 0
        taken_since = time.time() - grace_s
        lost = [item for item in suspects
                if not snapshot.holds((item.job_id, item.session_id), taken_since)]
        if not lost:
            return 0
        with self.db.transaction() as tx:
            return items.requeue_lost(tx, lost)

    def _broker_snapshot(self) -> BrokerSnapshot | None:
        try:
            return broker_snapshot(self.celery, self.settings.queue_name)
        except Exception as exc:  # the broker is away: nothing is declared lost this pass
            log.warning("cannot read the broker to find lost messages: %s", type(exc).__name__)
            return None
