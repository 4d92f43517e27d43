"""Read side: the job and session JSON documents of DESIGN.md, from SQL counts.

Every lookup takes an optional `workspace_id`: the HTTP API always passes the caller's, so a
job or session of another workspace is simply not found (a 404, never a 403). The operator CLI
passes None and sees everything.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from scheduler.jobs import audit
from shared.errors import InvalidInput, NotFound
from shared.pricing import Tokens, cost_usd
from shared.settings import Settings
from shared.state import budget
from shared.state.jobs import mode_of
from shared.state.trials import is_trial
from shared.vocabulary import ITEM_STATES

DEFAULT_PAGE = 50
MAX_PAGE = 500

_JOBS = text("""
    SELECT id, workspace_id, kind, filters, options, state, state_reason, matched, created_at,
           finished_at, promoted_from
      FROM backfill_jobs
     WHERE id = ANY(CAST(:ids AS text[]))
       AND (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text))
""")
_STATE_COUNTS = text("""
    SELECT job_id, state, count(*) AS n FROM backfill_items
     WHERE job_id = ANY(CAST(:ids AS text[])) GROUP BY job_id, state
""")
_ERROR_KINDS = text("""
    SELECT job_id, error_kind, count(*) AS n FROM backfill_items
     WHERE job_id = ANY(CAST(:ids AS text[])) AND state = 'failed' AND error_kind IS NOT NULL
     GROUP BY job_id, error_kind ORDER BY job_id, error_kind
""")

# Every run of the job counts, retries and superseded ones included: each was billed.
_USAGE = text("""
    SELECT job_id, model, sum(input_tokens) AS input, sum(output_tokens) AS output,
           sum(cache_read_tokens) AS cache_read, sum(cache_write_tokens) AS cache_write
      FROM analysis_runs
     WHERE job_id = ANY(CAST(:ids AS text[]))
     GROUP BY job_id, model
""")


@dataclass(frozen=True)
class Page:
    """One page of a listing; `next_cursor` is None on the last page."""

    items: list[dict[str, Any]]
    next_cursor: str | None

    def as_json(self) -> dict[str, Any]:
        return {"items": self.items, "next_cursor": self.next_cursor}


def job_json(tx: Connection, settings: Settings, job_id: str,
             workspace_id: str | None = None) -> dict[str, Any]:
    documents = jobs_json(tx, settings, [job_id], workspace_id)
    if not documents:
        raise NotFound(f"no backfill job {job_id!r}")
    return documents[0]


def jobs_json(
    tx: Connection, settings: Settings, job_ids: Sequence[str], workspace_id: str | None = None,
) -> list[dict[str, Any]]:
    """Job documents in the order of `job_ids` (unknown or foreign ids are left out).

    Seven queries for the whole page, however many jobs it holds.
    """
    params = {"ids": list(job_ids), "ws": workspace_id}
    rows = {row.id: row for row in tx.execute(_JOBS, params)}
    found = [job_id for job_id in job_ids if job_id in rows]
    counts: dict[str, dict[str, int]] = {job_id: {} for job_id in found}
    for row in tx.execute(_STATE_COUNTS, {"ids": found}):
        counts[row.job_id][row.state] = row.n
    kinds: dict[str, dict[str, int]] = {job_id: {} for job_id in found}
    for row in tx.execute(_ERROR_KINDS, {"ids": found}):
        kinds[row.job_id][row.error_kind] = row.n
    trails = audit.events_for_jobs(tx, found)
    usage = _usage(tx, found, {i: rows[i] for i in found}, settings)
    spend = budget.spend_of(tx, found)
    return [_job_document(rows[i], counts[i], kinds[i], trails[i]) | {"usage": usage[i]}
            | _spend_document(rows[i].state, spend[i]) for i in found]


def _spend_document(state: str, spend: budget.Budget) -> dict[str, Any]:
    """The cap, why the job is paused (while it is), and what it spent and holds in flight
    (settled or not: the figures of this moment)."""
    return {
        "max_cost_usd": None if spend.max_cost_usd is None else float(spend.max_cost_usd),
        "pause_reason": spend.pause_reason if state == "paused" else None,
        "spend": {"spent_usd": round(float(spend.spent_usd), 6),
                  "reserved_usd": round(float(spend.reserved_usd), 6)},
    }


def _usage(tx: Connection, job_ids: list[str], jobs: dict[str, Any],
           settings: Settings) -> dict[str, dict[str, Any]]:
    """Tokens the job's runs reported and what they cost (prices of the settings; a job run
    in batch mode gets the batch discount)."""
    totals = {job_id: Tokens() for job_id in job_ids}
    usd = dict.fromkeys(job_ids, 0.0)
    for row in tx.execute(_USAGE, {"ids": job_ids}):
        tokens = Tokens(int(row.input), int(row.output), int(row.cache_read),
                        int(row.cache_write))
        totals[row.job_id] += tokens
        usd[row.job_id] += cost_usd(settings, row.model, tokens,
                                    mode_of(jobs[row.job_id].options))
    return {job_id: {"input_tokens": t.input, "output_tokens": t.output,
                     "cache_read_tokens": t.cache_read, "cache_write_tokens": t.cache_write,
                     "cost_usd": round(usd[job_id], 6)}
            for job_id, t in totals.items()}


def _job_document(job: Any, by_state: dict[str, int], error_kinds: dict[str, int],
                  trail: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, int] = {"matched": job.matched} | {state: 0 for state in ITEM_STATES}
    counts |= by_state
    return {
        "id": job.id,
        "workspace_id": job.workspace_id,
        "kind": job.kind,
        "filters": job.filters,
        "options": job.options or {},
        "state": job.state,
        "state_reason": job.state_reason,
        "trial": is_trial(job.options),
        "promoted_from": job.promoted_from,
        "counts": counts,
        "error_kinds": error_kinds,
        "created_at": _iso(job.created_at),
        "finished_at": _iso(job.finished_at),
        "audit": trail,
    }


def list_jobs(tx: Connection, settings: Settings, workspace_id: str | None,
              limit: int = 50) -> list[dict[str, Any]]:
    return jobs_page(tx, settings, workspace_id, limit=limit).items


_JOB_PAGE = text("""
    SELECT id, created_at FROM backfill_jobs
     WHERE (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text))
       AND (CAST(:after_at AS timestamptz) IS NULL
            OR (created_at, id) < (CAST(:after_at AS timestamptz), CAST(:after_id AS text)))
     ORDER BY created_at DESC, id DESC LIMIT :limit
""")


def jobs_page(
    tx: Connection, settings: Settings, workspace_id: str | None, *, cursor: str | None = None,
    limit: int = DEFAULT_PAGE,
) -> Page:
    """Jobs newest first. The cursor is the (created_at, id) of the last job of the page."""
    after_at, after_id = decode_job_cursor(cursor) if cursor else (None, None)
    rows = tx.execute(_JOB_PAGE, {"ws": workspace_id, "after_at": after_at,
                                  "after_id": after_id, "limit": _bounded(limit) + 1}).all()
    more = len(rows) > _bounded(limit)
    rows = rows[:_bounded(limit)]
    next_cursor = encode_cursor([rows[-1].created_at.isoformat(), rows[-1].id]) if more else None
    return Page(jobs_json(tx, settings, [row.id for row in rows], workspace_id), next_cursor)


_ITEM_PAGE = text("""
    SELECT session_id, state, error_kind, error, attempts FROM backfill_items
     WHERE job_id = :job_id
       AND (CAST(:state AS text) IS NULL OR state = CAST(:state AS text))
       AND (CAST(:after AS text) IS NULL OR session_id > CAST(:after AS text))
     ORDER BY session_id LIMIT :limit
""")


def items_page(
    tx: Connection, job_id: str, *, workspace_id: str | None = None, state: str | None = None,
    cursor: str | None = None, limit: int = DEFAULT_PAGE,
) -> Page:
    """Items of one job by session id; NotFound when the job is not the workspace's."""
    if state is not None and state not in ITEM_STATES:
        raise InvalidInput(f"state: must be one of {', '.join(ITEM_STATES)}")
    _require_job(tx, job_id, workspace_id)
    after = decode_item_cursor(cursor) if cursor else None
    rows = tx.execute(_ITEM_PAGE, {"job_id": job_id, "state": state, "after": after,
                                   "limit": _bounded(limit) + 1}).all()
    more = len(rows) > _bounded(limit)
    items = [dict(row._mapping) for row in rows[:_bounded(limit)]]
    return Page(items, encode_cursor([items[-1]["session_id"]]) if more else None)


def _require_job(tx: Connection, job_id: str, workspace_id: str | None) -> None:
    found = tx.execute(text("""
        SELECT 1 FROM backfill_jobs
         WHERE id = :id AND (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text))
    """), {"id": job_id, "ws": workspace_id}).first()
    if found is None:
        raise NotFound(f"no backfill job {job_id!r}")


def _bounded(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE))


# Cursors are opaque to clients: base64url of a small JSON array. A forged or damaged cursor
# is bad input (422), never a database error.
def encode_cursor(values: list[str]) -> str:
    raw = json.dumps(values, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode(cursor: str, size: int) -> list[str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeError):
        values = None
    if (not isinstance(values, list) or len(values) != size
            or not all(isinstance(v, str) and "\x00" not in v for v in values)):
        raise InvalidInput("cursor: not a cursor returned by this listing")
    return values


def decode_job_cursor(cursor: str) -> tuple[datetime, str]:
    created_at, job_id = _decode(cursor, 2)
    try:
        when = datetime.fromisoformat(created_at)
    except ValueError:
        raise InvalidInput("cursor: not a cursor returned by this listing") from None
    if when.tzinfo is None:
        raise InvalidInput("cursor: not a cursor returned by this listing")
    return when, job_id


def decode_item_cursor(cursor: str) -> str:
    return _decode(cursor, 1)[0]


_SESSION = text("""
    SELECT s.session_id, s.kind, s.workspace_id, s.agent_id, s.agent_version, s.summary,
           s.successful, s.user_sentiment, s.in_voicemail, s.custom_analysis_data,
           r.agent_id AS run_agent_id, r.agent_version AS run_agent_version, r.model,
           r.config_hash, r.job_id, r.created_at AS analyzed_at, r.used_draft
      FROM sessions AS s LEFT JOIN analysis_runs AS r ON r.id = s.analysis_run_id
     WHERE s.session_id = :id
       AND (CAST(:ws AS text) IS NULL OR s.workspace_id = CAST(:ws AS text))
""")


def session_json(tx: Connection, session_id: str,
                 workspace_id: str | None = None) -> dict[str, Any]:
    row = tx.execute(_SESSION, {"id": session_id, "ws": workspace_id}).one_or_none()
    if row is None:
        raise NotFound(f"no session {session_id!r}")
    prefix = "call" if row.kind == "call" else "chat"
    analysis: dict[str, Any] = {
        f"{prefix}_summary": row.summary,
        f"{prefix}_successful": row.successful,
        "user_sentiment": row.user_sentiment,
        "custom_analysis_data": row.custom_analysis_data or {},
    }
    if row.kind == "call":
        analysis["in_voicemail"] = row.in_voicemail
    return {
        "session_id": row.session_id,
        "kind": row.kind,
        "workspace_id": row.workspace_id,
        "agent_id": row.agent_id,
        "agent_version": row.agent_version,
        f"{prefix}_analysis": analysis,
        "analysis_source": _analysis_source(row),
    }


def _analysis_source(row: Any) -> dict[str, Any] | None:
    if row.run_agent_id is None:
        return None
    return {
        "agent_id": row.run_agent_id,
        "agent_version": row.run_agent_version,
        "used_draft": row.used_draft,
        "model": row.model,
        "config_hash": row.config_hash,
        "job_id": row.job_id,
        "analyzed_at": _iso(row.analyzed_at),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
