"""A job's budget: its cap, what it has spent, and what its sessions in flight hold against it.

DESIGN "Spend control": a capped job never spends more than its cap. Every write of the budget
columns (`backfill_jobs.max_cost_usd`, `spent_usd`, `reserved_usd`, `pause_reason`, the
per-session estimate; `backfill_items.reserved_usd`, `unsettled_usd`) is here.

- **Reserve** (the scheduler, before it sends a session): a capped job's due pending items are
  taken in order while `spent + reserved + their estimates` stays within the cap, and each
  holds its estimate (`reserved_usd`) from then on; the job row is locked for it, so two
  schedulers never reserve past the cap between them. When the next session does not fit and
  nothing is in flight, the job pauses with `pause_reason = 'budget_exhausted'`.
- **Charge** (whoever writes a billed answer's outcome, in that transaction): the answer's
  price is added to the item's `unsettled_usd`. Only the item row is written, which that
  transaction already holds: a worker never locks the job row.
- **Settle** (the scheduler, every pass): items with an unsettled charge, and items that hold
  a reservation but are no longer queued or running (done, retried, taken back by the
  reconciler, cancelled, or given back by a paused job), give both to their job row. A
  reservation therefore ends however its item leaves flight, with one rule and one writer.

Why settle in the scheduler instead of in each worker's outcome transaction: the job row would
be a hot row that every worker of a job waits for, and operator actions that lock the job and
then its items (cancel) would deadlock against a claim transaction that holds an item and
waits for the job. Reading a job's spend (`spend_of`) adds what is not settled yet, so the
figures are exact at any moment; only the settling lags (one scheduler pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, text

from shared.state import items, jobs
from shared.state.items import Claim

BUDGET_EXHAUSTED = "budget_exhausted"
# Items settled per pass at most; the rest wait for the next pass.
SETTLE_LIMIT = 10_000

ZERO = Decimal(0)

_IN_FLIGHT = "('queued', 'running')"


@dataclass(frozen=True)
class SessionEstimate:
    """What one session of a job is expected to cost: base + per character of its stored
    transcript (what `preview` estimated per configuration; the largest of them)."""

    base_usd: Decimal
    usd_per_char: Decimal


@dataclass(frozen=True)
class Budget:
    """A job's budget as it stands (settled figures plus what is not settled yet)."""

    max_cost_usd: Decimal | None
    spent_usd: Decimal
    reserved_usd: Decimal
    estimate: SessionEstimate | None
    pause_reason: str | None


@dataclass(frozen=True)
class Reserved:
    """What one reservation pass did: the items now holding an estimate, and whether the
    next session did not fit with nothing in flight (the job is out of budget)."""

    session_ids: list[str]
    exhausted: bool = False
    next_usd: Decimal | None = None


# --------------------------------------------------------------------------- the cap

_SET_CAP = text("""
    UPDATE backfill_jobs
       SET max_cost_usd = :cap,
           estimate_base_usd = COALESCE(:base, estimate_base_usd),
           estimate_usd_per_char = COALESCE(:per_char, estimate_usd_per_char)
     WHERE id = :id
""")

_CLEAR_PAUSE_REASON = text("UPDATE backfill_jobs SET pause_reason = NULL WHERE id = :id")


def set_cap(tx: Connection, job_id: str, max_cost_usd: Decimal,
            estimate: SessionEstimate | None) -> None:
    """The job's cap (at create, or a new one on resume), and the per-session estimate its
    reservations hold (kept when None is given: a job keeps the estimate it was priced by)."""
    tx.execute(_SET_CAP, {
        "id": job_id, "cap": max_cost_usd,
        "base": None if estimate is None else estimate.base_usd,
        "per_char": None if estimate is None else estimate.usd_per_char,
    })


def clear_pause_reason(tx: Connection, job_id: str) -> None:
    """A resumed job is no longer paused for any reason."""
    tx.execute(_CLEAR_PAUSE_REASON, {"id": job_id})


_SET_PAUSE_REASON = text("""
    UPDATE backfill_jobs SET pause_reason = :word WHERE id = :id AND state = 'paused'
""")


def pause_exhausted(tx: Connection, job_id: str, reason: str) -> bool:
    """Pause a running job whose next session no longer fits its cap; False when it was not
    running any more."""
    if not jobs.pause_running(tx, job_id, reason):
        return False
    tx.execute(_SET_PAUSE_REASON, {"id": job_id, "word": BUDGET_EXHAUSTED})
    return True


# --------------------------------------------------------------------------- reading

_COLUMNS = ("id, max_cost_usd, spent_usd, reserved_usd, estimate_base_usd, "
            "estimate_usd_per_char, pause_reason")
_BUDGETS = text(f"SELECT {_COLUMNS} FROM backfill_jobs WHERE id = ANY(CAST(:ids AS text[]))")
_LOCK_RUNNING = text(f"""
    SELECT {_COLUMNS} FROM backfill_jobs WHERE id = :id AND state = 'running'
       FOR NO KEY UPDATE
""")

# What the job row does not hold yet: unsettled charges, and reservations of items that left
# flight (still counted in the row's reserved_usd until settled).
_UNSETTLED = text(f"""
    SELECT job_id,
           coalesce(sum(unsettled_usd), 0) AS unsettled,
           coalesce(sum(reserved_usd) FILTER (WHERE state NOT IN {_IN_FLIGHT}), 0) AS released
      FROM backfill_items
     WHERE job_id = ANY(CAST(:ids AS text[]))
       AND (reserved_usd IS NOT NULL OR unsettled_usd <> 0)
     GROUP BY job_id
""")


def _budget(row: Any, unsettled: Decimal = ZERO, released: Decimal = ZERO) -> Budget:
    estimate = None
    if row.estimate_base_usd is not None and row.estimate_usd_per_char is not None:
        estimate = SessionEstimate(row.estimate_base_usd, row.estimate_usd_per_char)
    return Budget(row.max_cost_usd, row.spent_usd + unsettled, row.reserved_usd - released,
                  estimate, row.pause_reason)


def spend_of(tx: Connection, job_ids: Sequence[str]) -> dict[str, Budget]:
    """Each job's budget as it stands now, settled or not (two queries for any number)."""
    ids = list(job_ids)
    pending = {row.job_id: (row.unsettled, row.released)
               for row in tx.execute(_UNSETTLED, {"ids": ids})}
    return {row.id: _budget(row, *pending.get(row.id, (ZERO, ZERO)))
            for row in tx.execute(_BUDGETS, {"ids": ids})}


# --------------------------------------------------------------------------- reserve

# The reservation of an item: the job's per-session estimate for its transcript, plus the
# margin. A deleted session has no transcript: its base only (it ends skipped at once). An
# item back in pending whose last reservation is not settled yet waits for the settling, so
# that reservation is never overwritten (and lost to the job's reserved_usd).
_CANDIDATES = text("""
    SELECT i.session_id,
           (CAST(:base AS numeric) + CAST(:per_char AS numeric)
              * coalesce(length(CAST(s.transcript AS text)), 0)) * CAST(:factor AS numeric)
             AS estimate
      FROM backfill_items AS i LEFT JOIN sessions AS s ON s.session_id = i.session_id
     WHERE i.job_id = :job_id AND i.state = 'pending' AND i.reserved_usd IS NULL
       AND (i.not_before IS NULL OR i.not_before <= clock_timestamp())
     ORDER BY i.session_id
     LIMIT :limit
       FOR UPDATE OF i SKIP LOCKED
""")

_QUEUE_RESERVED = text("""
    UPDATE backfill_items AS i
       SET state = 'queued', queued_at = clock_timestamp(), not_before = NULL,
           reserved_usd = r.amount
      FROM unnest(CAST(:session_ids AS text[]), CAST(:amounts AS numeric[]))
           AS r(session_id, amount)
     WHERE i.job_id = :job_id AND i.session_id = r.session_id AND i.state = 'pending'
       AND i.reserved_usd IS NULL
 RETURNING i.session_id, i.reserved_usd
""")

_CLAIM_RESERVED = text("""
    UPDATE backfill_items AS i
       SET state = 'running', attempts = i.attempts + 1, started_at = clock_timestamp(),
           queued_at = clock_timestamp(), not_before = NULL, reserved_usd = r.amount,
           lease_expires_at = clock_timestamp() + make_interval(secs => :lease_s)
      FROM unnest(CAST(:session_ids AS text[]), CAST(:amounts AS numeric[]))
           AS r(session_id, amount)
     WHERE i.job_id = :job_id AND i.session_id = r.session_id AND i.state = 'pending'
       AND i.reserved_usd IS NULL
 RETURNING i.session_id, i.attempts, i.started_at, i.reserved_usd
""")

_ADD_RESERVED = text("""
    UPDATE backfill_jobs SET reserved_usd = reserved_usd + :amount WHERE id = :id
""")


@dataclass(frozen=True)
class _Fit:
    session_ids: list[str]
    amounts: list[Decimal]
    exhausted: bool
    next_usd: Decimal | None


def _fit(tx: Connection, job_id: str, budget: Budget, limit: int, margin: float) -> _Fit:
    """The longest run of due pending items, in session order, whose estimates fit the room
    the cap leaves (the job row is locked by the caller)."""
    assert budget.max_cost_usd is not None and budget.estimate is not None
    rows = tx.execute(_CANDIDATES, {
        "job_id": job_id, "limit": limit, "base": budget.estimate.base_usd,
        "per_char": budget.estimate.usd_per_char, "factor": Decimal(1) + Decimal(str(margin)),
    }).all()
    room = budget.max_cost_usd - budget.spent_usd - budget.reserved_usd
    chosen: list[str] = []
    amounts: list[Decimal] = []
    for row in rows:
        if row.estimate > room:
            break
        chosen.append(row.session_id)
        amounts.append(row.estimate)
        room -= row.estimate
    blocked = rows[len(chosen)].estimate if len(chosen) < len(rows) else None
    # Out of budget only when nothing in flight can give room back by finishing.
    exhausted = not chosen and blocked is not None and budget.reserved_usd <= 0
    return _Fit(chosen, amounts, exhausted, blocked)


def _locked_if_running(tx: Connection, job_id: str) -> Budget | None:
    """The running job's budget, its row locked for this transaction (so reservations of two
    schedulers never pass the cap together); None when the job is not running any more."""
    row = tx.execute(_LOCK_RUNNING, {"id": job_id}).one_or_none()
    return None if row is None else _budget(row)


def _capped(budget: Budget) -> bool:
    return budget.max_cost_usd is not None and budget.estimate is not None


def _record_reserved(tx: Connection, job_id: str, amounts: Sequence[Decimal]) -> None:
    if amounts:
        tx.execute(_ADD_RESERVED, {"id": job_id, "amount": sum(amounts, ZERO)})


def queue_within_budget(tx: Connection, job_id: str, limit: int, margin: float) -> Reserved:
    """Up to `limit` due pending items → queued, as many as the cap has room for, each
    holding its estimate; an uncapped job's items are queued as `items.queue_pending` does."""
    budget = _locked_if_running(tx, job_id)
    if budget is None:
        return Reserved([])
    if not _capped(budget):
        return Reserved(items.queue_pending(tx, job_id, limit))
    fit = _fit(tx, job_id, budget, limit, margin)
    if not fit.session_ids:
        return Reserved([], fit.exhausted, fit.next_usd)
    rows = tx.execute(_QUEUE_RESERVED, {"job_id": job_id, "session_ids": fit.session_ids,
                                        "amounts": fit.amounts}).all()
    _record_reserved(tx, job_id, [row.reserved_usd for row in rows])
    return Reserved([row.session_id for row in rows])


def claim_within_budget(tx: Connection, job_id: str, limit: int, lease_s: float,
                        margin: float) -> tuple[list[Claim], Reserved]:
    """Batch mode: up to `limit` due pending items → running (attempt + 1, a lease) for the
    next batch, as many as the cap has room for, each holding its estimate."""
    budget = _locked_if_running(tx, job_id)
    if budget is None:
        return [], Reserved([])
    if not _capped(budget):
        return items.claim_for_batch(tx, job_id, limit, lease_s), Reserved([])
    fit = _fit(tx, job_id, budget, limit, margin)
    if not fit.session_ids:
        return [], Reserved([], fit.exhausted, fit.next_usd)
    rows = tx.execute(_CLAIM_RESERVED, {"job_id": job_id, "session_ids": fit.session_ids,
                                        "amounts": fit.amounts, "lease_s": lease_s}).all()
    _record_reserved(tx, job_id, [row.reserved_usd for row in rows])
    claims = [Claim(job_id, row.session_id, row.attempts, row.started_at) for row in rows]
    return claims, Reserved([claim.session_id for claim in claims])


# --------------------------------------------------------------------------- charge

_CHARGE = text("""
    UPDATE backfill_items SET unsettled_usd = unsettled_usd + :usd
     WHERE job_id = :job_id AND session_id = :session_id
""")


def charge(tx: Connection, claim: Claim, usd: float) -> None:
    """What one billed answer for this item cost, whatever its outcome: a superseded or
    duplicate answer was billed too."""
    if usd > 0:
        tx.execute(_CHARGE, {"job_id": claim.job_id, "session_id": claim.session_id,
                             "usd": Decimal(str(usd))})


# --------------------------------------------------------------------------- settle

_SETTLE = text(f"""
    WITH due AS (
        SELECT job_id, session_id, state, reserved_usd, unsettled_usd
          FROM backfill_items
         WHERE unsettled_usd <> 0 OR (reserved_usd IS NOT NULL AND state NOT IN {_IN_FLIGHT})
         LIMIT :limit
           FOR UPDATE SKIP LOCKED
    ), settled AS (
        UPDATE backfill_items AS i
           SET unsettled_usd = 0,
               reserved_usd = CASE WHEN due.state IN {_IN_FLIGHT} THEN i.reserved_usd END
          FROM due
         WHERE i.job_id = due.job_id AND i.session_id = due.session_id
     RETURNING due.job_id,
               CASE WHEN due.state IN {_IN_FLIGHT} THEN 0
                    ELSE coalesce(due.reserved_usd, 0) END AS released,
               due.unsettled_usd AS spent
    ), per_job AS (
        SELECT job_id, sum(released) AS released, sum(spent) AS spent
          FROM settled GROUP BY job_id
    )
    UPDATE backfill_jobs AS j
       SET reserved_usd = j.reserved_usd - per_job.released,
           spent_usd = j.spent_usd + per_job.spent
      FROM per_job
     WHERE j.id = per_job.job_id
 RETURNING j.id
""")


def settle(tx: Connection, limit: int = SETTLE_LIMIT) -> int:
    """Unsettled charges into their jobs' spend, and reservations of items no longer in
    flight back to their jobs; returns how many jobs changed. Items a transaction holds are
    left for the next pass (SKIP LOCKED)."""
    return len(tx.execute(_SETTLE, {"limit": limit}).all())
