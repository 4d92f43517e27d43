"""The one write path of an analysis, shared by the live worker and the batch cycle.

Both modes end an item the same way, so a batch-mode job and a live-mode job over the same
sessions write the same analyses:

- **success**: finish the item (fenced on the claim's attempt), insert the `analysis_runs`
  row, update the session's current analysis unless a later-started run already wrote it;
- **failure**: the retry policy decides (DESIGN "Error kinds"): transient kinds go back to
  `pending` with a `not_before` time (exponential backoff, full jitter, never before
  `retry-after`) until the attempt cap; `llm_invalid_output` up to its own smaller cap;
  permanent kinds fail at once; job-fatal kinds pause the job without charging an attempt.

Every state change is conditional on the state we expect (`running` at our attempt), so a
second delivery, or a run whose lease was taken over, changes nothing.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import anthropic
from sqlalchemy import Connection, text

from shared import analysis, errors
from shared.db import Database
from shared.settings import Settings

log = logging.getLogger("backfill.results")


@dataclass(frozen=True)
class Claim:
    job_id: str
    session_id: str
    attempt: int
    started_at: datetime


@dataclass(frozen=True)
class SessionData:
    session_id: str
    kind: str
    workspace_id: str
    agent_id: str
    status: str | None
    transcript: list[dict[str, Any]]
    agent_transfers: list[dict[str, Any]]


class RunUsage(Protocol):
    """What a run records about the LLM call (the worker's LLMReply has these attributes)."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def latency_ms(self) -> int: ...


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    latency_ms: int


# --------------------------------------------------------------------------- loading


_LOAD_SESSION = text("""
    SELECT session_id, kind, workspace_id, agent_id, status, transcript, agent_transfers
      FROM sessions AS s
     WHERE s.session_id = :session_id
       AND s.workspace_id = (SELECT workspace_id FROM backfill_jobs WHERE id = :job_id)
""")


def load_session(db: Connection, job_id: str, session_id: str) -> SessionData | None:
    row = db.execute(_LOAD_SESSION, {"session_id": session_id, "job_id": job_id}).one_or_none()
    if row is None:
        return None
    return SessionData(
        session_id=row.session_id, kind=row.kind, workspace_id=row.workspace_id,
        agent_id=row.agent_id, status=row.status, transcript=list(row.transcript or []),
        agent_transfers=list(row.agent_transfers or []),
    )


_LOAD_VERSIONS = text("""
    SELECT agent_id, version, is_published, kind, analysis_model, analysis_data
      FROM agent_versions
     WHERE workspace_id = :workspace_id AND agent_id = ANY(:agent_ids)
""")


def load_agent_versions(
    db: Connection, workspace_id: str, agent_ids: list[str]
) -> dict[str, list[analysis.AgentVersionInfo]]:
    """Read at run time, so a rerun always sees the draft as it is now."""
    versions: dict[str, list[analysis.AgentVersionInfo]] = {}
    rows = db.execute(_LOAD_VERSIONS, {"workspace_id": workspace_id, "agent_ids": agent_ids})
    for row in rows:
        versions.setdefault(row.agent_id, []).append(
            analysis.AgentVersionInfo(
                agent_id=row.agent_id, version=row.version, is_published=row.is_published,
                kind=row.kind, model=row.analysis_model, fields=list(row.analysis_data or []),
            )
        )
    return versions


def skip_reason(session: SessionData | None) -> str | None:
    if session is None:
        return "session deleted"
    if session.status == "not_connected":
        return "not connected"
    if not any(str(turn.get("content") or "").strip() for turn in session.transcript):
        return "no transcript"
    return None


def load_or_skip(db: Connection, claim: Claim) -> SessionData | None:
    """The claimed item's session when there is something to analyse; otherwise the item ends
    `skipped` with the reason (deleted, not connected, no transcript) and None comes back."""
    session = load_session(db, claim.job_id, claim.session_id)
    reason = skip_reason(session)
    if session is None or reason is not None:
        finish_item(db, claim, "skipped", error=reason)
        return None
    return session


def resolve_config(
    tx: Connection, settings: Settings, session: SessionData
) -> analysis.EffectiveConfig:
    """The latest draft configuration, following the session's transfers."""
    agent_ids = [session.agent_id] + [
        str(t.get("to_agent_id")) for t in session.agent_transfers if t.get("to_agent_id")
    ]
    versions = load_agent_versions(tx, session.workspace_id, agent_ids)
    return analysis.resolve_config(
        session.kind, session.agent_id, session.agent_transfers, versions,
        settings.default_model,
    )


# --------------------------------------------------------------------------- the answer


def message_text(message: Any) -> str:
    """The text of a Messages answer, or the AnalysisError its stop reason means."""
    if message.stop_reason == "refusal":
        raise errors.LLMRefusal("the model refused to analyse this session")
    if message.stop_reason == "max_tokens":
        raise errors.LLMInvalidOutput("the answer was cut off at max_tokens")
    texts = [block.text for block in message.content if block.type == "text"]
    if not texts:
        raise errors.LLMInvalidOutput("the answer has no text block")
    return "".join(texts)


def message_usage(message: Any, latency_ms: int) -> Usage:
    usage = message.usage
    return Usage(
        input_tokens=usage.input_tokens or 0, output_tokens=usage.output_tokens or 0,
        cache_read_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
        cache_write_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0,
        latency_ms=latency_ms,
    )


# Anthropic error types (the `error.type` of an error body) → the item's error kinds.
_ERROR_TYPES: dict[str, type[errors.AnalysisError]] = {
    "invalid_request_error": errors.LLMBadRequest,
    "request_too_large": errors.LLMBadRequest,
    "not_found_error": errors.LLMBadRequest,
    "authentication_error": errors.LLMAuth,
    "permission_error": errors.LLMAuth,
    "billing_error": errors.LLMBilling,
    "rate_limit_error": errors.LLMRateLimited,
    "overloaded_error": errors.LLMOverloaded,
    "timeout_error": errors.LLMTimeout,
    "api_error": errors.LLMServerError,
}


def error_for_type(error_type: str | None, message: str) -> errors.AnalysisError:
    """An unknown type is a server-side problem: transient, retried."""
    error_class = _ERROR_TYPES.get(error_type or "", errors.LLMServerError)
    return error_class(f"{error_type or 'error'}: {message}")


# SDK errors, as the error kinds they mean (live calls and batch calls alike).

_STATUS_ERRORS: dict[int, type[errors.AnalysisError]] = {
    400: errors.LLMBadRequest,
    401: errors.LLMAuth,
    402: errors.LLMBilling,
    403: errors.LLMAuth,
    413: errors.LLMBadRequest,
    429: errors.LLMRateLimited,
    529: errors.LLMOverloaded,
}


def wrap_api_error(exc: anthropic.APIError) -> errors.AnalysisError:
    """Map an SDK error to the item's error kind; keep the provider's message, not the prompt."""
    if isinstance(exc, anthropic.APITimeoutError):
        return errors.LLMTimeout(f"no answer within the client timeout: {exc.message}")
    if isinstance(exc, anthropic.APIConnectionError):
        return errors.LLMConnection(f"cannot reach the LLM provider: {exc.message}")
    if isinstance(exc, anthropic.APIStatusError):
        return _wrap_status_error(exc)
    return errors.LLMServerError(f"unexpected LLM error: {exc.message}")


def _wrap_status_error(exc: anthropic.APIStatusError) -> errors.AnalysisError:
    status = exc.status_code
    if _error_type(exc) == "billing_error":
        return errors.LLMBilling(f"{status}: {exc.message}")
    error_class = _STATUS_ERRORS.get(status)
    if error_class is None:
        error_class = errors.LLMServerError if status >= 500 else errors.LLMBadRequest
    return error_class(f"{status}: {exc.message}", retry_after_s=_retry_after(exc))


def _error_type(exc: anthropic.APIStatusError) -> str | None:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- success


_FINISH = text("""
    UPDATE backfill_items
       SET state = :state, error_kind = :error_kind, error = :error,
           finished_at = clock_timestamp(), lease_expires_at = NULL
     WHERE job_id = :job_id AND session_id = :session_id
       AND state = 'running' AND attempts = :attempt
 RETURNING 1
""")


def finish_item(
    db: Connection, claim: Claim, state: str, error_kind: str | None = None,
    error: str | None = None,
) -> bool:
    """False when our claim was superseded (lease expired and the item was sent again)."""
    params = {
        "state": state, "error_kind": error_kind, "error": clip(error),
        "job_id": claim.job_id, "session_id": claim.session_id, "attempt": claim.attempt,
    }
    return db.execute(_FINISH, params).one_or_none() is not None


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

_UPDATE_SESSION_ANALYSIS = text("""
    UPDATE sessions
       SET summary = :summary, successful = :successful, user_sentiment = :user_sentiment,
           custom_analysis_data = CAST(:custom AS jsonb),
           analysis_run_id = :run_id, analysis_started_at = :started_at
     WHERE session_id = :session_id
       AND (analysis_started_at IS NULL OR analysis_started_at <= :started_at)
""")


def insert_run(db: Connection, params: dict[str, Any]) -> int | None:
    """None when this (job, session) already has its successful run."""
    row = db.execute(_INSERT_RUN, params).one_or_none()
    return None if row is None else int(row.id)


def update_session_analysis(db: Connection, params: dict[str, Any]) -> None:
    """A run that started earlier than the current analysis's run never overwrites it."""
    db.execute(_UPDATE_SESSION_ANALYSIS, params)


def write_success(
    tx: Connection,
    claim: Claim,
    session: SessionData,
    config: analysis.EffectiveConfig,
    result: analysis.AnalysisResult,
    usage: RunUsage,
) -> str:
    """In the caller's transaction; returns succeeded, superseded or duplicate."""
    if not finish_item(tx, claim, "succeeded"):
        return "superseded"
    run_id = insert_run(tx, run_params(claim, session, config, result, usage))
    if run_id is None:
        return "duplicate"
    update_session_analysis(tx, {
        "session_id": claim.session_id, "summary": result.summary,
        "successful": result.successful, "user_sentiment": result.user_sentiment,
        "custom": json.dumps(result.custom), "run_id": run_id,
        "started_at": claim.started_at,
    })
    return "succeeded"


def run_params(
    claim: Claim,
    session: SessionData,
    config: analysis.EffectiveConfig,
    result: analysis.AnalysisResult,
    usage: RunUsage,
) -> dict[str, Any]:
    return {
        "session_id": claim.session_id, "job_id": claim.job_id,
        "workspace_id": session.workspace_id, "agent_id": config.agent_id,
        "agent_version": config.agent_version, "used_draft": config.used_draft,
        "model": config.model, "requested_model": config.requested_model,
        "config_hash": analysis.config_hash(config),
        "result": json.dumps(analysis.analysis_json(session.kind, result)),
        "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "latency_ms": usage.latency_ms, "started_at": claim.started_at,
    }


# --------------------------------------------------------------------------- failure


_RETRY_LATER = text("""
    UPDATE backfill_items
       SET state = 'pending', error_kind = :error_kind, error = :error,
           not_before = clock_timestamp() + make_interval(secs => :delay_s),
           lease_expires_at = NULL, queued_at = NULL
     WHERE job_id = :job_id AND session_id = :session_id
       AND state = 'running' AND attempts = :attempt
""")


def retry_later(db: Connection, claim: Claim, error_kind: str, error: str, delay_s: float) -> None:
    db.execute(_RETRY_LATER, {
        "error_kind": error_kind, "error": clip(error), "delay_s": delay_s,
        "job_id": claim.job_id, "session_id": claim.session_id, "attempt": claim.attempt,
    })


_PAUSE_JOB = text("""
    UPDATE backfill_jobs SET state = 'paused', state_reason = :reason
     WHERE id = :job_id AND state = 'running'
""")

_UNCOUNT_ATTEMPT = text("""
    UPDATE backfill_items
       SET state = 'pending', attempts = attempts - 1, error_kind = :error_kind, error = :error,
           lease_expires_at = NULL, queued_at = NULL
     WHERE job_id = :job_id AND session_id = :session_id
       AND state = 'running' AND attempts = :attempt
""")


def pause_job_for(db: Connection, claim: Claim, error_kind: str, error: str) -> None:
    """Job-fatal errors pause the whole job; this item is not charged an attempt."""
    reason = f"{error_kind}: {clip(error)}"
    db.execute(_PAUSE_JOB, {"job_id": claim.job_id, "reason": reason})
    db.execute(_UNCOUNT_ATTEMPT, {
        "error_kind": error_kind, "error": clip(error),
        "job_id": claim.job_id, "session_id": claim.session_id, "attempt": claim.attempt,
    })


def handle_failure(tx: Connection, settings: Settings, claim: Claim,
                   exc: errors.AnalysisError) -> str:
    """In the caller's transaction; returns paused, retry or failed."""
    log.warning(
        "analysis failed", extra={"job_id": claim.job_id, "session_id": claim.session_id,
                                  "error_kind": exc.kind, "attempt": claim.attempt},
    )
    if exc.job_fatal:
        pause_job_for(tx, claim, exc.kind, str(exc))
        return "paused"
    if exc.retryable and claim.attempt < attempt_cap(settings, exc):
        delay = retry_delay_s(settings, claim.attempt, exc.retry_after_s)
        retry_later(tx, claim, exc.kind, str(exc), delay)
        return "retry"
    finish_item(tx, claim, "failed", exc.kind, str(exc))
    return "failed"


def record_failure(db: Database, settings: Settings, claim: Claim,
                   exc: errors.AnalysisError) -> str:
    with db.transaction() as tx:
        return handle_failure(tx, settings, claim, exc)


def attempt_cap(settings: Settings, exc: errors.AnalysisError) -> int:
    if isinstance(exc, errors.LLMInvalidOutput):
        return settings.invalid_output_attempts
    return settings.max_attempts


def retry_delay_s(settings: Settings, attempt: int, retry_after_s: float | None) -> float:
    """Exponential backoff with full jitter, never shorter than the provider's retry-after."""
    ceiling = min(settings.retry_cap_s, settings.retry_base_s * (2 ** max(attempt - 1, 0)))
    delay = random.uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, settings.retry_cap_s)


def clip(message: str | None, limit: int = 2000) -> str | None:
    return None if message is None else message[:limit]
