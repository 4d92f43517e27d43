"""The producer: filter rows in, one item row per matching session out, expanded inside
Postgres in the same transaction as the job (all or nothing).

What a job takes is `scheduler.jobs.selection`; `preview` counts exactly the query
`create_job` inserts from, so the two always agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, text

from scheduler.jobs.filters import FilterRow, parse_filters
from scheduler.jobs.options import parse_mode, parse_options, resolve_mode
from scheduler.jobs.selection import selection
from shared.db import Database
from shared.errors import InvalidInput
from shared.settings import Settings
from shared.state import items, jobs
from shared.vocabulary import SESSION_KINDS


@dataclass(frozen=True)
class CreatedJob:
    job_id: str
    created: bool  # False when an idempotency key returned an existing job


def validate_request(
    settings: Settings, workspace_id: str, kind: str, raw_filters: object
) -> list[FilterRow]:
    if not isinstance(workspace_id, str) or not workspace_id.strip():
        raise InvalidInput("workspace: must be a non-empty string")
    if kind not in SESSION_KINDS:
        raise InvalidInput(f"kind: must be one of {', '.join(SESSION_KINDS)}, not {kind!r}")
    return parse_filters(kind, raw_filters, max_rows=settings.max_filter_rows)


def require_workspace(tx: Connection, workspace_id: str) -> None:
    found = tx.execute(text("SELECT 1 FROM workspaces WHERE id = :id"), {"id": workspace_id})
    if found.first() is None:
        raise InvalidInput(f"workspace: unknown workspace {workspace_id!r}")


def preview(
    db: Database,
    settings: Settings,
    workspace_id: str,
    kind: str,
    raw: object,
    *,
    options: object = None,
) -> int:
    """How many sessions `create_job` with the same filters and options would take now."""
    rows = validate_request(settings, workspace_id, kind, raw)
    job_options = parse_options(options)
    with db.transaction() as tx:
        require_workspace(tx, workspace_id)
        selected = selection(tx, settings, workspace_id, kind, rows, job_options).subquery()
        return int(tx.execute(select(func.count()).select_from(selected)).scalar_one())


def create_job(
    db: Database,
    settings: Settings,
    workspace_id: str,
    kind: str,
    raw_filters: object,
    *,
    options: object = None,
    idempotency_key: str | None = None,
    created_by: str | None = None,
    mode: str | None = None,
    on_created: Callable[[Connection, str], None] | None = None,
) -> CreatedJob:
    """Validate everything first, then create job and items in one transaction (all or nothing).

    `mode` is `live` (one Celery task per session) or `batch` (the Message Batches API, driven
    by the scheduler); None picks `batch` above `BACKFILL_BATCH_AUTO_THRESHOLD` matches.
    `on_created(tx, job_id)` runs in the same transaction (the audit event commits with the
    job or not at all); an idempotent replay does not call it.
    """
    rows = validate_request(settings, workspace_id, kind, raw_filters)
    job_options = parse_options(options)
    requested_mode = parse_mode(mode)
    with db.transaction() as tx:
        require_workspace(tx, workspace_id)
        job_id = jobs.insert(tx, jobs.NewJob(
            workspace_id=workspace_id, kind=kind, filters=raw_filters,
            options=job_options.as_json(), idempotency_key=idempotency_key,
            created_by=created_by))
        if job_id is None:
            return CreatedJob(jobs.for_idempotency_key(tx, workspace_id, idempotency_key),
                              created=False)
        query = selection(tx, settings, workspace_id, kind, rows, job_options)
        matched = items.expand(tx, job_id, query, settings.db_expansion_timeout_ms)
        jobs.record_expansion(tx, job_id, matched, resolve_mode(
            requested_mode, matched, settings.batch_auto_threshold))
        if on_created is not None:
            on_created(tx, job_id)
    return CreatedJob(job_id, created=True)
