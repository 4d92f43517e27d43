"""A job's life: `running ⇄ paused`, `running → completed`, `running | paused → cancelled`,
`completed → running` (failed items requeued).

Every transition also writes, in its transaction, the `job_state` log line (`job_id`, `from`,
`to`, `reason`) and the webhook event it announces (`shared.state.events`): `_announce`.

This module is also the one place that decides which jobs are batch-mode: the mode lives in
`options.mode` (only batch jobs carry it), read here by `mode_of` and `running_jobs`.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from shared.errors import NotFound
from shared.logs import JOB_STATE
from shared.state import events
from shared.vocabulary import BATCH, LIVE, Mode

log = logging.getLogger("backfill.state.jobs")

# The SQL form of "this job is batch-mode"; `mode_of` is the same rule over decoded options.
_IS_BATCH = """options @> '{"mode": "batch"}'::jsonb"""


def mode_of(options: Mapping[str, Any] | None) -> Mode:
    return BATCH if (options or {}).get("mode") == BATCH else LIVE


def new_job_id() -> str:
    return "bf_" + secrets.token_hex(10)


# --------------------------------------------------------------------------- create

_INSERT = text("""
    INSERT INTO backfill_jobs (id, workspace_id, kind, filters, options, idempotency_key,
                               created_by)
    VALUES (:id, :workspace_id, :kind, CAST(:filters AS jsonb), CAST(:options AS jsonb), :key,
            :created_by)
    ON CONFLICT (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
""")

_FOR_KEY = text("SELECT id FROM backfill_jobs WHERE workspace_id = :ws AND idempotency_key = :key")

# A job that matched nothing is complete at birth; only batch jobs carry a mode in `options`,
# so a live job's options stay as they were given.
_RECORD_EXPANSION = text("""
    UPDATE backfill_jobs
       SET matched = :matched,
           state = CASE WHEN :matched = 0 THEN 'completed' ELSE state END,
           finished_at = CASE WHEN :matched = 0 THEN clock_timestamp() END,
           options = CASE WHEN :batch THEN options || '{"mode": "batch"}'::jsonb ELSE options END
     WHERE id = :id
 RETURNING workspace_id
""")


@dataclass(frozen=True)
class NewJob:
    workspace_id: str
    kind: str
    filters: Any
    options: dict[str, Any]
    idempotency_key: str | None
    created_by: str | None


def insert(tx: Connection, job: NewJob) -> str | None:
    """A new running job; None when the workspace already has a job for this idempotency key."""
    row = tx.execute(_INSERT, {
        "id": new_job_id(), "workspace_id": job.workspace_id, "kind": job.kind,
        "filters": json.dumps(job.filters), "options": json.dumps(job.options),
        "key": job.idempotency_key, "created_by": job.created_by,
    }).first()
    return None if row is None else str(row.id)


def for_idempotency_key(tx: Connection, workspace_id: str, key: str | None) -> str:
    return str(tx.execute(_FOR_KEY, {"ws": workspace_id, "key": key}).scalar_one())


def record_expansion(tx: Connection, job_id: str, matched: int, mode: Mode) -> None:
    workspace_id = tx.execute(_RECORD_EXPANSION, {"id": job_id, "matched": matched,
                                                  "batch": mode == BATCH}).scalar_one()
    if matched == 0:
        _announce(tx, job_id, workspace_id, "running", "completed", "matched no session")


# --------------------------------------------------------------------------- transitions

_LOCK = text("""
    SELECT workspace_id, state FROM backfill_jobs
     WHERE id = :id AND (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text))
       FOR UPDATE
""")

_MOVE = text("""
    UPDATE backfill_jobs
       SET state = :state, state_reason = :reason,
           finished_at = CASE WHEN :finished THEN clock_timestamp() END
     WHERE id = :id
""")

_PAUSE_RUNNING = text("""
    UPDATE backfill_jobs SET state = 'paused', state_reason = :reason
     WHERE id = :id AND state = 'running'
 RETURNING workspace_id
""")

_COMPLETE_FINISHED = text("""
    UPDATE backfill_jobs AS j SET state = 'completed', finished_at = clock_timestamp()
     WHERE j.state = 'running'
       AND NOT EXISTS (SELECT 1 FROM backfill_items AS i
                        WHERE i.job_id = j.id AND i.state IN ('pending', 'queued', 'running'))
 RETURNING j.id, j.workspace_id
""")


@dataclass(frozen=True)
class LockedJob:
    job_id: str
    workspace_id: str
    state: str


def lock(tx: Connection, job_id: str, workspace_id: str | None = None) -> LockedJob:
    """The job, locked for this transaction (an operator action decides on its state);
    NotFound outside `workspace_id`."""
    row = tx.execute(_LOCK, {"id": job_id, "ws": workspace_id}).one_or_none()
    if row is None:
        raise NotFound(f"no backfill job {job_id!r}")
    return LockedJob(job_id, str(row.workspace_id), str(row.state))


def _move(tx: Connection, job: LockedJob, state: str, reason: str | None,
          finished: bool = False) -> None:
    tx.execute(_MOVE, {"state": state, "reason": reason, "finished": finished, "id": job.job_id})
    _announce(tx, job.job_id, job.workspace_id, job.state, state, reason)


def _announce(tx: Connection, job_id: str, workspace_id: str, before: str, after: str,
              reason: str | None) -> None:
    """What every transition writes beside the state: the log line and the webhook event."""
    log.info(JOB_STATE, extra={"job_id": job_id, "from": before, "to": after, "reason": reason})
    events.record_job_event(tx, workspace_id, job_id, after)


def pause(tx: Connection, job: LockedJob, reason: str) -> None:
    """An operator's pause: nothing more is dispatched; calls in flight finish."""
    _move(tx, job, "paused", reason)


def resume(tx: Connection, job: LockedJob, reason: str | None) -> None:
    _move(tx, job, "running", reason)


def cancel(tx: Connection, job: LockedJob, reason: str) -> None:
    _move(tx, job, "cancelled", reason, finished=True)


def reopen(tx: Connection, job: LockedJob, reason: str) -> None:
    """A completed job whose failed items were requeued runs again."""
    _move(tx, job, "running", reason)


def pause_running(tx: Connection, job_id: str, reason: str) -> bool:
    """Pause a job that is running, whoever notices first (a job-fatal error in one worker
    pauses the job for all); False when it was not running any more."""
    row = tx.execute(_PAUSE_RUNNING, {"id": job_id, "reason": reason}).one_or_none()
    if row is None:
        return False
    _announce(tx, job_id, row.workspace_id, "running", "paused", reason)
    return True


def complete_finished(tx: Connection) -> list[str]:
    """Every running job whose items are all terminal → completed."""
    completed = tx.execute(_COMPLETE_FINISHED).all()
    for row in completed:
        _announce(tx, row.id, row.workspace_id, "running", "completed", "every item finished")
    return [row.id for row in completed]


# --------------------------------------------------------------------------- which jobs run

_RUNNING = {
    LIVE: text(f"SELECT id FROM backfill_jobs WHERE state = 'running' AND NOT {_IS_BATCH} "
               "ORDER BY created_at"),
    BATCH: text(f"SELECT id FROM backfill_jobs WHERE state = 'running' AND {_IS_BATCH} "
                "ORDER BY created_at"),
}


def running_jobs(tx: Connection, mode: Mode) -> list[str]:
    """Running jobs of one mode, oldest first: live ones go to the dispatcher, batch ones to
    the Message Batches cycle."""
    return [row.id for row in tx.execute(_RUNNING[mode])]
