"""The success write: the item, its `analysis_runs` history row and the session's current
analysis, in the caller's one transaction (DESIGN "Writing results").

The history row also records the run's before: the session's analysis at the moment of the
write, read under a row lock so it is exactly what the write replaces (DESIGN "Safe to
apply"). A trial's run is written the same way and not applied to the session.

Three guards, each a rule of DESIGN:
- the item is finished only by the claim that is still current (fenced on the attempt);
- a unique index allows one successful run per (job, session), so a doubled delivery cannot
  write twice;
- a session's current analysis is only replaced by a run that started at the same time or
  later: a run that started earlier never overwrites a newer one (no lost update when two
  backfills overlap). Every run stays in history either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from shared.pricing import Tokens
from shared.state import items
from shared.state.items import Claim
from shared.vocabulary import SKIP_DELETED, Outcome

# The session's current analysis as a document in the shape of a run's `result` (the
# `call_analysis` / `chat_analysis` object): what a run records as its before, and what a
# revert (`shared.state.reverts`) writes back.
CURRENT_ANALYSIS = """jsonb_build_object(
    s.kind || '_summary', s.summary, s.kind || '_successful', s.successful,
    'user_sentiment', s.user_sentiment, 'custom_analysis_data', s.custom_analysis_data)"""

# The whole success write in one statement (one round trip per session): the session row is
# locked first (`current`, FOR UPDATE: the order of every success write, and the before is
# exactly what this write replaces); the item is finished only by the current claim (fenced on
# the attempt); the run row is inserted only when the item was ours, with the unique index as
# the one-success guard; the session is updated only from that run, with the no-lost-update
# guard. Each step reads the one before it, so PostgreSQL runs them in this order.
_RECORD_SUCCESS = text(f"""
    WITH current AS (
        SELECT {CURRENT_ANALYSIS} AS analysis, s.analysis_run_id
          FROM sessions AS s WHERE s.session_id = :session_id
           FOR UPDATE
    ), finished AS (
        UPDATE backfill_items AS i
           SET state = 'succeeded', error_kind = NULL, error = NULL,
               finished_at = clock_timestamp(), lease_expires_at = NULL
          FROM current
         WHERE i.job_id = :job_id AND i.session_id = :session_id
           AND i.state = 'running' AND i.attempts = :attempt
     RETURNING 1
    ), run AS (
        INSERT INTO analysis_runs (
            session_id, job_id, workspace_id, agent_id, agent_version, used_draft, model,
            requested_model, config_hash, result, input_tokens, output_tokens,
            cache_read_tokens, cache_write_tokens, latency_ms, started_at, before,
            before_run_id, field_types, applied)
        SELECT CAST(:session_id AS text), CAST(:job_id AS text), CAST(:workspace_id AS text),
               CAST(:agent_id AS text), CAST(:agent_version AS integer),
               CAST(:used_draft AS boolean), CAST(:model AS text),
               CAST(:requested_model AS text), CAST(:config_hash AS text),
               CAST(:result AS jsonb), CAST(:input_tokens AS integer),
               CAST(:output_tokens AS integer), CAST(:cache_read_tokens AS integer),
               CAST(:cache_write_tokens AS integer), CAST(:latency_ms AS integer),
               CAST(:started_at AS timestamptz), c.analysis, c.analysis_run_id,
               CAST(:field_types AS jsonb), CAST(:applied AS boolean)
          FROM current AS c, finished
        ON CONFLICT (job_id, session_id) WHERE job_id IS NOT NULL DO NOTHING
     RETURNING id
    ), applied AS (
        UPDATE sessions AS s
           SET summary = :summary, successful = :successful, user_sentiment = :user_sentiment,
               custom_analysis_data = CAST(:custom AS jsonb),
               analysis_run_id = run.id, analysis_started_at = :started_at
          FROM run
         WHERE s.session_id = :session_id AND CAST(:applied AS boolean)
           AND (s.analysis_started_at IS NULL OR s.analysis_started_at <= :started_at)
    )
    SELECT EXISTS (SELECT FROM current) AS found, EXISTS (SELECT FROM finished) AS finished,
           (SELECT id FROM run) AS run_id
""")


@dataclass(frozen=True)
class Provenance:
    """Where a run's analysis came from: what the history row records beside the result."""

    workspace_id: str
    agent_id: str
    agent_version: int
    used_draft: bool
    model: str
    requested_model: str | None
    config_hash: str
    field_types: dict[str, str]
    """Custom field name -> type in that configuration (the change report's field types)."""


@dataclass(frozen=True)
class Analysis:
    """The regenerated analysis: the session's columns and the run's `result` document."""

    summary: str
    successful: bool
    user_sentiment: str
    custom: dict[str, Any]
    document: dict[str, Any]


@dataclass(frozen=True)
class Billing:
    """What the provider billed for one run (`tokens.input` excludes the cache), and how long
    the call took."""

    tokens: Tokens
    latency_ms: int


def record_success(tx: Connection, claim: Claim, provenance: Provenance, analysis: Analysis,
                   billing: Billing, *, apply: bool = True,
                   started_at: datetime | None = None) -> Outcome:
    """succeeded, or superseded (our claim is not current) or duplicate (this job already has
    its run for the session); skipped when the session was deleted meanwhile.

    `apply` False (a trial) keeps the run in history only. `started_at` is when the analysis
    started, the claim's start unless the result was made earlier (a promoted job reusing its
    trial's result keeps the trial's time, so a run that started later still wins).
    """
    started = started_at or claim.started_at
    row = tx.execute(_RECORD_SUCCESS, _success_params(
        claim, provenance, analysis, billing, apply=apply, started_at=started)).one()
    if not row.found:
        return "skipped" if items.finish(tx, claim, "skipped", error=SKIP_DELETED) \
            else "superseded"
    if not row.finished:
        return "superseded"
    return "succeeded" if row.run_id is not None else "duplicate"


def _success_params(claim: Claim, provenance: Provenance, analysis: Analysis,
                    billing: Billing, *, apply: bool, started_at: datetime) -> dict[str, Any]:
    tokens = billing.tokens
    return {
        "session_id": claim.session_id, "job_id": claim.job_id, "attempt": claim.attempt,
        "workspace_id": provenance.workspace_id, "agent_id": provenance.agent_id,
        "agent_version": provenance.agent_version, "used_draft": provenance.used_draft,
        "model": provenance.model, "requested_model": provenance.requested_model,
        "config_hash": provenance.config_hash, "result": json.dumps(analysis.document),
        "input_tokens": tokens.input, "output_tokens": tokens.output,
        "cache_read_tokens": tokens.cache_read, "cache_write_tokens": tokens.cache_write,
        "latency_ms": billing.latency_ms, "started_at": started_at,
        "field_types": json.dumps(provenance.field_types), "applied": apply,
        "summary": analysis.summary, "successful": analysis.successful,
        "user_sentiment": analysis.user_sentiment, "custom": json.dumps(analysis.custom),
    }
