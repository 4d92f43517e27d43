"""`backfill` — the operator CLI. Read verbs take --json (stdout holds only the JSON)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from scheduler import operations, planner, progress, queries
from scheduler.runtime import load_filters_argument, open_database, resolve_settings
from shared.errors import InvalidInput, NotFound

app = typer.Typer(help="Post-call analysis backfill.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

T = TypeVar("T")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only (to stdout).")]
Workspace = Annotated[str, typer.Option("--workspace", "-w", help="Workspace id.")]
Kind = Annotated[str, typer.Option("--kind", help="call or chat.")]
Filters = Annotated[str, typer.Option("--filters", help="JSON array of rows, or @file.")]


def guarded(action: Callable[[], T]) -> T:
    """Bad input exits 2 with one clear line; a missing object exits 1. Never a traceback."""
    try:
        return action()
    except InvalidInput as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except NotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def emit(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, default=str))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply Alembic migrations up to head."""
    from shared.migrate import upgrade_to_head

    settings = resolve_settings()
    upgrade_to_head(settings.require_database_url())
    typer.echo("database schema is at head", err=True)


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="JSONL file of agents, calls and chats.")],
    as_json: JsonFlag = False,
) -> None:
    """Import agents, calls and chats (validated whole first; re-import changes nothing)."""
    from shared.importer import import_batch, parse_import_file

    batch = guarded(lambda: parse_import_file(file))
    settings = resolve_settings()
    summary = guarded(lambda: import_batch(open_database(settings), batch))
    document = summary.as_dict()
    if as_json:
        emit(document)
    else:
        typer.echo(", ".join(f"{key}: {value}" for key, value in document.items()))


@app.command()
def preview(workspace: Workspace, kind: Kind, filters: Filters, as_json: JsonFlag = False) -> None:
    """Count the sessions the filters match."""
    settings = resolve_settings()
    raw = guarded(lambda: load_filters_argument(filters))
    matched = guarded(lambda: planner.preview(open_database(settings), settings,
                                              workspace, kind, raw))
    emit({"matched": matched}) if as_json else typer.echo(f"{matched} sessions match")


@app.command()
def create(
    workspace: Workspace,
    kind: Kind,
    filters: Filters,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until done.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a backfill job; the scheduler dispatches it."""
    settings = resolve_settings()
    raw = guarded(lambda: load_filters_argument(filters))
    db = open_database(settings)
    created = guarded(lambda: planner.create_job(
        db, settings, workspace, kind, raw, idempotency_key=idempotency_key,
        created_by=_operator(),
    ))
    if wait:
        progress.follow(db, created.job_id)
    _print_job(db, created.job_id, as_json)


@app.command("list")
def list_jobs(
    workspace: Annotated[str | None, typer.Option("--workspace", "-w")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Recent jobs, newest first."""
    db = open_database(resolve_settings())
    with db.transaction() as tx:
        jobs = queries.list_jobs(tx, workspace)
    if as_json:
        emit(jobs)
    else:
        progress.print_job_table(jobs)


@app.command()
def show(job_id: str, as_json: JsonFlag = False) -> None:
    """One job: state, counts by item state, error kinds."""
    _print_job(open_database(resolve_settings()), job_id, as_json)


@app.command()
def watch(job_id: str, as_json: JsonFlag = False) -> None:
    """Live progress until the job is terminal (completed, cancelled or paused)."""
    db = open_database(resolve_settings())
    guarded(lambda: progress.follow(db, job_id))
    _print_job(db, job_id, as_json)


@app.command()
def session(session_id: str, as_json: JsonFlag = False) -> None:
    """A session's current analysis and its provenance."""
    db = open_database(resolve_settings())
    with db.transaction() as tx:
        document = guarded(lambda: queries.session_json(tx, session_id))
    emit(document) if as_json else progress.print_session(document)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c")] = None,
    pool: Annotated[str, typer.Option("--pool")] = "threads",
) -> None:
    """Run a Celery worker (threads pool; extra options after -- go to celery)."""
    settings = resolve_settings(need_broker=True)
    threads = concurrency or settings.worker_concurrency
    os.environ["BACKFILL_WORKER_CONCURRENCY"] = str(threads)
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", pool,
            "--concurrency", str(threads), "--queues", settings.queue_name,
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", *ctx.args]
    os.execv(sys.executable, argv)


@app.command()
def scheduler() -> None:
    """Run the dispatcher and reconciler until SIGTERM/SIGINT."""
    from scheduler.dispatcher import Dispatcher
    from shared.celery_app import make_celery

    settings = resolve_settings(need_broker=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    dispatcher = Dispatcher(open_database(settings), make_celery(settings), settings)
    typer.echo("scheduler running", err=True)
    dispatcher.run_forever(stop)


@app.command("llm-stub")
def llm_stub(
    port: Annotated[int, typer.Option("--port")] = 8765,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    latency_ms: Annotated[int, typer.Option("--latency-ms")] = 0,
) -> None:
    """Serve the local Anthropic-compatible stand-in."""
    from shared.llm_stub import serve

    serve(host=host, port=port, latency_ms=latency_ms)


@app.command()
def demo(
    sessions: Annotated[int, typer.Option("--sessions")] = 2400,
    concurrency: Annotated[int, typer.Option("--concurrency")] = 32,
) -> None:
    """Set up everything and run a real backfill end to end."""
    from scheduler.demo import run_demo

    run_demo(sessions=sessions, concurrency=concurrency)


Reason = Annotated[str | None, typer.Option("--reason", help="Why (kept on the job).")]


@app.command()
def failed(job_id: str, as_json: JsonFlag = False) -> None:
    """Failed items of a job: session, error kind, message, attempts."""
    db = open_database(resolve_settings())
    with db.transaction() as tx:
        items = guarded(lambda: operations.failed_items(tx, job_id))
    if as_json:
        emit(items)
    else:
        progress.print_failed(items)


@app.command()
def requeue(
    job_id: str,
    error_kind: Annotated[list[str] | None, typer.Option("--error-kind")] = None,
    session_id: Annotated[list[str] | None, typer.Option("--session")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    reason: Reason = None,
    as_json: JsonFlag = False,
) -> None:
    """Failed items back to pending; a completed job runs again."""
    db = open_database(resolve_settings())
    count = guarded(lambda: operations.requeue(
        db, job_id, error_kinds=error_kind, session_ids=session_id, dry_run=dry_run,
        reason=reason))
    if as_json:
        emit({"requeued": count, "dry_run": dry_run})
    else:
        typer.echo(f"{'would requeue' if dry_run else 'requeued'} {count} items")


@app.command()
def pause(job_id: str, reason: Reason = None) -> None:
    """Stop dispatching a job (in-flight calls finish)."""
    _operate(operations.pause, job_id, reason)


@app.command()
def resume(job_id: str, reason: Reason = None) -> None:
    """Dispatch a paused job again."""
    _operate(operations.resume, job_id, reason)


@app.command()
def cancel(job_id: str, reason: Reason = None) -> None:
    """Cancel a job: its pending and queued items end as cancelled."""
    _operate(operations.cancel, job_id, reason)


@app.command()
def rerun(
    session_id: str,
    wait: Annotated[bool, typer.Option("--wait")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Re-analyse one session now with the latest draft configuration."""
    settings = resolve_settings()
    db = open_database(settings)
    job_id = guarded(lambda: operations.rerun_session(db, settings, session_id, _operator()))
    if not wait:
        _print_job(db, job_id, as_json)
        return
    progress.follow(db, job_id)
    with db.transaction() as tx:
        document = queries.session_json(tx, session_id)
    emit(document) if as_json else progress.print_session(document)


def _operate(action: Callable[[Any, str, str | None], str], job_id: str,
             reason: str | None) -> None:
    db = open_database(resolve_settings())
    state = guarded(lambda: action(db, job_id, reason))
    typer.echo(f"{job_id}: {state}")


def _print_job(db: Any, job_id: str, as_json: bool) -> None:
    with db.transaction() as tx:
        document = guarded(lambda: queries.job_json(tx, job_id))
    emit(document) if as_json else progress.print_job(document)


def _operator() -> str:
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


if __name__ == "__main__":
    app()
