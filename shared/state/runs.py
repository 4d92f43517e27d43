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

_LOCK_CURRENT = text(f"""
    SELECT {CURRENT_ANALYSIS} AS analysis, s.analysis_run_id
      FROM sessions AS s WHERE s.session_id = :session_id
       FOR UPDATE
""")

_INSERT_RUN = text("""
    INSERT INTO analysis_runs (
        session_id, job_id, workspace_id, agent_id, agent_version, used_draft, model,
        requested_model, config_hash, result, input_tokens, output_tokens, cache_read_tokens,
        cache_write_tokens, latency_ms, started_at, before, before_run_id, field_types, applied)
    VALUES (
        :session_id, :job_id, :workspace_id, :agent_id, :agent_version, :used_draft, :model,
        :requested_model, :config_hash, CAST(:result AS jsonb), :input_tokens, :output_tokens,
        :cache_read_tokens, :cache_write_tokens, :latency_ms, :started_at,
        CAST(:before AS jsonb), :before_run_id, CAST(:field_types AS jsonb), :applied)
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
    field_types: dict[str, str]
    """Custom field name -> type in that configuration (the change report's field types)."""


@dataclass(frozen=True)
class Before:
    """The session's analysis a run found, and the run that had written it (None: the
    imported one)."""

    document: dict[str, Any]
    run_id: int | None


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
    # The session is locked before the item is finished: the order of every success write.
    before = _lock_current(tx, claim.session_id)
    if before is None:
        return "skipped" if items.finish(tx, claim, "skipped", error=SKIP_DELETED) \
            else "superseded"
    if not items.finish(tx, claim, "succeeded"):
        return "superseded"
    started = started_at or claim.started_at
    run_id = _insert_run(tx, claim, provenance, analysis, billing,
                         _Written(before, apply, started))
    if run_id is None:
        return "duplicate"
    if apply:
        _apply_to_session(tx, claim.session_id, run_id, started, analysis)
    return "succeeded"


def _lock_current(tx: Connection, session_id: str) -> Before | None:
    row = tx.execute(_LOCK_CURRENT, {"session_id": session_id}).one_or_none()
    return None if row is None else Before(row.analysis, row.analysis_run_id)


@dataclass(frozen=True)
class _Written:
    before: Before
    applied: bool
    started_at: datetime


def _insert_run(tx: Connection, claim: Claim, provenance: Provenance, analysis: Analysis,
                billing: Billing, written: _Written) -> int | None:
    tokens = billing.tokens
    row = tx.execute(_INSERT_RUN, {
        "session_id": claim.session_id, "job_id": claim.job_id,
        "workspace_id": provenance.workspace_id, "agent_id": provenance.agent_id,
        "agent_version": provenance.agent_version, "used_draft": provenance.used_draft,
        "model": provenance.model, "requested_model": provenance.requested_model,
        "config_hash": provenance.config_hash, "result": json.dumps(analysis.document),
        "input_tokens": tokens.input, "output_tokens": tokens.output,
        "cache_read_tokens": tokens.cache_read, "cache_write_tokens": tokens.cache_write,
        "latency_ms": billing.latency_ms, "started_at": written.started_at,
        "before": json.dumps(written.before.document), "before_run_id": written.before.run_id,
        "field_types": json.dumps(provenance.field_types), "applied": written.applied,
    }).one_or_none()
    return None if row is None else int(row.id)


def _apply_to_session(tx: Connection, session_id: str, run_id: int, started_at: datetime,
                      analysis: Analysis) -> None:
    tx.execute(_APPLY_TO_SESSION, {
        "session_id": session_id, "summary": analysis.summary,
        "successful": analysis.successful, "user_sentiment": analysis.user_sentiment,
        "custom": json.dumps(analysis.custom), "run_id": run_id, "started_at": started_at,
    })
