"""Reverting a job (DESIGN "Safe to apply"): every session whose current analysis was written by
the job gets that run's before back, a batch of sessions per transaction.

Rules, each held in SQL:

- only a session whose `analysis_run_id` is still the job's run is reverted (a conditional
  UPDATE, so a run of another job or a rerun that wrote the session meanwhile, even while this
  batch waits for its row lock, is left alone: `left_newer`);
- the restored analysis is the run's before, and its provenance is the run that had written
  it (`before_run_id`; null for the imported analysis); `analysis_started_at` stays the job's
  run's, so a run that started after the job's still replaces the restored analysis, as it
  would have replaced the job's — a revert undoes one job, it never blocks another;
- each revert writes a history row: `reverted_run_id` names the run it undid, `result` is the
  restored analysis, `before` the one it replaced; its `job_id` is null (the index of one
  success per job and session is not involved) and it bills nothing;
- a run that a revert already undid is neither reverted nor counted `left_newer` again, so a
  second revert changes nothing;
- runs without a before (older than the feature) and a trial's runs (never applied) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text

# The job's runs a revert looks at: applied ones whose before was recorded.
_REVERTIBLE = "r.job_id = :job_id AND r.applied AND r.before IS NOT NULL"
_ALREADY_REVERTED = ("EXISTS (SELECT 1 FROM analysis_runs AS undone "
                     "WHERE undone.reverted_run_id = {run}.id)")

_REVERT_PAGE = text(f"""
    WITH page AS (
        SELECT r.* FROM analysis_runs AS r
         WHERE {_REVERTIBLE} AND r.session_id > :after
         ORDER BY r.session_id
         LIMIT :limit
    ), restored AS (
        UPDATE sessions AS s
           SET summary = p.before ->> (s.kind || '_summary'),
               successful = CAST(p.before ->> (s.kind || '_successful') AS boolean),
               user_sentiment = p.before ->> 'user_sentiment',
               custom_analysis_data = COALESCE(p.before -> 'custom_analysis_data', '{{}}'),
               analysis_run_id = p.before_run_id
          FROM page AS p
         WHERE s.session_id = p.session_id AND s.analysis_run_id = p.id
     RETURNING p.id
    ), recorded AS (
        INSERT INTO analysis_runs (
            session_id, job_id, workspace_id, agent_id, agent_version, used_draft, model,
            requested_model, config_hash, result, before, before_run_id, field_types, applied,
            reverted_run_id, started_at)
        SELECT p.session_id, NULL, p.workspace_id, p.agent_id, p.agent_version, p.used_draft,
               p.model, p.requested_model, p.config_hash, p.before, p.result, p.id,
               p.field_types, true, p.id, clock_timestamp()
          FROM page AS p JOIN restored USING (id)
     RETURNING 1
    )
    SELECT (SELECT count(*) FROM recorded) AS reverted,
           (SELECT count(*) FROM page AS p
             WHERE p.id NOT IN (SELECT id FROM restored)
               AND NOT {_ALREADY_REVERTED.format(run="p")}) AS left_newer,
           (SELECT max(session_id) FROM page) AS last_session_id
""")

_WOULD_REVERT = text(f"""
    SELECT count(*) FILTER (WHERE s.analysis_run_id = r.id) AS reverted,
           count(*) FILTER (WHERE s.analysis_run_id IS DISTINCT FROM r.id
                              AND NOT {_ALREADY_REVERTED.format(run="r")}) AS left_newer
      FROM analysis_runs AS r JOIN sessions AS s ON s.session_id = r.session_id
     WHERE {_REVERTIBLE}
""")


@dataclass(frozen=True)
class RevertedPage:
    reverted: int
    left_newer: int
    last_session_id: str | None
    """The page's last session (the next page starts after it); None: nothing was left."""


def revert_page(tx: Connection, job_id: str, after: str, limit: int) -> RevertedPage:
    """The next `limit` revertible runs of the job by session id after `after`: each session
    still showing its run gets the run's before back."""
    row = tx.execute(_REVERT_PAGE, {"job_id": job_id, "after": after, "limit": limit}).one()
    return RevertedPage(int(row.reverted), int(row.left_newer), row.last_session_id)


@dataclass(frozen=True)
class RevertCounts:
    reverted: int
    left_newer: int


def count_revertible(tx: Connection, job_id: str) -> RevertCounts:
    """What a revert would do now (a dry run): read only, nothing locked."""
    row = tx.execute(_WOULD_REVERT, {"job_id": job_id}).one()
    return RevertCounts(int(row.reverted), int(row.left_newer))
