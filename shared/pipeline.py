"""The one analysis pipeline, shared by the live task and the batch cycle.

    load-or-skip → resolve the configuration → build the request → (the request travels)
    → interpret the answer → record the outcome (and what the answer was billed)

Live (`worker.service`) and batch (`scheduler.run.batches`) differ only in how the request
travels — one Messages call per session, or a Message Batch polled later — so a batch-mode job
and a live-mode job over the same sessions write the same analyses. Every step that changes a
row goes through `shared.state`; what a failure does next is `shared.retry`'s decision.

Resolving also decides how the result is recorded (`shared.state.trials`): a trial's results
stay in history; a job promoted from a trial that already analysed this session with this very
configuration records the trial's result right there, and no request is sent at all.

Every attempt that ends here is told once, by `_finished`: the `session_finished` log line and
`backfill_sessions_total`; every answer the provider billed is priced once, by
`record_charge`, the step both paths share: against the job's budget (`shared.state.budget`)
and in the token and cost counters (`shared.metrics`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, text

from shared import analysis, llm, metrics, retry
from shared.errors import AnalysisError
from shared.logs import SESSION_FINISHED
from shared.pricing import Tokens, cost_usd
from shared.settings import Settings
from shared.state import budget, items, jobs, runs, trials
from shared.state.items import Claim
from shared.vocabulary import (
    SKIP_DELETED,
    SKIP_NO_TRANSCRIPT,
    SKIP_NOT_CONNECTED,
    Mode,
    Outcome,
)

log = logging.getLogger("backfill.pipeline")


@dataclass(frozen=True)
class SessionData:
    """A session as one job's attempt reads it, in one statement: the session, the versions of
    every agent its configuration may come from, and how the job records its results."""

    session_id: str
    kind: str
    workspace_id: str
    agent_id: str
    status: str | None
    transcript: list[dict[str, Any]]
    agent_transfers: list[dict[str, Any]]
    transfers_json: str
    """`agent_transfers` as Postgres printed it: with `versions_json`, the key of the
    configuration cache."""
    versions_json: str
    """The agents' versions as Postgres printed them, decoded only when the configuration
    cache misses (so an edited draft is a new key, and is seen at once)."""
    job: trials.JobRecording


@dataclass(frozen=True)
class Configured:
    """What a configuration makes of every session that uses it; built once per distinct
    configuration in a process (`configure`), not once per session."""

    config: analysis.EffectiveConfig
    config_hash: str
    static_request: dict[str, Any]
    """The request without the transcript (`analysis.with_transcript` completes it)."""


@dataclass(frozen=True)
class Resolved:
    """A claimed item, its session, the configuration its analysis uses and how the result
    is recorded."""

    claim: Claim
    session: SessionData
    configured: Configured
    recording: trials.Recording

    @property
    def config(self) -> analysis.EffectiveConfig:
        return self.configured.config

    @property
    def config_hash(self) -> str:
        return self.configured.config_hash


@dataclass(frozen=True)
class Prepared:
    """A resolved item with the Messages request to send for it."""

    resolved: Resolved
    request: dict[str, Any]


@dataclass(frozen=True)
class Answer:
    """A validated answer and what the provider billed for it."""

    result: analysis.AnalysisResult
    tokens: Tokens


# --------------------------------------------------------------------------- load


# The agents a session's configuration may come from: its own, then every transfer's target.
_SESSION_AGENTS = """
    SELECT s.agent_id
     UNION
    SELECT t ->> 'to_agent_id'
      FROM jsonb_array_elements(CASE jsonb_typeof(s.agent_transfers)
                                WHEN 'array' THEN s.agent_transfers ELSE '[]' END) AS t
"""

# One round trip for everything an attempt reads before its request: the session (within the
# job's workspace), its agents' versions (ordered, so equal versions print equal text) and the
# job's recording facts.
_LOAD_SESSION = text(f"""
    SELECT s.session_id, s.kind, s.workspace_id, s.agent_id, s.status, s.transcript,
           CAST(coalesce(s.agent_transfers, '[]') AS text) AS transfers_json,
           {trials.IS_TRIAL_SQL} AS trial, j.promoted_from,
           (SELECT CAST(coalesce(json_agg(json_build_array(
                       v.agent_id, v.version, v.is_published, v.kind, v.analysis_model,
                       v.analysis_data) ORDER BY v.agent_id, v.version), '[]') AS text)
              FROM agent_versions AS v
             WHERE v.workspace_id = s.workspace_id
               AND v.agent_id IN ({_SESSION_AGENTS})) AS versions_json
      FROM backfill_jobs AS j
      JOIN sessions AS s ON s.workspace_id = j.workspace_id AND s.session_id = :session_id
     WHERE j.id = :job_id
""")

_LOAD_VERSIONS = text("""
    SELECT agent_id, version, is_published, kind, analysis_model, analysis_data
      FROM agent_versions
     WHERE workspace_id = :workspace_id AND agent_id = ANY(:agent_ids)
""")


def load_session(tx: Connection, job_id: str, session_id: str) -> SessionData | None:
    """The session, within the job's workspace; None when it was deleted."""
    row = tx.execute(_LOAD_SESSION, {"session_id": session_id, "job_id": job_id}).one_or_none()
    if row is None:
        return None
    transfers = json.loads(row.transfers_json)
    return SessionData(
        session_id=row.session_id, kind=row.kind, workspace_id=row.workspace_id,
        agent_id=row.agent_id, status=row.status, transcript=list(row.transcript or []),
        agent_transfers=transfers if isinstance(transfers, list) else [],
        transfers_json=row.transfers_json, versions_json=row.versions_json,
        job=trials.JobRecording(trial=row.trial, promoted_from=row.promoted_from),
    )


def load_agent_versions(
    tx: Connection, workspace_id: str, agent_ids: list[str]
) -> dict[str, list[analysis.AgentVersionInfo]]:
    """The versions of these agents, read at run time, so a rerun always sees the draft as it
    is now (the scheduler's selection and estimates read them the same way)."""
    versions: dict[str, list[analysis.AgentVersionInfo]] = {}
    rows = tx.execute(_LOAD_VERSIONS, {"workspace_id": workspace_id, "agent_ids": agent_ids})
    for row in rows:
        versions.setdefault(row.agent_id, []).append(
            analysis.AgentVersionInfo(
                agent_id=row.agent_id, version=row.version, is_published=row.is_published,
                kind=row.kind, model=row.analysis_model, fields=list(row.analysis_data or []),
            )
        )
    return versions


def skip_reason(session: SessionData | None) -> str | None:
    """DESIGN "Skips": only deleted, not-connected and empty-transcript sessions are skipped."""
    if session is None:
        return SKIP_DELETED
    if session.status == "not_connected":
        return SKIP_NOT_CONNECTED
    if not any(str(turn.get("content") or "").strip() for turn in session.transcript):
        return SKIP_NO_TRANSCRIPT
    return None


def load_or_skip(tx: Connection, claim: Claim) -> SessionData | None:
    """The claimed item's session when there is something to analyse; otherwise the item ends
    `skipped` with the reason and None comes back."""
    session = load_session(tx, claim.job_id, claim.session_id)
    reason = skip_reason(session)
    if session is None or reason is not None:
        skipped = items.finish(tx, claim, "skipped", error=reason)
        _finished(claim, "skipped" if skipped else "superseded", skip_reason=reason)
        return None
    return session


# --------------------------------------------------------------------------- resolve, request


def configure(settings: Settings, session: SessionData) -> Configured:
    """The latest draft configuration, following the session's transfers, with its hash and
    request; raises AnalysisConfigMissing when it cannot be used."""
    return _configured(session.kind, session.agent_id, session.transfers_json,
                       session.versions_json, settings.default_model, settings.llm_max_tokens)


@lru_cache(maxsize=256)
def _configured(kind: str, agent_id: str, transfers_json: str, versions_json: str,
                default_model: str, max_tokens: int) -> Configured:
    """Keyed by everything the configuration is made of, so a hit is exactly what resolving
    again would build (a failure is not cached: it raises each time)."""
    transfers = json.loads(transfers_json)
    config = analysis.resolve_config(
        kind, agent_id, transfers if isinstance(transfers, list) else [],
        _decode_versions(versions_json), default_model)
    return Configured(config, analysis.config_hash(config),
                      analysis.static_request(config, max_tokens))


def _decode_versions(versions_json: str) -> dict[str, list[analysis.AgentVersionInfo]]:
    versions: dict[str, list[analysis.AgentVersionInfo]] = {}
    for agent_id, version, is_published, kind, model, fields in json.loads(versions_json):
        versions.setdefault(agent_id, []).append(analysis.AgentVersionInfo(
            agent_id=agent_id, version=version, is_published=is_published, kind=kind,
            model=model, fields=list(fields or [])))
    return versions


def resolve(tx: Connection, settings: Settings, claim: Claim,
            session: SessionData) -> Resolved | Outcome:
    """The item with its configuration, or the outcome of a configuration that cannot be
    used (config_missing: failed at once)."""
    try:
        configured = configure(settings, session)
    except AnalysisError as exc:
        return record_failure(tx, settings, claim, exc)
    recording = trials.recording_for(tx, session.job, session.session_id,
                                     configured.config_hash)
    return Resolved(claim, session, configured, recording)


def prepare(tx: Connection, settings: Settings, claim: Claim) -> Prepared | Outcome:
    """In the claim's transaction: everything the request needs, or the outcome that ends the
    item here (skipped; failed for a configuration that cannot be used; succeeded with the
    result of the trial this job was promoted from)."""
    session = load_or_skip(tx, claim)
    if session is None:
        return "skipped"
    resolved = resolve(tx, settings, claim, session)
    if isinstance(resolved, str):
        return resolved
    if resolved.recording.reusable is not None:
        return record_reused(tx, resolved, resolved.recording.reusable)
    request = analysis.with_transcript(resolved.configured.static_request, session.transcript)
    return Prepared(resolved, request)


# --------------------------------------------------------------------------- answer, record


def interpret(config: analysis.EffectiveConfig, message: Mapping[str, Any]) -> Answer:
    """A decoded Messages answer, validated against the configuration's schema; raises the
    AnalysisError it means (refusal, cut off, not fitting the schema). What it was billed is
    `record_charge`'s, whatever becomes of the answer."""
    result = analysis.parse_answer(config, llm.answer_text(message))
    return Answer(result, llm.answer_tokens(message))


def _field_types(config: analysis.EffectiveConfig) -> dict[str, str]:
    return {spec.name: spec.type for spec in config.custom_fields}


def record_charge(tx: Connection, settings: Settings, claim: Claim,
                  message: Mapping[str, Any], mode: Mode) -> None:
    """In the outcome's transaction, whatever the outcome: what the provider billed for this
    answer (its usage priced by the table, the batch discount included) goes to the job's
    spend. Every answer the provider sent was billed, also one that does not fit the schema
    and one whose claim was superseded meanwhile."""
    model = str(message.get("model") or settings.default_model)
    tokens = llm.answer_tokens(message)
    price = cost_usd(settings, model, tokens, mode)
    budget.charge(tx, claim, price)
    metrics.count_billed(model, tokens, price)


def record_success(tx: Connection, resolved: Resolved, answer: Answer,
                   latency_ms: int) -> Outcome:
    config, result = resolved.config, answer.result
    provenance = runs.Provenance(
        workspace_id=resolved.session.workspace_id, agent_id=config.agent_id,
        agent_version=config.agent_version, used_draft=config.used_draft, model=config.model,
        requested_model=config.requested_model, config_hash=resolved.config_hash,
        field_types=_field_types(config),
    )
    written = runs.Analysis(
        summary=result.summary, successful=result.successful,
        user_sentiment=result.user_sentiment, custom=result.custom,
        document=analysis.analysis_json(resolved.session.kind, result),
    )
    outcome = runs.record_success(tx, resolved.claim, provenance, written,
                                  runs.Billing(answer.tokens, latency_ms),
                                  apply=resolved.recording.apply)
    _finished(resolved.claim, outcome, model=config.model, latency_ms=latency_ms,
              tokens=answer.tokens)
    return outcome


def record_reused(tx: Connection, resolved: Resolved, trial_run: trials.TrialRun) -> Outcome:
    """The trial's result as this job's run: nothing billed, and the trial run's start time,
    so a run of another job that started after the trial still wins over it."""
    document, kind = trial_run.result, resolved.session.kind
    provenance = runs.Provenance(
        workspace_id=resolved.session.workspace_id, agent_id=trial_run.agent_id,
        agent_version=trial_run.agent_version, used_draft=trial_run.used_draft,
        model=trial_run.model, requested_model=trial_run.requested_model,
        config_hash=resolved.config_hash, field_types=trial_run.field_types,
    )
    written = runs.Analysis(
        summary=document[f"{kind}_summary"], successful=document[f"{kind}_successful"],
        user_sentiment=document["user_sentiment"], custom=document[analysis.CUSTOM_KEY],
        document=document,
    )
    outcome = runs.record_success(tx, resolved.claim, provenance, written,
                                  runs.Billing(Tokens(), 0), apply=resolved.recording.apply,
                                  started_at=trial_run.started_at)
    _finished(resolved.claim, outcome, model=trial_run.model, latency_ms=0, tokens=Tokens())
    return outcome


def record_failure(tx: Connection, settings: Settings, claim: Claim, exc: AnalysisError,
                   *, model: str | None = None) -> Outcome:
    """In the caller's transaction, what `shared.retry` decides: paused, retry or failed.
    `model` is the one the request went to, when there was a request."""
    decision = retry.decide(settings, claim.attempt, exc)
    outcome: Outcome = "failed"
    if decision.action == "pause":
        jobs.pause_running(tx, claim.job_id, f"{exc.kind}: {items.clip(str(exc))}")
        items.give_back_uncounted(tx, claim, exc.kind, str(exc))
        outcome = "paused"
    elif decision.action == "retry":
        items.retry_later(tx, claim, exc.kind, str(exc), decision.delay_s)
        outcome = "retry"
    else:
        items.finish(tx, claim, "failed", exc.kind, str(exc))
    _finished(claim, outcome, error_kind=exc.kind, model=model,
              retry_in_s=round(decision.delay_s, 3) if outcome == "retry" else None)
    return outcome


# --------------------------------------------------------------------------- telling


def _finished(claim: Claim, outcome: Outcome, *, error_kind: str | None = None,
              model: str | None = None, latency_ms: int | None = None,
              tokens: Tokens | None = None, **details: Any) -> None:
    """One attempt ended: the `session_finished` line (DESIGN's fields; null where they do
    not apply) and the session counter. Never the error's message: it may quote the answer."""
    metrics.count_session(outcome, error_kind, model)
    level = logging.WARNING if outcome in ("failed", "paused") else logging.INFO
    log.log(level, SESSION_FINISHED, extra={
        "job_id": claim.job_id, "session_id": claim.session_id, "outcome": outcome,
        "error_kind": error_kind, "attempt": claim.attempt, "model": model,
        "latency_ms": latency_ms,
        "input_tokens": tokens.input if tokens else None,
        "output_tokens": tokens.output if tokens else None,
        "cache_read_tokens": tokens.cache_read if tokens else None,
        "cache_write_tokens": tokens.cache_write if tokens else None,
        **{key: value for key, value in details.items() if value is not None},
    })
