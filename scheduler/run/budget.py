"""The scheduler's side of spend control (`shared.state.budget` holds the rules): settle every
pass, and pause a job whose next session no longer fits its cap, with its audit event.

The dispatcher (live jobs) and the batch cycle (batch jobs) reserve before they send; both
call `exhausted` with what their reservation pass found.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from sqlalchemy import Connection

from scheduler.jobs import audit
from shared.db import Database
from shared.state import budget, jobs

log = logging.getLogger("backfill.scheduler")

# Who paused the job, in the audit trail (operators are `os:<user>` or `api_key:<id>`).
SCHEDULER_ACTOR = "system:scheduler"


def settle(db: Database) -> None:
    """Charges and released reservations into their jobs (see `shared.state.budget`)."""
    with db.transaction() as tx:
        budget.settle(tx)


def _usd(amount: Decimal | None) -> str:
    return "n/a" if amount is None else f"${amount:,.4f}"


def exhausted(tx: Connection, job_id: str, next_usd: Decimal | None) -> None:
    """Pause the job, in the reservation's transaction, and say why in its audit trail."""
    (state,) = budget.spend_of(tx, [job_id]).values()
    reason = (f"{budget.BUDGET_EXHAUSTED}: {_usd(state.spent_usd)} spent of the "
              f"{_usd(state.max_cost_usd)} cap; the next session needs {_usd(next_usd)}")
    if not budget.pause_exhausted(tx, job_id, reason):
        return
    workspace_id = jobs.lock(tx, job_id).workspace_id
    audit.record(tx, workspace_id=workspace_id, job_id=job_id, actor=SCHEDULER_ACTOR,
                 action="pause", reason=budget.BUDGET_EXHAUSTED, details={
                     "from_state": "running", "max_cost_usd": _json(state.max_cost_usd),
                     "spent_usd": _json(state.spent_usd), "next_session_usd": _json(next_usd)})
    log.warning("job paused: its budget is exhausted",
                extra={"job_id": job_id, "max_cost_usd": _json(state.max_cost_usd),
                       "spent_usd": _json(state.spent_usd)})


def _json(amount: Decimal | None) -> float | None:
    return None if amount is None else float(amount)
