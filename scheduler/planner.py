"""Producer: filter rows in, one item row per matching session out, expanded inside Postgres."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, literal, select, text
from sqlalchemy.orm import Session

from shared.db import Database
from shared.errors import InvalidInput
from shared.filters import FilterRow, matching_sessions, parse_filters
from shared.models import BackfillItem
from shared.settings import Settings

KINDS = ("call", "chat")


@dataclass(frozen=True)
class CreatedJob:
    job_id: str
    created: bool  # False when an idempotency key returned an existing job


def new_job_id() -> str:
    return "bf_" + secrets.token_hex(10)


def validate_request(
    settings: Settings, workspace_id: str, kind: str, raw_filters: object
) -> list[FilterRow]:
    if not isinstance(workspace_id, str) or not workspace_id.strip():
        raise InvalidInput("workspace: must be a non-empty string")
    if kind not in KINDS:
        raise InvalidInput(f"kind: must be one of {', '.join(KINDS)}, not {kind!r}")
    return parse_filters(kind, raw_filters, max_rows=settings.max_filter_rows)


def preview(db: Database, settings: Settings, workspace_id: str, kind: str, raw: object) -> int:
    rows = validate_request(settings, workspace_id, kind, raw)
    with db.transaction() as tx:
        _require_workspace(tx, workspace_id)
        matches = matching_sessions(workspace_id, kind, rows).subquery()
        return int(tx.execute(select(func.count()).select_from(matches)).scalar_one())


def create_job(
    db: Database,
    settings: Settings,
    workspace_id: str,
    kind: str,
    raw_filters: object,
    *,
    idempotency_key: str | None = None,
    created_by: str | None = None,
) -> CreatedJob:
    """Validate everything first, then create job and items in one transaction (all or nothing)."""
    rows = validate_request(settings, workspace_id, kind, raw_filters)
    with db.transaction() as tx:
        _require_workspace(tx, workspace_id)
        job_id = _insert_job(tx, workspace_id, kind, raw_filters, idempotency_key, created_by)
        if job_id is None:
            return CreatedJob(_job_for_key(tx, workspace_id, idempotency_key), created=False)
        matched = _expand(tx, job_id, workspace_id, kind, rows)
        _record_matched(tx, job_id, matched)
    return CreatedJob(job_id, created=True)


def _require_workspace(tx: Session, workspace_id: str) -> None:
    found = tx.execute(text("SELECT 1 FROM workspaces WHERE id = :id"), {"id": workspace_id})
    if found.first() is None:
        raise InvalidInput(f"workspace: unknown workspace {workspace_id!r}")


_INSERT_JOB = text("""
    INSERT INTO backfill_jobs (id, workspace_id, kind, filters, idempotency_key, created_by)
    VALUES (:id, :workspace_id, :kind, CAST(:filters AS jsonb), :key, :created_by)
    ON CONFLICT (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
""")


def _insert_job(
    tx: Session, workspace_id: str, kind: str, raw: Any, key: str | None, created_by: str | None
) -> str | None:
    params = {
        "id": new_job_id(), "workspace_id": workspace_id, "kind": kind,
        "filters": json.dumps(raw), "key": key, "created_by": created_by,
    }
    row = tx.execute(_INSERT_JOB, params).first()
    return None if row is None else str(row.id)


def _job_for_key(tx: Session, workspace_id: str, key: str | None) -> str:
    return str(tx.execute(
        text("SELECT id FROM backfill_jobs WHERE workspace_id = :ws AND idempotency_key = :key"),
        {"ws": workspace_id, "key": key},
    ).scalar_one())


def _expand(tx: Session, job_id: str, workspace_id: str, kind: str, rows: list[FilterRow]) -> int:
    """One INSERT … SELECT: the ids never leave Postgres."""
    matches = matching_sessions(workspace_id, kind, rows).subquery()
    source = select(literal(job_id).label("job_id"), matches.c.session_id)
    inserted = (
        insert(BackfillItem).from_select(["job_id", "session_id"], source)
        .returning(BackfillItem.session_id).cte("inserted")
    )
    # The count comes back with the insert itself (a driver rowcount is not reliable here).
    return int(tx.execute(select(func.count()).select_from(inserted)).scalar_one())


def _record_matched(tx: Session, job_id: str, matched: int) -> None:
    # A job that matched nothing is complete at birth.
    tx.execute(text("""
        UPDATE backfill_jobs
           SET matched = :matched,
               state = CASE WHEN :matched = 0 THEN 'completed' ELSE state END,
               finished_at = CASE WHEN :matched = 0 THEN clock_timestamp() END
         WHERE id = :id
    """), {"matched": matched, "id": job_id})
