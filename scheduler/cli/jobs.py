"""Job verbs: import, preview, create, list, show, watch, session, failed, requeue, pause,
resume, cancel, rerun. Read verbs take --json (stdout then holds only the JSON)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scheduler.cli.common import (
    Filters,
    JsonFlag,
    Kind,
    Limit,
    Reason,
    RequiredReason,
    SampleRate,
    SkipCurrent,
    Trial,
    Workspace,
    app,
    emit,
    guarded,
    required_reason,
)
from scheduler.cli.runtime import load_filters_argument, open_database, resolve_settings
from shared.errors import InvalidInput
from shared.vocabulary import BATCH, LIVE, Mode

if TYPE_CHECKING:
    from shared.db import Database
    from shared.settings import Settings


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="JSONL file of agents, calls and chats.")],
    as_json: JsonFlag = False,
) -> None:
    """Import agents, calls and chats (validated whole first; re-import changes nothing)."""
    from scheduler.jobs.importer import import_batch, parse_import_file

    batch = guarded(lambda: parse_import_file(file))
    settings = resolve_settings()
    summary = guarded(lambda: import_batch(open_database(settings), batch))
    document = summary.as_dict()
    if as_json:
        emit(document)
    else:
        typer.echo(", ".join(f"{key}: {value}" for key, value in document.items()))


@app.command()
def preview(
    workspace: Workspace,
    kind: Kind,
    filters: Filters,
    sample_rate: SampleRate = None,
    limit: Limit = None,
    skip_current: SkipCurrent = False,
    trial: Trial = None,
    mode: Annotated[str, typer.Option(
        "--mode", help="Price the estimate for live calls (live) or the Message Batches API "
        "(batch).")] = LIVE,
    as_json: JsonFlag = False,
) -> None:
    """Count the sessions a job with these filters and options would take, and estimate
    its tokens and cost."""
    from scheduler.jobs.estimates import preview_estimate

    settings = resolve_settings()
    raw = guarded(lambda: load_filters_argument(filters))
    options = _options(sample_rate, limit, skip_current, trial)
    priced_as = guarded(lambda: _pricing_mode(mode))
    document = guarded(lambda: preview_estimate(
        open_database(settings), settings, workspace, kind, raw, options=options,
        mode=priced_as))
    emit(document) if as_json else typer.echo(_preview_text(document))


def _options(sample_rate: float | None, limit: int | None, skip_current: bool,
             trial: int | None) -> dict[str, Any]:
    # Unset options go as null (= default), so the planner validates one JSON shape.
    return {"sample_rate": sample_rate, "limit": limit, "skip_current": skip_current,
            "trial_size": trial}


def _pricing_mode(mode: str) -> Mode:
    if mode == BATCH:
        return BATCH
    if mode != LIVE:
        raise InvalidInput(f"--mode: must be live or batch, not {mode!r}")
    return LIVE


def _preview_text(document: dict[str, Any]) -> str:
    estimate = document["estimate"]
    basis = estimate["basis"]
    if "basis_reason" in estimate:
        basis += f": {estimate['basis_reason']}"
    return (f"{document['matched']} sessions match; estimated {estimate['input_tokens']:,} "
            f"input and {estimate['output_tokens']:,} output tokens, "
            f"${estimate['usd']:,.2f} ({estimate['mode']}; basis {basis})")


# Read as text, so a value that is not a number gets the same one-line error as one that is
# out of range (Typer's own would be a box).
MaxCostUsd = Annotated[str | None, typer.Option(
    "--max-cost-usd", help="Budget cap in USD: the job pauses before it would spend more.")]


def parse_cost_flag(value: str | None) -> float | None:
    """`--max-cost-usd`: a number of USD above 0."""
    from scheduler.jobs.options import parse_max_cost_usd

    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise InvalidInput(f"--max-cost-usd: must be a number of USD greater than 0, "
                           f"got {value[:40]!r}") from None
    return parse_max_cost_usd(number, "--max-cost-usd")


@app.command()
def create(
    workspace: Workspace,
    kind: Kind,
    filters: Filters,
    sample_rate: SampleRate = None,
    limit: Limit = None,
    skip_current: SkipCurrent = False,
    trial: Trial = None,
    max_cost_usd: MaxCostUsd = None,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    mode: Annotated[str | None, typer.Option(
        "--mode", help="live (a task per session) or batch (Message Batches API); default: "
        "batch above BACKFILL_BATCH_AUTO_THRESHOLD matched sessions.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until done.")] = False,
    reason: Reason = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a backfill job; the scheduler dispatches it."""
    from scheduler.jobs import audit, operations

    cap = guarded(lambda: parse_cost_flag(max_cost_usd))
    settings = resolve_settings()
    raw = guarded(lambda: load_filters_argument(filters))
    options = _options(sample_rate, limit, skip_current, trial) | {"max_cost_usd": cap}
    db = open_database(settings)
    created = guarded(lambda: operations.create_job(
        db, settings, workspace, kind, raw, actor=audit.os_actor(), options=options,
        idempotency_key=idempotency_key, reason=reason, mode=mode,
    ))
    if wait:
        _follow(db, settings, created.job_id)
    print_job(db, settings, created.job_id, as_json)


@app.command("list")
def list_jobs(
    workspace: Annotated[str | None, typer.Option("--workspace", "-w")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Recent jobs, newest first."""
    from scheduler.jobs import documents

    settings = resolve_settings()
    with open_database(settings).transaction() as tx:
        jobs = documents.list_jobs(tx, settings, workspace)
    if as_json:
        emit(jobs)
    else:
        from scheduler.cli import render

        render.print_job_table(jobs)


@app.command()
def show(job_id: str, as_json: JsonFlag = False) -> None:
    """One job: state, counts by item state, error kinds."""
    settings = resolve_settings()
    print_job(open_database(settings), settings, job_id, as_json)


@app.command()
def watch(job_id: str, as_json: JsonFlag = False) -> None:
    """Live progress until the job is terminal (completed, cancelled or paused)."""
    settings = resolve_settings()
    db = open_database(settings)
    guarded(lambda: _follow(db, settings, job_id))
    print_job(db, settings, job_id, as_json)


@app.command()
def session(session_id: str, as_json: JsonFlag = False) -> None:
    """A session's current analysis and its provenance."""
    from scheduler.jobs import documents

    db = open_database(resolve_settings())
    with db.transaction() as tx:
        document = guarded(lambda: documents.session_json(tx, session_id))
    _print_session(document, as_json)


@app.command()
def failed(job_id: str, as_json: JsonFlag = False) -> None:
    """Failed items of a job: session, error kind, message, attempts."""
    from scheduler.jobs import operations

    db = open_database(resolve_settings())
    with db.transaction() as tx:
        items = guarded(lambda: operations.failed_items(tx, job_id))
    if as_json:
        emit(items)
    else:
        from scheduler.cli import render

        render.print_failed(items)


@app.command()
def requeue(
    job_id: str,
    error_kind: Annotated[list[str] | None, typer.Option("--error-kind")] = None,
    session_id: Annotated[list[str] | None, typer.Option("--session")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; change nothing.")] = False,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="Why (required unless --dry-run; kept in the audit trail).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Failed items back to pending; a completed job runs again."""
    from scheduler.jobs import audit, operations

    # A dry run changes nothing and is not audited, so it needs no reason.
    reason = reason if dry_run else guarded(lambda: required_reason(reason))
    db = open_database(resolve_settings())
    count = guarded(lambda: operations.requeue(
        db, job_id, actor=audit.os_actor(), error_kinds=error_kind, session_ids=session_id,
        dry_run=dry_run, reason=reason))
    if as_json:
        emit({"requeued": count, "dry_run": dry_run})
    else:
        typer.echo(f"{'would requeue' if dry_run else 'requeued'} {count} items")


@app.command()
def pause(job_id: str, reason: RequiredReason) -> None:
    """Stop dispatching a job (in-flight calls finish)."""
    from scheduler.jobs import operations

    _operate(operations.pause, job_id, reason)


@app.command()
def resume(job_id: str, reason: RequiredReason, max_cost_usd: MaxCostUsd = None) -> None:
    """Dispatch a paused job again (with --max-cost-usd: under a new budget cap)."""
    from scheduler.jobs import audit, operations

    cap = guarded(lambda: parse_cost_flag(max_cost_usd))
    reason = guarded(lambda: required_reason(reason))
    settings = resolve_settings()
    db = open_database(settings)
    state = guarded(lambda: operations.resume(db, job_id, actor=audit.os_actor(), reason=reason,
                                              settings=settings, max_cost_usd=cap))
    typer.echo(f"{job_id}: {state}")


@app.command()
def cancel(job_id: str, reason: RequiredReason) -> None:
    """Cancel a job: its pending and queued items end as cancelled."""
    from scheduler.jobs import operations

    _operate(operations.cancel, job_id, reason)


@app.command()
def rerun(
    session_id: str,
    wait: Annotated[bool, typer.Option("--wait")] = False,
    reason: Reason = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-analyse one session now with the latest draft configuration."""
    from scheduler.jobs import audit, documents, operations

    settings = resolve_settings()
    db = open_database(settings)
    job_id = guarded(lambda: operations.rerun_session(
        db, settings, session_id, actor=audit.os_actor(), reason=reason))
    if not wait:
        print_job(db, settings, job_id, as_json)
        return
    _follow(db, settings, job_id)
    with db.transaction() as tx:
        document = documents.session_json(tx, session_id)
    _print_session(document, as_json)


def _operate(action: Callable[..., str], job_id: str, reason: str) -> None:
    from scheduler.jobs import audit

    reason = guarded(lambda: required_reason(reason))
    db = open_database(resolve_settings())
    state = guarded(lambda: action(db, job_id, actor=audit.os_actor(), reason=reason))
    typer.echo(f"{job_id}: {state}")


def _follow(db: Database, settings: Settings, job_id: str) -> dict[str, Any]:
    from scheduler.cli import render

    return render.follow(db, settings, job_id)


def _print_session(document: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(document)
        return
    from scheduler.cli import render

    render.print_session(document)


def print_job(db: Database, settings: Settings, job_id: str, as_json: bool) -> None:
    from scheduler.jobs import documents

    with db.transaction() as tx:
        document = guarded(lambda: documents.job_json(tx, settings, job_id))
    if as_json:
        emit(document)
        return
    from scheduler.cli import render

    render.print_job(document)
    typer.echo(_usage_text(document.get("usage") or {}))
    typer.echo(_spend_text(document))


def _spend_text(document: dict[str, Any]) -> str:
    spend = document.get("spend") or {}
    cap = document.get("max_cost_usd")
    text = f"spend: ${spend.get('spent_usd', 0.0):,.4f}"
    text += " (no cap)" if cap is None else (
        f" of a ${cap:,.4f} cap, ${spend.get('reserved_usd', 0.0):,.4f} reserved in flight")
    if document.get("pause_reason"):
        text += f"; paused: {document['pause_reason']}"
    return text


def _usage_text(usage: dict[str, Any]) -> str:
    return (f"usage: {usage.get('input_tokens', 0):,} input, "
            f"{usage.get('output_tokens', 0):,} output, "
            f"{usage.get('cache_read_tokens', 0):,} cache read, "
            f"{usage.get('cache_write_tokens', 0):,} cache write tokens; "
            f"${usage.get('cost_usd', 0.0):,.4f}")
