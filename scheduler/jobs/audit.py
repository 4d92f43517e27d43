"""Audit trail: who (API key id or OS user) did what to a job, when and why.

Events are written in the same transaction as the change they describe (except `create`, whose
job is created by the planner in its own transaction; its event follows right after).
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

# Lists in `details` (session ids of a requeue) are cut here: the trail says what was asked,
# it is not a second copy of the item table.
MAX_LISTED = 100

_INSERT = text("""
    INSERT INTO audit_events (workspace_id, job_id, actor, action, reason, details)
    VALUES (:ws, :job_id, :actor, :action, :reason, CAST(:details AS jsonb))
""")

_FOR_JOBS = text("""
    SELECT job_id, actor, action, reason, details, created_at FROM audit_events
     WHERE job_id = ANY(CAST(:ids AS text[])) ORDER BY created_at, id
""")


def os_actor() -> str:
    """The operator at a terminal, as `os:<user>`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        user = os.environ.get("USER") or "unknown"
    return f"os:{user}"


def record(
    tx: Connection,
    *,
    workspace_id: str | None,
    job_id: str | None,
    actor: str,
    action: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    tx.execute(_INSERT, {
        "ws": workspace_id, "job_id": job_id, "actor": actor, "action": action,
        "reason": reason, "details": json.dumps(bounded_details(details or {})),
    })


def events_for_jobs(tx: Connection, job_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The trail of each job, oldest first (one query for a whole page of jobs)."""
    events: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return events
    for row in tx.execute(_FOR_JOBS, {"ids": list(job_ids)}):
        events[row.job_id].append(event_json(row))
    return events


def event_json(row: Any) -> dict[str, Any]:
    return {
        "at": _iso(row.created_at),
        "actor": row.actor,
        "action": row.action,
        "reason": row.reason,
        "details": row.details or {},
    }


def bounded_details(details: dict[str, Any]) -> dict[str, Any]:
    bounded: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, list) and len(value) > MAX_LISTED:
            bounded[key] = value[:MAX_LISTED]
            bounded[f"{key}_total"] = len(value)
        else:
            bounded[key] = value
    return bounded


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
