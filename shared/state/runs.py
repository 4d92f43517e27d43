"""The success write: the item, its `analysis_runs` history row and the session's current
analysis, in the caller's one transaction (DESIGN "Writing results").

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
from shared.vocabulary import Outcome

_INSERT_RUN = text("""
    INSERT INTO analysis_runs (
        session_id, job_id, workspace_id, agent_id, agent_version, used_draft, model,
        requested_model, config_hash, result, input_tokens, output_tokens, cache_read_tokens,
        cache_write_tokens, latency_ms, started_at)
    VALUES (
        :session_id, :job_id, :workspace_id, :agent_id, :agent_version, :used_draft, :model,
        :requested_model, :config_hash, CAST(:result AS jsonb), :input_tokens, :output_tokens,
        :cache_read_tokens, :cache_write_tokens, :latency_ms, :started_at)
    ON CONFLICT (job_id, session_id) WHERE job_id IS NOT NULL DO NOTHING
    RETURNING id
""")

_APPLY_TO_SESSION = text("""
    UPDATE sessions
       SET summary = :summary, successful = :successful, user_sentiment = :user_sentiment,
           custom_analysis_data = CAST(:custom AS jsonb),
           analysis_run_id = :run_id, analysis_started_at = :started_at
     WHERE session_id = :session_id
       AND (analysis_started_at IS NULL OR analysis_started_at <= :started_at)
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
                   billing: Billing) -> Outcome:
    """succeeded, or superseded (our claim is not current) or duplicate (this job already has
    its run for the session)."""
    if not items.finish(tx, claim, "succeeded"):
        return "superseded"
    run_id = _insert_run(tx, claim, provenance, analysis, billing)
    if run_id is None:
        return "duplicate"
    _apply_to_session(tx, claim.session_id, run_id, claim.started_at, analysis)
    return "succeeded"


def _insert_run(tx: Connection, claim: Claim, provenance: Provenance, analysis: Analysis,
                billing: Billing) -> int | None:
    tokens = billing.tokens
    row = tx.execute(_INSERT_RUN, {
        "session_id": claim.session_id, "job_id": claim.job_id,
        "workspace_id": provenance.workspace_id, "agent_id": provenance.agent_id,
        "agent_version": provenance.agent_version, "used_draft": provenance.used_draft,
        "model": provenance.model, "requested_model": provenance.requested_model,
        "config_hash": provenance.config_hash, "result": json.dumps(analysis.document),
        "input_tokens": tokens.input, "output_tokens": tokens.output,
        "cache_read_tokens": tokens.cache_read, "cache_write_tokens": tokens.cache_write,
        "latency_ms": billing.latency_ms, "started_at": claim.started_at,
    }).one_or_none()
    return None if row is None else int(row.id)


def _apply_to_session(tx: Connection, session_id: str, run_id: int, started_at: datetime,
                      analysis: Analysis) -> None:
    tx.execute(_APPLY_TO_SESSION, {
        "session_id": session_id, "summary": analysis.summary,
        "successful": analysis.successful, "user_sentiment": analysis.user_sentiment,
        "custom": json.dumps(analysis.custom), "run_id": run_id, "started_at": started_at,
    })
