"""The worker's SQL: claim an item, renew its lease, release a message of a paused job.

Every state change is conditional on the state we expect, so a second delivery of the same
message, or a run whose lease was taken over, changes nothing.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, CursorResult, text

# The write path (finish, run history, session update, retry, pause) is shared with the
# scheduler's batch cycle, so it lives in shared/results.py; the worker's types come from there.
from shared.results import Claim, SessionData

__all__ = ["Claim", "SessionData", "claim_item", "release_unclaimable", "renew_leases"]


_CLAIM = text("""
    UPDATE backfill_items AS i
       SET state = 'running', attempts = i.attempts + 1, started_at = clock_timestamp(),
           lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM backfill_jobs AS j
     WHERE i.job_id = :job_id AND i.session_id = :session_id AND i.state = 'queued'
       AND j.id = i.job_id AND j.state = 'running'
 RETURNING i.attempts, i.started_at
""")


def claim_item(db: Connection, job_id: str, session_id: str, lease_s: float) -> Claim | None:
    row = db.execute(
        _CLAIM, {"job_id": job_id, "session_id": session_id, "lease_s": lease_s}
    ).one_or_none()
    if row is None:
        return None
    return Claim(job_id, session_id, attempt=row.attempts, started_at=row.started_at)


_RENEW_LEASES = text("""
    UPDATE backfill_items AS i
       SET lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM unnest(CAST(:job_ids AS text[]), CAST(:session_ids AS text[]),
                  CAST(:attempts AS integer[])) AS c(job_id, session_id, attempt)
     WHERE i.job_id = c.job_id AND i.session_id = c.session_id
       AND i.state = 'running' AND i.attempts = c.attempt
""")


def renew_leases(db: Connection, claims: list[Claim], lease_s: float) -> int:
    """Extend the leases of claims still ours (fenced on the attempt, like every write)."""
    if not claims:
        return 0
    result = cast(CursorResult[Any], db.execute(_RENEW_LEASES, {
        "lease_s": lease_s, "job_ids": [c.job_id for c in claims],
        "session_ids": [c.session_id for c in claims], "attempts": [c.attempt for c in claims],
    }))
    return result.rowcount


_RELEASE_UNCLAIMABLE = text("""
    UPDATE backfill_items AS i
       SET state = CASE j.state WHEN 'cancelled' THEN 'cancelled' ELSE 'pending' END,
           finished_at = CASE j.state WHEN 'cancelled' THEN clock_timestamp() END
      FROM backfill_jobs AS j
     WHERE i.job_id = :job_id AND i.session_id = :session_id AND i.state = 'queued'
       AND j.id = i.job_id AND j.state IN ('paused', 'cancelled')
""")


def release_unclaimable(db: Connection, job_id: str, session_id: str) -> None:
    """A message for a paused job goes back to pending (resume re-sends it); cancelled ends."""
    db.execute(_RELEASE_UNCLAIMABLE, {"job_id": job_id, "session_id": session_id})
