"""Analyse one session of one job: claim, resolve the configuration, ask the LLM, write back.

No database transaction is held open during the LLM call: the claim commits first, the result
is written in a second, short transaction that also fences on the claim's attempt number.

What happens to each error kind (DESIGN "Error kinds") is decided in
`shared.results.handle_failure`, the write path the batch cycle shares: transient kinds go
back to `pending` with a `not_before` time (exponential backoff, full jitter, never before
`retry-after`) until the attempt cap; `llm_invalid_output` likewise up to its own smaller cap;
permanent kinds fail at once; job-fatal kinds pause the job. When
Postgres itself is away, nothing can be recorded: the item stays `queued` (claim failed) or
`running` (its lease is no longer renewed), and the scheduler's reconciler sends it again.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import anthropic
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared import analysis, errors, results
from shared.db import Database
from shared.results import retry_delay_s
from shared.settings import Settings
from worker import llm, store
from worker.leases import LeaseKeeper

log = logging.getLogger("backfill.worker")

__all__ = ["DB_UNAVAILABLE", "Plan", "WorkerContext", "analyze_session", "retry_delay_s"]

# Errors that mean "Postgres is unreachable or too slow right now" (a restart, a failover, a
# statement timeout, an exhausted pool), as opposed to a bug in a statement.
DB_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)


@dataclass
class WorkerContext:
    """What a task needs; built once per worker process."""

    settings: Settings
    db: Database
    client: anthropic.Anthropic
    leases: LeaseKeeper | None = None


@dataclass(frozen=True)
class Plan:
    config: analysis.EffectiveConfig
    request: dict[str, Any]


def analyze_session(ctx: WorkerContext, job_id: str, session_id: str) -> str:
    """Returns the outcome (for logs and tests): succeeded, skipped, failed, retry, paused,
    not_claimed, superseded, db_unavailable, abandoned."""
    try:
        claim = _claim(ctx, job_id, session_id)
    except DB_UNAVAILABLE as exc:
        # Still `queued`, and this message is acknowledged: the reconciler sees a queued item
        # that no message carries any more and sends it again.
        _log_db_error("cannot claim", job_id, session_id, exc)
        return "db_unavailable"
    if claim is None:
        return "not_claimed"
    with _holding(ctx, claim):
        return _run_and_record(ctx, claim)


def _claim(ctx: WorkerContext, job_id: str, session_id: str) -> store.Claim | None:
    with ctx.db.transaction() as tx:
        claim = store.claim_item(tx, job_id, session_id, ctx.settings.lease_s)
        if claim is None:
            store.release_unclaimable(tx, job_id, session_id)
        return claim


def _holding(ctx: WorkerContext, claim: store.Claim) -> AbstractContextManager[None]:
    """The heartbeat renews the claim's lease for as long as the task holds it."""
    return ctx.leases.holding(claim) if ctx.leases is not None else nullcontext()


def _run_and_record(ctx: WorkerContext, claim: store.Claim) -> str:
    try:
        return _run_claimed(ctx, claim)
    except errors.AnalysisError as exc:
        failure = exc
    except DB_UNAVAILABLE as exc:
        failure = errors.DatabaseUnavailable(f"database unavailable: {_db_error_name(exc)}")
    try:
        return _handle_failure(ctx, claim, failure)
    except DB_UNAVAILABLE as exc:
        # The failure cannot be written either. Leaving `_holding` stops the heartbeat, so the
        # lease lapses and the reconciler re-dispatches the item (the attempt stays counted).
        _log_db_error("cannot record the failure", claim.job_id, claim.session_id, exc)
        return "abandoned"


def _db_error_name(exc: Exception) -> str:
    """The driver error's class only: a statement's text and parameters stay out of logs."""
    return type(getattr(exc, "orig", None) or exc).__name__


def _log_db_error(what: str, job_id: str, session_id: str, exc: Exception) -> None:
    log.warning("%s: database unavailable (%s); the reconciler re-dispatches the item",
                what, _db_error_name(exc), extra={"job_id": job_id, "session_id": session_id})


def _run_claimed(ctx: WorkerContext, claim: store.Claim) -> str:
    with ctx.db.transaction() as tx:
        session = store.load_session(tx, claim.job_id, claim.session_id)
        skip_reason = results.skip_reason(session)
        if session is None or skip_reason is not None:
            store.finish_item(tx, claim, "skipped", error=skip_reason)
            return "skipped"
        plan = _plan(ctx, tx, session)
    reply = llm.complete(ctx.client, plan.request)
    result = analysis.parse_answer(plan.config, reply.text)
    with ctx.db.transaction() as tx:
        return results.write_success(tx, claim, session, plan.config, result, reply)


def _plan(ctx: WorkerContext, tx: Any, session: store.SessionData) -> Plan:
    config = results.resolve_config(tx, ctx.settings, session)
    request = analysis.build_request(config, session.transcript, ctx.settings.llm_max_tokens)
    return Plan(config=config, request=request)


def _handle_failure(ctx: WorkerContext, claim: store.Claim, exc: errors.AnalysisError) -> str:
    return results.record_failure(ctx.db, ctx.settings, claim, exc)
