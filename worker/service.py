"""Analyse one session of one job: claim, resolve the configuration, ask the LLM, write back.

No database transaction is held open during the LLM call: the claim commits first, the result
is written in a second, short transaction that also fences on the claim's attempt number.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Any

import anthropic
from sqlalchemy.exc import DBAPIError

from shared import analysis, errors
from shared.db import Database
from shared.settings import Settings
from worker import llm, store

log = logging.getLogger("backfill.worker")


@dataclass
class WorkerContext:
    """What a task needs; built once per worker process."""

    settings: Settings
    db: Database
    client: anthropic.Anthropic


@dataclass(frozen=True)
class Plan:
    config: analysis.EffectiveConfig
    request: dict[str, Any]


def analyze_session(ctx: WorkerContext, job_id: str, session_id: str) -> str:
    """Returns the outcome (for logs and tests): succeeded, skipped, failed, retry, ..."""
    with ctx.db.transaction() as tx:
        claim = store.claim_item(tx, job_id, session_id, ctx.settings.lease_s)
        if claim is None:
            store.release_unclaimable(tx, job_id, session_id)
            return "not_claimed"
    try:
        return _run_claimed(ctx, claim)
    except errors.AnalysisError as exc:
        return _handle_failure(ctx, claim, exc)
    except DBAPIError as exc:
        # The lease still holds the item; if this write fails too, the reconciler recovers it.
        wrapped = errors.DatabaseUnavailable(f"database error: {type(exc.orig).__name__}")
        return _handle_failure(ctx, claim, wrapped)


def _run_claimed(ctx: WorkerContext, claim: store.Claim) -> str:
    with ctx.db.transaction() as tx:
        session = store.load_session(tx, claim.job_id, claim.session_id)
        skip_reason = _skip_reason(session)
        if session is None or skip_reason is not None:
            store.finish_item(tx, claim, "skipped", error=skip_reason)
            return "skipped"
        plan = _plan(ctx, tx, session)
    reply = llm.complete(ctx.client, plan.request)
    result = analysis.parse_answer(plan.config, reply.text)
    return _write_success(ctx, claim, session, plan.config, result, reply)


def _skip_reason(session: store.SessionData | None) -> str | None:
    if session is None:
        return "session deleted"
    if session.status == "not_connected":
        return "not connected"
    if not any(str(turn.get("content") or "").strip() for turn in session.transcript):
        return "no transcript"
    return None


def _plan(ctx: WorkerContext, tx: Any, session: store.SessionData) -> Plan:
    agent_ids = [session.agent_id] + [
        str(t.get("to_agent_id")) for t in session.agent_transfers if t.get("to_agent_id")
    ]
    versions = store.load_agent_versions(tx, session.workspace_id, agent_ids)
    config = analysis.resolve_config(
        session.kind, session.agent_id, session.agent_transfers, versions,
        ctx.settings.default_model,
    )
    request = analysis.build_request(config, session.transcript, ctx.settings.llm_max_tokens)
    return Plan(config=config, request=request)


def _write_success(
    ctx: WorkerContext,
    claim: store.Claim,
    session: store.SessionData,
    config: analysis.EffectiveConfig,
    result: analysis.AnalysisResult,
    reply: llm.LLMReply,
) -> str:
    with ctx.db.transaction() as tx:
        if not store.finish_item(tx, claim, "succeeded"):
            return "superseded"
        run_id = store.insert_run(tx, _run_params(claim, session, config, result, reply))
        if run_id is None:
            return "duplicate"
        store.update_session_analysis(tx, {
            "session_id": claim.session_id, "summary": result.summary,
            "successful": result.successful, "user_sentiment": result.user_sentiment,
            "custom": json.dumps(result.custom), "run_id": run_id,
            "started_at": claim.started_at,
        })
    return "succeeded"


def _run_params(
    claim: store.Claim,
    session: store.SessionData,
    config: analysis.EffectiveConfig,
    result: analysis.AnalysisResult,
    reply: llm.LLMReply,
) -> dict[str, Any]:
    return {
        "session_id": claim.session_id, "job_id": claim.job_id,
        "workspace_id": session.workspace_id, "agent_id": config.agent_id,
        "agent_version": config.agent_version, "used_draft": config.used_draft,
        "model": config.model, "requested_model": config.requested_model,
        "config_hash": analysis.config_hash(config),
        "result": json.dumps(analysis.analysis_json(session.kind, result)),
        "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
        "cache_read_tokens": reply.cache_read_tokens,
        "cache_write_tokens": reply.cache_write_tokens,
        "latency_ms": reply.latency_ms, "started_at": claim.started_at,
    }


def _handle_failure(ctx: WorkerContext, claim: store.Claim, exc: errors.AnalysisError) -> str:
    log.warning(
        "analysis failed", extra={"job_id": claim.job_id, "session_id": claim.session_id,
                                  "error_kind": exc.kind, "attempt": claim.attempt},
    )
    with ctx.db.transaction() as tx:
        if exc.job_fatal:
            store.pause_job_for(tx, claim, exc.kind, str(exc))
            return "paused"
        if exc.retryable and claim.attempt < _attempt_cap(ctx.settings, exc):
            delay = retry_delay_s(ctx.settings, claim.attempt, exc.retry_after_s)
            store.retry_later(tx, claim, exc.kind, str(exc), delay)
            return "retry"
        store.finish_item(tx, claim, "failed", exc.kind, str(exc))
        return "failed"


def _attempt_cap(settings: Settings, exc: errors.AnalysisError) -> int:
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
