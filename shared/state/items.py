"""An item's life: `pending → queued → running → succeeded | failed | skipped | cancelled`.

Every change is conditional on the state (and, for a claim, the attempt) it expects: the claim
is a conditional `UPDATE … RETURNING`, and every later write of that claim is fenced on its
attempt number, so a second delivery of a message, or a run whose lease the reconciler took
back, changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, Select, insert, literal, select, text
from sqlalchemy.sql.expression import TextClause

from shared.models import BackfillItem
from shared.vocabulary import LEASE_EXPIRED

# Error messages are stored with the item and shown to operators; this bounds the column.
MAX_ERROR_CHARS = 2000


@dataclass(frozen=True)
class Claim:
    """One attempt at one item, held by whoever claimed it; every write of it is fenced on
    `attempt`."""

    job_id: str
    session_id: str
    attempt: int
    started_at: datetime


def clip(message: str | None, limit: int = MAX_ERROR_CHARS) -> str | None:
    return None if message is None else message[:limit]


def _rowcount(tx: Connection, statement: TextClause, params: dict[str, Any]) -> int:
    return cast(CursorResult[Any], tx.execute(statement, params)).rowcount


# --------------------------------------------------------------------------- expand


def expand(tx: Connection, job_id: str, sessions: Select[Any], timeout_ms: int) -> int:
    """One item per selected session, in one INSERT … SELECT: the ids never leave Postgres."""
    # Expanding millions of sessions legitimately outlasts the per-statement default.
    tx.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(timeout_ms)})
    matches = sessions.subquery()
    source = select(literal(job_id).label("job_id"), matches.c.session_id)
    result = tx.execute(
        insert(BackfillItem).from_select(["job_id", "session_id"], source),
        execution_options={"preserve_rowcount": True},  # else SQLAlchemy reports -1
    )
    return int(cast(CursorResult[Any], result).rowcount)


# --------------------------------------------------------------------------- dispatch

_IN_FLIGHT = text("""
    SELECT count(*) FROM backfill_items WHERE job_id = :job_id AND state IN ('queued', 'running')
""")

_QUEUE_PENDING = text("""
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


def in_flight(tx: Connection, job_id: str) -> int:
    """Items of the job whose message is in the broker or in a worker's hands."""
    return int(tx.execute(_IN_FLIGHT, {"job_id": job_id}).scalar_one())


def queue_pending(tx: Connection, job_id: str, limit: int) -> list[str]:
    """Up to `limit` due pending items → queued; their messages are sent after the commit."""
    rows = tx.execute(_QUEUE_PENDING, {"job_id": job_id, "limit": limit})
    return [row.session_id for row in rows]


def unqueue(tx: Connection, job_id: str, session_ids: Sequence[str]) -> None:
    """Queued items whose message the broker refused go back to pending."""
    tx.execute(_UNQUEUE, {"job_id": job_id, "session_ids": list(session_ids)})


# --------------------------------------------------------------------------- claim

_CLAIM = text("""
    UPDATE backfill_items AS i
       SET state = 'running', attempts = i.attempts + 1, started_at = clock_timestamp(),
           lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM backfill_jobs AS j
     WHERE i.job_id = :job_id AND i.session_id = :session_id AND i.state = 'queued'
       AND j.id = i.job_id AND j.state = 'running'
 RETURNING i.attempts, i.started_at
""")

_RELEASE_UNCLAIMABLE = text("""
    UPDATE backfill_items AS i
       SET state = CASE j.state WHEN 'cancelled' THEN 'cancelled' ELSE 'pending' END,
           finished_at = CASE j.state WHEN 'cancelled' THEN clock_timestamp() END
      FROM backfill_jobs AS j
     WHERE i.job_id = :job_id AND i.session_id = :session_id AND i.state = 'queued'
       AND j.id = i.job_id AND j.state IN ('paused', 'cancelled')
""")

_RENEW_LEASES = text("""
    UPDATE backfill_items AS i
       SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM unnest(CAST(:job_ids AS text[]), CAST(:session_ids AS text[]),
                  CAST(:attempts AS integer[])) AS c(job_id, session_id, attempt)
     WHERE i.job_id = c.job_id AND i.session_id = c.session_id
       AND i.state = 'running' AND i.attempts = c.attempt
""")


def claim(tx: Connection, job_id: str, session_id: str, lease_s: float) -> Claim | None:
    """queued → running, attempt + 1, with a lease; None when the item is not ours to run (a
    second delivery, a paused or cancelled job)."""
    row = tx.execute(
        _CLAIM, {"job_id": job_id, "session_id": session_id, "lease_s": lease_s}
    ).one_or_none()
    if row is None:
        return None
    return Claim(job_id, session_id, attempt=row.attempts, started_at=row.started_at)


def release_unclaimable(tx: Connection, job_id: str, session_id: str) -> None:
    """A message for a paused job goes back to pending (resume re-sends it); cancelled ends."""
    tx.execute(_RELEASE_UNCLAIMABLE, {"job_id": job_id, "session_id": session_id})


def renew_leases(tx: Connection, claims: Sequence[Claim], lease_s: float) -> int:
    """Extend the leases of claims still ours (fenced on the attempt, like every write)."""
    if not claims:
        return 0
    return _rowcount(tx, _RENEW_LEASES, {
        "lease_s": lease_s, "job_ids": [c.job_id for c in claims],
        "session_ids": [c.session_id for c in claims], "attempts": [c.attempt for c in claims],
    })


# --------------------------------------------------------------------------- outcomes

_FINISH = text("""
    UPDATE backfill_items
       SET state = :state, error_kind = :error_kind, error = :error,
           finished_at = clock_timestamp(), lease_expires_at = NULL
     WHERE job_id = :job_id AND session_id = :session_id
       AND state = 'running' AND attempts = :attempt
 RETURNING 1
""")

_RETRY_LATER = text("""
    UPDATE backfill_items
       SET state = 'pending', error_kind = :error_kind, error = :error,
           not_before = clock_timestamp() + make_interval(secs => :delay_s),
           lease_expires_at = NULL, queued_at = NULL
     WHERE job_id = :job_id AND session_id = :session_id
       AND state = 'running' AND attempts = :attempt
""")

_GIVE_BACK_UNCOUNTED = text("""
    UPDATE backfill_items
       SET state = 'pending', attempts = attempts - 1, error_kind = :error_kind, error = :error,
           lease_expires_at = NULL, queued_at = NULL
     WHERE job_id = :job_id AND session_id = :session_id
       AND state = 'running' AND attempts = :attempt
""")


def _claim_params(claim: Claim) -> dict[str, Any]:
    return {"job_id": claim.job_id, "session_id": claim.session_id, "attempt": claim.attempt}


def finish(tx: Connection, claim: Claim, state: str, error_kind: str | None = None,
           error: str | None = None) -> bool:
    """running → a terminal state. False when our claim was superseded (the lease expired and
    the item was sent again)."""
    params = _claim_params(claim) | {"state": state, "error_kind": error_kind,
                                     "error": clip(error)}
    return tx.execute(_FINISH, params).one_or_none() is not None


def retry_later(tx: Connection, claim: Claim, error_kind: str, error: str,
                delay_s: float) -> None:
    """running → pending, due again after `delay_s` (the attempt stays counted)."""
    tx.execute(_RETRY_LATER, _claim_params(claim) | {
        "error_kind": error_kind, "error": clip(error), "delay_s": delay_s})


def give_back_uncounted(tx: Connection, claim: Claim, error_kind: str, error: str) -> None:
    """running → pending without charging the attempt: the job was paused for a reason that is
    not this session's (a bad key, billing), so resuming runs it again from where it was."""
    tx.execute(_GIVE_BACK_UNCOUNTED, _claim_params(claim) | {
        "error_kind": error_kind, "error": clip(error)})


# --------------------------------------------------------------------------- reconciler

# A cancelled job's stranded item ends cancelled; otherwise it is retried up to the cap.
_EXPIRE_LEASES = text("""
    UPDATE backfill_items AS i
       SET state = CASE WHEN j.state = 'cancelled' THEN 'cancelled'
                        WHEN i.attempts >= :cap THEN 'failed' ELSE 'pending' END,
           error_kind = CASE WHEN j.state = 'cancelled' THEN i.error_kind ELSE :expired END,
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

_REQUEUE_OVERDUE = text("""
    UPDATE backfill_items SET state = 'pending', queued_at = NULL
     WHERE state = 'queued'
       AND queued_at < clock_timestamp() - make_interval(secs => :deadline_s)
""")


@dataclass(frozen=True)
class QueuedItem:
    job_id: str
    session_id: str
    queued_at: datetime


def expire_leases(tx: Connection, attempt_cap: int) -> list[str]:
    """Running items whose lease lapsed (a dead worker) → pending, or failed at the cap, or
    cancelled for a cancelled job; returns the new state of each."""
    rows = tx.execute(_EXPIRE_LEASES, {"cap": attempt_cap, "expired": LEASE_EXPIRED})
    return [row.state for row in rows]


def queued_longer_than(tx: Connection, grace_s: float, limit: int) -> list[QueuedItem]:
    """Queued items of live jobs sent more than `grace_s` ago: candidates for a lost message."""
    rows = tx.execute(_QUEUED_SUSPECTS, {"grace_s": grace_s, "limit": limit})
    return [QueuedItem(row.job_id, row.session_id, row.queued_at) for row in rows]


def requeue_lost(tx: Connection, lost: Sequence[QueuedItem]) -> int:
    """Queued items whose message is gone → pending (not an attempt: the item never ran)."""
    if not lost:
        return 0
    return _rowcount(tx, _REQUEUE_LOST, {
        "job_ids": [item.job_id for item in lost],
        "session_ids": [item.session_id for item in lost],
        "queued_ats": [item.queued_at for item in lost],
    })


def requeue_overdue(tx: Connection, deadline_s: float) -> int:
    """Without a broker that can be read: queued items older than the deadline → pending."""
    return _rowcount(tx, _REQUEUE_OVERDUE, {"deadline_s": deadline_s})


# --------------------------------------------------------------------------- operator

_FAILED_MATCHING = """
     WHERE job_id = :job_id AND state = 'failed'
       AND (CAST(:kinds AS text[]) IS NULL OR error_kind = ANY(CAST(:kinds AS text[])))
       AND (CAST(:sessions AS text[]) IS NULL OR session_id = ANY(CAST(:sessions AS text[])))
"""
_REQUEUE_FAILED = text("""
    UPDATE backfill_items
       SET state = 'pending', attempts = 0, error_kind = NULL, error = NULL,
           finished_at = NULL, not_before = NULL
""" + _FAILED_MATCHING)
_COUNT_FAILED = text("SELECT count(*) FROM backfill_items" + _FAILED_MATCHING)

_CANCEL_OPEN = text("""
    UPDATE backfill_items SET state = 'cancelled', finished_at = clock_timestamp()
     WHERE job_id = :job_id AND state IN ('pending', 'queued')
""")


def _failed_params(job_id: str, error_kinds: Sequence[str] | None,
                   session_ids: Sequence[str] | None) -> dict[str, Any]:
    return {"job_id": job_id, "kinds": list(error_kinds) if error_kinds else None,
            "sessions": list(session_ids) if session_ids else None}


def requeue_failed(tx: Connection, job_id: str, error_kinds: Sequence[str] | None = None,
                   session_ids: Sequence[str] | None = None) -> int:
    """Failed items (all, or those of the kinds/sessions given) → pending with fresh attempts."""
    return _rowcount(tx, _REQUEUE_FAILED, _failed_params(job_id, error_kinds, session_ids))


def count_failed(tx: Connection, job_id: str, error_kinds: Sequence[str] | None = None,
                 session_ids: Sequence[str] | None = None) -> int:
    """What `requeue_failed` would move (a dry run)."""
    params = _failed_params(job_id, error_kinds, session_ids)
    return int(tx.execute(_COUNT_FAILED, params).scalar_one())


def cancel_open(tx: Connection, job_id: str) -> int:
    """Pending and queued items → cancelled; running ones finish their current call."""
    return _rowcount(tx, _CANCEL_OPEN, {"job_id": job_id})


# --------------------------------------------------------------------------- batch mode

_CLAIM_FOR_BATCH = text("""
    UPDATE backfill_items AS i
       SET state = 'running', attempts = i.attempts + 1, started_at = clock_timestamp(),
           queued_at = clock_timestamp(), not_before = NULL,
           lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM (SELECT job_id, session_id FROM backfill_items
             WHERE job_id = :job_id AND state = 'pending'
               AND (not_before IS NULL OR not_before <= clock_timestamp())
             ORDER BY session_id
             LIMIT :limit
               FOR UPDATE SKIP LOCKED) AS next, backfill_jobs AS j
     WHERE i.job_id = next.job_id AND i.session_id = next.session_id
       AND j.id = i.job_id AND j.state = 'running'
 RETURNING i.session_id, i.attempts, i.started_at
""")

# Fenced on the attempt, like every write of a claim.
_HOLD_FOR_BATCH = text("""
    UPDATE backfill_items AS i
       SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM unnest(CAST(:session_ids AS text[]), CAST(:attempts AS integer[]))
           AS c(session_id, attempt)
     WHERE i.job_id = :job_id AND i.session_id = c.session_id
       AND i.state = 'running' AND i.attempts = c.attempt
""")

_RENEW_RUNNING = text("""
    UPDATE backfill_items
       SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
     WHERE job_id = :job_id AND state = 'running'
""")

_RUNNING_CLAIMS = text("""
    SELECT session_id, attempts, started_at FROM backfill_items
     WHERE job_id = :job_id AND state = 'running'
""")


def claim_for_batch(tx: Connection, job_id: str, limit: int, lease_s: float) -> list[Claim]:
    """Up to `limit` due pending items → running (attempt + 1) for the next batch."""
    rows = tx.execute(_CLAIM_FOR_BATCH, {"job_id": job_id, "limit": limit, "lease_s": lease_s})
    return [Claim(job_id, row.session_id, row.attempts, row.started_at) for row in rows]


def hold_for_batch(tx: Connection, job_id: str, claims: Sequence[Claim], lease_s: float) -> None:
    """The long batch lease for claims now inside a submitted batch."""
    tx.execute(_HOLD_FOR_BATCH, {
        "job_id": job_id, "lease_s": lease_s,
        "session_ids": [c.session_id for c in claims], "attempts": [c.attempt for c in claims],
    })


def renew_running(tx: Connection, job_id: str, lease_s: float) -> None:
    """While the provider still works on a job's batches, its running items stay ours."""
    tx.execute(_RENEW_RUNNING, {"job_id": job_id, "lease_s": lease_s})


def running_claims(tx: Connection, job_id: str) -> list[Claim]:
    """The claims a job holds now (what a batch's results are matched against)."""
    rows = tx.execute(_RUNNING_CLAIMS, {"job_id": job_id})
    return [Claim(job_id, row.session_id, row.attempts, row.started_at) for row in rows]
