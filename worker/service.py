"""Analyse one session of one job: claim, resolve the configuration, ask the LLM, write back.

Two short transactions per session, none held open during the LLM call: the claim commits
first, together with reading the session and resolving its configuration; the result is
written in a second one that fences on the claim's attempt number.

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
from sqlalchemy import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared import analysis, errors, results
from shared.db import Database
from shared.results import retry_delay_s
from shared.settings import Settings
from worker import llm, store
from worker.leases import LeaseKeeper

log = logging.getLogger("backfill.worker")

__all__ = ["DB_UNAVAILABLE", "Plan", "Started", "WorkerContext", "analyze_session", "prepare",
           "retry_delay_s"]

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


@dataclass(frozen=True)
class Started:
    """A claimed item with everything its LLM call needs, read in the claim's transaction."""

    claim: store.Claim
    session: store.SessionData
    plan: Plan


def analyze_session(ctx: WorkerContext, job_id: str, session_id: str) -> str:
    """Returns the outcome (for logs and tests): succeeded, skipped, failed, retry, paused,
    not_claimed, superseded, db_unavailable, abandoned."""
    try:
        started = _claim_and_prepare(ctx, job_id, session_id)
    except DB_UNAVAILABLE as exc:
        # Nothing was committed, so the item is still `queued`, and this message is
        # acknowledged: the reconciler sees a queued item that no message carries any more
        # and sends it again.
        _log_db_error("cannot claim", job_id, session_id, exc)
        return "db_unavailable"
    if isinstance(started, str):
        return started
    with _holding(ctx, started.claim):
        return _run_and_record(ctx, started)


def _claim_and_prepare(ctx: WorkerContext, job_id: str, session_id: str) -> Started | str:
    """Claim, read the session and resolve its configuration in one short transaction (one
    round of checkout, BEGIN and COMMIT fewer per session than claiming on its own)."""
    with ctx.db.transaction() as tx:
        claim = store.claim_item(tx, job_id, session_id, ctx.settings.lease_s)
        if claim is None:
            store.release_unclaimable(tx, job_id, session_id)
            return "not_claimed"
        return prepare(ctx, tx, claim)


def prepare(ctx: WorkerContext, tx: Connection, claim: store.Claim) -> Started | str:
    """In the claim's transaction: the session and its plan, or the outcome that ends the item
    here (skipped; failed, retried or paused for a configuration that cannot be used)."""
    session = results.load_or_skip(tx, claim)
    if session is None:
        return "skipped"
    try:
        return Started(claim, session, _plan(ctx, tx, session))
    except errors.AnalysisError as exc:
        return results.handle_failure(tx, ctx.settings, claim, exc)


def _holding(ctx: WorkerContext, claim: store.Claim) -> AbstractContextManager[None]:
    """The heartbeat renews the claim's lease for as long as the task holds it."""
    return ctx.leases.holding(claim) if ctx.leases is not None else nullcontext()


def _run_and_record(ctx: WorkerContext, started: Started) -> str:
    try:
        return _call_and_write(ctx, started)
    except errors.AnalysisError as exc:
        failure = exc
    except DB_UNAVAILABLE as exc:
        failure = errors.DatabaseUnavailable(f"database unavailable: {_db_error_name(exc)}")
    try:
        return results.record_failure(ctx.db, ctx.settings, started.claim, failure)
    except DB_UNAVAILABLE as exc:
        # The failure cannot be written either. Leaving `_holding` stops the heartbeat, so the
        # lease lapses and the reconciler re-dispatches the item (the attempt stays counted).
        _log_db_error("cannot record the failure", started.claim.job_id,
                      started.claim.session_id, exc)
        return "abandoned"


def _db_error_name(exc: Exception) -> str:
    """The driver error's class only: a statement's text and parameters stay out of logs."""
    return type(getattr(exc, "orig", None) or exc).__name__


def _log_db_error(what: str, job_id: str, session_id: str, exc: Exception) -> None:
    log.warning("%s: database unavailable (%s); the reconciler re-dispatches the item",
                what, _db_error_name(exc), extra={"job_id": job_id, "session_id": session_id})


def _call_and_write(ctx: WorkerContext, started: Started) -> str:
    """The LLM call, outside any transaction; then the result in a second short one."""
    reply = llm.complete(ctx.client, started.plan.request)
    result = analysis.parse_answer(started.plan.config, reply.text)
    with ctx.db.transaction() as tx:
        return results.write_success(tx, started.claim, started.session, started.plan.config,
                                     result, reply)


def _plan(ctx: WorkerContext, tx: Connection, session: store.SessionData) -> Plan:
    config = results.resolve_config(tx, ctx.settings, session)
    request = analysis.build_request(config, session.transcript, ctx.settings.llm_max_tokens)
    return Plan(config=config, request=request)
