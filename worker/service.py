"""Analyse one session of one job: claim, prepare, ask the LLM, record (`shared.pipeline`).

Two short transactions per session, none held open during the LLM call: the claim commits
first, together with reading the session and resolving its configuration; the outcome is
written in a second one that fences on the claim's attempt number. What each error kind does
next is `shared.retry`'s decision. When Postgres itself is away nothing can be recorded: the
item stays `queued` (claim failed) or `running` (its lease is no longer renewed), and the
scheduler's reconciler sends it again.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared import errors, metrics, pipeline
from shared.pipeline import Prepared
from shared.state import items
from shared.state.items import Claim
from shared.vocabulary import LIVE, Outcome
from worker.context import WorkerContext
from worker.llm import Reply

log = logging.getLogger("backfill.worker")

# Errors that mean "Postgres is unreachable or too slow right now" (a restart, a failover, a
# statement timeout, an exhausted pool), as opposed to a bug in a statement.
DB_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout)


def analyze_session(ctx: WorkerContext, job_id: str, session_id: str) -> Outcome:
    """Returns the outcome (for logs and tests): succeeded, skipped, failed, retry, paused,
    not_claimed, superseded, duplicate, db_unavailable, abandoned. The pipeline counts the
    outcomes it records; the ones that record nothing are counted here."""
    try:
        prepared = claim_and_prepare(ctx, job_id, session_id)
    except DB_UNAVAILABLE as exc:
        # Nothing was committed, so the item is still `queued`, and this message is
        # acknowledged: the reconciler sees a queued item that no message carries any more
        # and sends it again.
        _log_db_error("cannot claim", job_id, session_id, exc)
        metrics.count_session("db_unavailable", "db_unavailable", None)
        return "db_unavailable"
    if prepared == "not_claimed":
        metrics.count_session("not_claimed", None, None)
    if isinstance(prepared, str):
        return prepared
    with _holding(ctx, prepared.resolved.claim):
        return run_and_record(ctx, prepared)


def claim_and_prepare(ctx: WorkerContext, job_id: str, session_id: str) -> Prepared | Outcome:
    """Claim, read the session and resolve its configuration in one short transaction (one
    round of checkout, BEGIN and COMMIT fewer per session than claiming on its own)."""
    with ctx.db.transaction() as tx:
        claim = items.claim(tx, job_id, session_id, ctx.settings.lease_s)
        if claim is None:
            items.release_unclaimable(tx, job_id, session_id)
            return "not_claimed"
        return pipeline.prepare(tx, ctx.settings, claim)


def run_and_record(ctx: WorkerContext, prepared: Prepared) -> Outcome:
    """The LLM call and its outcome, for a claim this process holds."""
    claim = prepared.resolved.claim
    reply: Reply | None = None
    try:
        reply = ctx.caller.complete(prepared.request)
        return _interpret_and_write(ctx, prepared, reply)
    except errors.AnalysisError as exc:
        failure = exc
    except DB_UNAVAILABLE as exc:
        failure = errors.DatabaseUnavailable(f"database unavailable: {_db_error_name(exc)}")
    model = prepared.resolved.config.model
    try:
        with ctx.db.transaction() as tx:
            if reply is not None:  # an answer came (and was billed) but could not be used
                pipeline.record_charge(tx, ctx.settings, claim, reply.message, LIVE)
            return pipeline.record_failure(tx, ctx.settings, claim, failure, model=model)
    except DB_UNAVAILABLE as exc:
        # The failure cannot be written either. Leaving `_holding` stops the heartbeat, so the
        # lease lapses and the reconciler re-dispatches the item (the attempt stays counted).
        _log_db_error("cannot record the failure", claim.job_id, claim.session_id, exc)
        metrics.count_session("abandoned", failure.kind, model)
        return "abandoned"


def _interpret_and_write(ctx: WorkerContext, prepared: Prepared, reply: Reply) -> Outcome:
    """The answer of the LLM call (made outside any transaction), written in a second short
    transaction with what it was billed."""
    answer = pipeline.interpret(prepared.resolved.config, reply.message)
    with ctx.db.transaction() as tx:
        pipeline.record_charge(tx, ctx.settings, prepared.resolved.claim, reply.message, LIVE)
        return pipeline.record_success(tx, prepared.resolved, answer, reply.latency_ms)


def _holding(ctx: WorkerContext, claim: Claim) -> AbstractContextManager[None]:
    """The heartbeat renews the claim's lease for as long as the task holds it."""
    return ctx.leases.holding(claim) if ctx.leases is not None else nullcontext()


def _db_error_name(exc: Exception) -> str:
    """The driver error's class only: a statement's text and parameters stay out of logs."""
    return type(getattr(exc, "orig", None) or exc).__name__


def _log_db_error(what: str, job_id: str, session_id: str, exc: Exception) -> None:
    log.warning("%s: database unavailable (%s); the reconciler re-dispatches the item",
                what, _db_error_name(exc), extra={"job_id": job_id, "session_id": session_id})
