"""The one analysis pipeline, shared by the live task and the batch cycle.

    load-or-skip → resolve the configuration → build the request → (the request travels)
    → interpret the answer → record the outcome (and what the answer was billed)

Live (`worker.service`) and batch (`scheduler.run.batches`) differ only in how the request
travels — one Messages call per session, or a Message Batch polled later — so a batch-mode job
and a live-mode job over the same sessions write the same analyses. Every step that changes a
row goes through `shared.state`; what a failure does next is `shared.retry`'s decision.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from shared import analysis, llm, retry
from shared.errors import AnalysisError
from shared.pricing import Tokens, cost_usd
from shared.settings import Settings
from shared.state import budget, items, jobs, runs
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
    session_id: str
    kind: str
    workspace_id: str
    agent_id: str
    status: str | None
    transcript: list[dict[str, Any]]
    agent_transfers: list[dict[str, Any]]


@dataclass(frozen=True)
class Resolved:
    """A claimed item, its session and the configuration its analysis uses."""

    claim: Claim
    session: SessionData
    config: analysis.EffectiveConfig


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


_LOAD_SESSION = text("""
    SELECT session_id, kind, workspace_id, agent_id, status, transcript, agent_transfers
      FROM sessions AS s
     WHERE s.session_id = :session_id
       AND s.workspace_id = (SELECT workspace_id FROM backfill_jobs WHERE id = :job_id)
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
    return SessionData(
        session_id=row.session_id, kind=row.kind, workspace_id=row.workspace_id,
        agent_id=row.agent_id, status=row.status, transcript=list(row.transcript or []),
        agent_transfers=list(row.agent_transfers or []),
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
        items.finish(tx, claim, "skipped", error=reason)
        return None
    return session


# --------------------------------------------------------------------------- resolve, request


def resolve_config(tx: Connection, settings: Settings,
                   session: SessionData) -> analysis.EffectiveConfig:
    """The latest draft configuration, following the session's transfers."""
    agent_ids = [session.agent_id] + [
        str(t.get("to_agent_id")) for t in session.agent_transfers if t.get("to_agent_id")
    ]
    versions = load_agent_versions(tx, session.workspace_id, agent_ids)
    return analysis.resolve_config(
        session.kind, session.agent_id, session.agent_transfers, versions,
        settings.default_model,
    )


def resolve(tx: Connection, settings: Settings, claim: Claim,
            session: SessionData) -> Resolved | Outcome:
    """The item with its configuration, or the outcome of a configuration that cannot be
    used (config_missing: failed at once)."""
    try:
        return Resolved(claim, session, resolve_config(tx, settings, session))
    except AnalysisError as exc:
        return record_failure(tx, settings, claim, exc)


def prepare(tx: Connection, settings: Settings, claim: Claim) -> Prepared | Outcome:
    """In the claim's transaction: everything the request needs, or the outcome that ends the
    item here (skipped; failed for a configuration that cannot be used)."""
    session = load_or_skip(tx, claim)
    if session is None:
        return "skipped"
    resolved = resolve(tx, settings, claim, session)
    if isinstance(resolved, str):
        return resolved
    request = analysis.build_request(resolved.config, session.transcript,
                                     settings.llm_max_tokens)
    return Prepared(resolved, request)


# --------------------------------------------------------------------------- answer, record


def interpret(config: analysis.EffectiveConfig, message: Mapping[str, Any]) -> Answer:
    """A decoded Messages answer, validated against the configuration's schema; raises the
    AnalysisError it means (refusal, cut off, not fitting the schema)."""
    result = analysis.parse_answer(config, llm.answer_text(message))
    return Answer(result, llm.answer_tokens(message))


def record_charge(tx: Connection, settings: Settings, claim: Claim,
                  message: Mapping[str, Any], mode: Mode) -> None:
    """In the outcome's transaction, whatever the outcome: what the provider billed for this
    answer (its usage priced by the table, the batch discount included) goes to the job's
    spend. Every answer the provider sent was billed, also one that does not fit the schema
    and one whose claim was superseded meanwhile."""
    model = str(message.get("model") or settings.default_model)
    budget.charge(tx, claim, cost_usd(settings, model, llm.answer_tokens(message), mode))


def record_success(tx: Connection, resolved: Resolved, answer: Answer,
                   latency_ms: int) -> Outcome:
    config, result = resolved.config, answer.result
    provenance = runs.Provenance(
        workspace_id=resolved.session.workspace_id, agent_id=config.agent_id,
        agent_version=config.agent_version, used_draft=config.used_draft, model=config.model,
        requested_model=config.requested_model, config_hash=analysis.config_hash(config),
    )
    written = runs.Analysis(
        summary=result.summary, successful=result.successful,
        user_sentiment=result.user_sentiment, custom=result.custom,
        document=analysis.analysis_json(resolved.session.kind, result),
    )
    return runs.record_success(tx, resolved.claim, provenance, written,
                               runs.Billing(answer.tokens, latency_ms))


def record_failure(tx: Connection, settings: Settings, claim: Claim,
                   exc: AnalysisError) -> Outcome:
    """In the caller's transaction, what `shared.retry` decides: paused, retry or failed."""
    log.warning(
        "analysis failed", extra={"job_id": claim.job_id, "session_id": claim.session_id,
                                  "error_kind": exc.kind, "attempt": claim.attempt},
    )
    decision = retry.decide(settings, claim.attempt, exc)
    if decision.action == "pause":
        jobs.pause_running(tx, claim.job_id, f"{exc.kind}: {items.clip(str(exc))}")
        items.give_back_uncounted(tx, claim, exc.kind, str(exc))
        return "paused"
    if decision.action == "retry":
        items.retry_later(tx, claim, exc.kind, str(exc), decision.delay_s)
        return "retry"
    items.finish(tx, claim, "failed", exc.kind, str(exc))
    return "failed"
