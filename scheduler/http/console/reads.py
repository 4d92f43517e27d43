"""What the console reads beyond the job and session documents (`scheduler.jobs.documents`):
jobs filtered by state and workspace, how fast a job finishes sessions, its throughput over
time, a session's history of runs. Read-only SQL; the console sees every workspace, so a
workspace appears here only as a filter the operator chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, text

from scheduler.jobs import documents
from shared.errors import InvalidInput
from shared.settings import Settings
from shared.vocabulary import JOB_STATES

# The rate is what finished in the last minute: a measure a person reads at a glance, and one
# that follows a job that speeds up, slows down or was just requeued.
RATE_WINDOW_S: Final = 60
HISTORY_LIMIT: Final = 50
WORKSPACE_CHOICES: Final = 500

_JOB_IDS = text("""
    SELECT id, created_at FROM backfill_jobs
     WHERE (CAST(:state AS text) IS NULL OR state = CAST(:state AS text))
       AND (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text))
       AND (CAST(:after_at AS timestamptz) IS NULL
            OR (created_at, id) < (CAST(:after_at AS timestamptz), CAST(:after_id AS text)))
     ORDER BY created_at DESC, id DESC LIMIT :limit
""")


def jobs_page(tx: Connection, settings: Settings, *, state: str | None, workspace: str | None,
              cursor: str | None, limit: int = documents.DEFAULT_PAGE) -> documents.Page:
    """Jobs newest first, of one state and one workspace when given; the cursor is the one of
    the API's listing, so a page link works the same way."""
    if state is not None and state not in JOB_STATES:
        raise InvalidInput(f"state: must be one of {', '.join(JOB_STATES)}")
    after_at, after_id = documents.decode_job_cursor(cursor) if cursor else (None, None)
    rows = tx.execute(_JOB_IDS, {"state": state, "ws": workspace, "after_at": after_at,
                                 "after_id": after_id, "limit": limit + 1}).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = (documents.encode_cursor([rows[-1].created_at.isoformat(), rows[-1].id])
                   if more else None)
    return documents.Page(documents.jobs_json(tx, settings, [row.id for row in rows]),
                          next_cursor)


def workspace_choices(tx: Connection) -> list[str]:
    """Workspace ids to suggest in the filter (the field takes any id)."""
    rows = tx.execute(text("SELECT id FROM workspaces ORDER BY id LIMIT :n"),
                      {"n": WORKSPACE_CHOICES})
    return [str(row.id) for row in rows]


@dataclass(frozen=True)
class Activity:
    """Sessions a job finished in the last RATE_WINDOW_S, and over how long that was measured
    (a job younger than the window is measured over its age)."""

    recent: int
    window_s: float

    @property
    def per_minute(self) -> float:
        return self.recent * 60 / self.window_s if self.window_s > 0 else 0.0


_ACTIVITY = text("""
    SELECT j.id, extract(epoch FROM least(make_interval(secs => :window),
                                          clock_timestamp() - j.created_at)) AS window_s,
           (SELECT count(*) FROM backfill_items AS i
             WHERE i.job_id = j.id
               AND i.finished_at >= clock_timestamp() - make_interval(secs => :window)) AS recent
      FROM backfill_jobs AS j WHERE j.id = ANY(CAST(:ids AS text[]))
""")


def activity(tx: Connection, job_ids: list[str]) -> dict[str, Activity]:
    rows = tx.execute(_ACTIVITY, {"ids": job_ids, "window": RATE_WINDOW_S})
    return {row.id: Activity(int(row.recent), float(row.window_s)) for row in rows}


# Bucket widths a person reads easily; the chart takes the smallest that keeps it within
# MAX_BUCKETS bars.
BUCKET_STEPS_S: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
                         21600, 43200, 86400)
MAX_BUCKETS: Final = 60


@dataclass(frozen=True)
class Bucket:
    start: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Throughput:
    """Sessions finished per time bucket, by how they ended; empty before the first finish."""

    width_s: int
    buckets: list[Bucket]


def bucket_width(span_s: float) -> int:
    for step in BUCKET_STEPS_S:
        if span_s / step < MAX_BUCKETS:
            return step
    return BUCKET_STEPS_S[-1] * (int(span_s // (BUCKET_STEPS_S[-1] * MAX_BUCKETS)) + 1)


_SPAN = text("""
    SELECT min(finished_at) AS first, max(finished_at) AS last FROM backfill_items
     WHERE job_id = :id AND finished_at IS NOT NULL
""")
_BUCKETS = text("""
    SELECT date_bin(make_interval(secs => :width), finished_at, CAST(:origin AS timestamptz))
               AS bucket, state, count(*) AS n
      FROM backfill_items
     WHERE job_id = :id AND finished_at IS NOT NULL
     GROUP BY 1, 2 ORDER BY 1
""")


def throughput(tx: Connection, job_id: str) -> Throughput:
    """Buckets of the items' `finished_at`, every bucket from the first to the last present
    (a quiet minute is a zero bar, not a gap the eye skips)."""
    span = tx.execute(_SPAN, {"id": job_id}).one()
    if span.first is None:
        return Throughput(BUCKET_STEPS_S[0], [])
    width = bucket_width((span.last - span.first).total_seconds())
    origin = _floor(span.first, width)
    counts: dict[datetime, dict[str, int]] = {}
    for row in tx.execute(_BUCKETS, {"id": job_id, "width": width, "origin": origin}):
        counts.setdefault(row.bucket, {})[row.state] = int(row.n)
    last = max(counts)
    buckets = []
    start = origin
    while start <= last:
        buckets.append(Bucket(start, counts.get(start, {})))
        start += timedelta(seconds=width)
    return Throughput(width, buckets)


def _floor(moment: datetime, width_s: int) -> datetime:
    """`moment` down to a multiple of the width since the epoch, so buckets start on round
    times (12:03:00, not 12:02:47)."""
    epoch = moment.timestamp()
    return datetime.fromtimestamp(epoch - epoch % width_s, tz=moment.tzinfo)


@dataclass(frozen=True)
class Run:
    """One row of a session's history: what a run produced and where it came from."""

    run_id: int
    job_id: str | None
    agent_id: str
    agent_version: int
    used_draft: bool
    model: str
    config_hash: str
    input_tokens: int
    output_tokens: int
    latency_ms: int
    created_at: datetime
    result: dict[str, Any]
    # What the run replaced (None for history older than befores), and what kind of row it is:
    # a trial run is recorded but never applied; a revert row restores an earlier analysis.
    before: dict[str, Any] | None
    applied: bool
    revert: bool
    current: bool


_HISTORY = text("""
    SELECT r.id, r.job_id, r.agent_id, r.agent_version, r.used_draft, r.model, r.config_hash,
           r.input_tokens, r.output_tokens, r.latency_ms, r.created_at, r.result, r.before,
           r.applied, (r.reverted_run_id IS NOT NULL) AS revert,
           (r.id = s.analysis_run_id) AS current
      FROM analysis_runs AS r JOIN sessions AS s ON s.session_id = r.session_id
     WHERE r.session_id = :id
     ORDER BY r.created_at DESC, r.id DESC LIMIT :limit
""")


def history(tx: Connection, session_id: str) -> list[Run]:
    """The session's runs, newest first (the latest HISTORY_LIMIT)."""
    rows = tx.execute(_HISTORY, {"id": session_id, "limit": HISTORY_LIMIT})
    return [Run(run_id=row.id, job_id=row.job_id, agent_id=row.agent_id,
                agent_version=row.agent_version, used_draft=row.used_draft, model=row.model,
                config_hash=row.config_hash, input_tokens=row.input_tokens,
                output_tokens=row.output_tokens, latency_ms=row.latency_ms,
                created_at=row.created_at, result=row.result or {}, before=row.before,
                applied=bool(row.applied), revert=bool(row.revert),
                current=bool(row.current))
            for row in rows]
