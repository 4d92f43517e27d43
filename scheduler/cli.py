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

from scheduler import audit, operations, planner, progress, queries
from scheduler.runtime import load_filters_argument, open_database, resolve_settings
from shared.errors import InvalidInput, NotFound
from shared.pricing import Mode

app = typer.Typer(help="Post-call analysis backfill.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

T = TypeVar("T")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only (to stdout).")]
Workspace = Annotated[str, typer.Option("--workspace", "-w", help="Workspace id.")]
Kind = Annotated[str, typer.Option("--kind", help="call or chat.")]
Filters = Annotated[str, typer.Option("--filters", help="JSON array of rows, or @file.")]
# Job options shared by preview and create (preview counts what create would take).
SampleRate = Annotated[float | None, typer.Option(
    "--sample-rate", help="Deterministic sample by session id, 0 < r ≤ 1.")]
Limit = Annotated[int | None, typer.Option("--limit", help="At most N sessions, newest first.")]
SkipCurrent = Annotated[bool, typer.Option(
    "--skip-current", help="Leave out sessions already analysed with the current configuration.")]


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
def preview(
    workspace: Workspace,
    kind: Kind,
    filters: Filters,
    sample_rate: SampleRate = None,
    limit: Limit = None,
    skip_current: SkipCurrent = False,
    mode: Annotated[str, typer.Option(
        "--mode", help="Price the estimate for live calls (live) or the Message Batches API "
        "(batch).")] = "live",
    as_json: JsonFlag = False,
) -> None:
    """Count the sessions a job with these filters and options would take, and estimate
    its tokens and cost."""
    settings = resolve_settings()
    raw = guarded(lambda: load_filters_argument(filters))
    # Unset options go as null (= default), so the planner validates one JSON shape.
    options = {"sample_rate": sample_rate, "limit": limit, "skip_current": skip_current}
    priced_as = guarded(lambda: _pricing_mode(mode))
    document = guarded(lambda: planner.preview_estimate(
        open_database(settings), settings, workspace, kind, raw, options=options,
        mode=priced_as))
    emit(document) if as_json else typer.echo(_preview_text(document))


def _pricing_mode(mode: str) -> Mode:
    if mode == "batch":
        return "batch"
    if mode != "live":
        raise InvalidInput(f"--mode: must be live or batch, not {mode!r}")
    return "live"


def _preview_text(document: dict[str, Any]) -> str:
    estimate = document["estimate"]
    return (f"{document['matched']} sessions match; estimated {estimate['input_tokens']:,} "
            f"input and {estimate['output_tokens']:,} output tokens, "
            f"${estimate['usd']:,.2f} ({estimate['mode']})")


@app.command()
def create(
    workspace: Workspace,
    kind: Kind,
    filters: Filters,
    sample_rate: SampleRate = None,
    limit: Limit = None,
    skip_current: SkipCurrent = False,
    idempotency_key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    mode: Annotated[str | None, typer.Option(
        "--mode", help="live (a task per session) or batch (Message Batches API); default: "
        "batch above BACKFILL_BATCH_AUTO_THRESHOLD matched sessions.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until done.")] = False,
    reason: Reason = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a backfill job; the scheduler dispatches it."""
    settings = resolve_settings()
    raw = guarded(lambda: load_filters_argument(filters))
    options = {"sample_rate": sample_rate, "limit": limit, "skip_current": skip_current}
    db = open_database(settings)
    created = guarded(lambda: operations.create_job(
        db, settings, workspace, kind, raw, actor=audit.os_actor(), options=options,
        idempotency_key=idempotency_key, reason=reason, mode=mode,
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
    """Run the dispatcher and reconciler until SIGTERM/SIGINT, while holding the leader lock."""
    from scheduler.dispatcher import Dispatcher
    from scheduler.leader import run_while_leader
    from shared.celery_app import make_celery

    settings = resolve_settings(need_broker=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    dispatcher = Dispatcher(open_database(settings), make_celery(settings), settings)
    typer.echo("scheduler running", err=True)
    run_while_leader(settings, dispatcher.tick, stop)


@app.command("llm-stub")
def llm_stub(
    port: Annotated[int, typer.Option("--port")] = 8765,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    latency_ms: Annotated[int, typer.Option("--latency-ms")] = 0,
    fault: Annotated[list[str] | None, typer.Option(
        "--fault", metavar="FAULT=RATE", help="Fail this share of requests with FAULT: an HTTP "
        "status, reset, hang, malformed_json, refusal or max_tokens. Repeatable.")] = None,
    fail_session: Annotated[list[str] | None, typer.Option(
        "--fail-session", metavar="ID=FAULT",
        help="Always answer FAULT when the prompt holds session_id=ID. Repeatable.")] = None,
    error_rate: Annotated[float, typer.Option("--error-rate")] = 0.0,
    error_status: Annotated[int, typer.Option("--error-status")] = 529,
    retry_after: Annotated[float, typer.Option("--retry-after", help="retry-after of 429s.")] = 1.0,
    hang_s: Annotated[float, typer.Option("--hang-s", help="How long a hang lasts.")] = 30.0,
    rpm_limit: Annotated[int, typer.Option(
        "--rpm-limit", help="At most N requests per sliding window (429 beyond); 0 = none.")] = 0,
    rl_window_s: Annotated[float, typer.Option(
        "--rl-window-s", help="The window of --rpm-limit, in seconds.")] = 60.0,
) -> None:
    """Serve the local Anthropic-compatible stand-in (faults change at runtime: POST /_faults)."""
    from scheduler.dev.llm_stub import FaultConfig, faults_from_flags, serve

    def faults() -> FaultConfig:
        try:
            return faults_from_flags(
                error_rate=error_rate, error_status=error_status, fail_sessions=fail_session or [],
                rates=fault or [], retry_after_s=retry_after, hang_s=hang_s)
        except ValueError as exc:  # a bad flag exits 2 with one line, like every other verb
            raise InvalidInput(str(exc)) from exc

    serve(host=host, port=port, latency_ms=latency_ms, faults=guarded(faults),
          rpm_limit=rpm_limit, rl_window_s=rl_window_s)


@app.command()
def demo(
    sessions: Annotated[int, typer.Option("--sessions")] = 2400,
    concurrency: Annotated[int, typer.Option("--concurrency")] = 32,
) -> None:
    """Set up everything and run a real backfill end to end."""
    from scheduler.demo import run_demo

    run_demo(sessions=sessions, concurrency=concurrency)


Reason = Annotated[str | None, typer.Option(
    "--reason", help="Why (kept in the job's audit trail).")]
RequiredReason = Annotated[str, typer.Option(
    "--reason", help="Why (required; kept in the job's audit trail).")]


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
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; change nothing.")] = False,
    reason: Annotated[str | None, typer.Option(
        "--reason", help="Why (required unless --dry-run; kept in the audit trail).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Failed items back to pending; a completed job runs again."""
    # A dry run changes nothing and is not audited, so it needs no reason.
    reason = reason if dry_run else guarded(lambda: _required_reason(reason))
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
    _operate(operations.pause, job_id, reason)


@app.command()
def resume(job_id: str, reason: RequiredReason) -> None:
    """Dispatch a paused job again."""
    _operate(operations.resume, job_id, reason)


@app.command()
def cancel(job_id: str, reason: RequiredReason) -> None:
    """Cancel a job: its pending and queued items end as cancelled."""
    _operate(operations.cancel, job_id, reason)


@app.command()
def rerun(
    session_id: str,
    wait: Annotated[bool, typer.Option("--wait")] = False,
    reason: Reason = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-analyse one session now with the latest draft configuration."""
    settings = resolve_settings()
    db = open_database(settings)
    job_id = guarded(lambda: operations.rerun_session(
        db, settings, session_id, actor=audit.os_actor(), reason=reason))
    if not wait:
        _print_job(db, job_id, as_json)
        return
    progress.follow(db, job_id)
    with db.transaction() as tx:
        document = queries.session_json(tx, session_id)
    emit(document) if as_json else progress.print_session(document)


@app.command()
def probe(
    component: Annotated[str, typer.Argument(help="worker or scheduler.")],
    destination: Annotated[str | None, typer.Option(
        "--destination", help="Worker node name (default celery@HOSTNAME).")] = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Worker ping timeout.")] = 5.0,
    max_age_s: Annotated[float, typer.Option(
        "--max-age", help="Oldest acceptable scheduler heartbeat, seconds.")] = 60.0,
) -> None:
    """Container health check for a worker or a scheduler: exit 0 healthy, 1 not."""
    from scheduler import probes
    from scheduler.leader import LeaderSettings
    from shared.settings import get_settings

    # Never resolve_settings() here: a probe must not start embedded servers.
    if component == "worker":
        result = probes.probe_worker(get_settings(), destination or probes.default_worker_name(),
                                     timeout_s)
    elif component == "scheduler":
        result = probes.probe_scheduler(LeaderSettings().heartbeat_file, max_age_s)
    else:
        typer.echo(f"error: unknown component {component!r} (worker or scheduler)", err=True)
        raise typer.Exit(2)
    typer.echo(result.message, err=True)
    raise typer.Exit(0 if result.healthy else 1)


def _operate(action: Callable[..., str], job_id: str, reason: str) -> None:
    reason = guarded(lambda: _required_reason(reason))
    db = open_database(resolve_settings())
    state = guarded(lambda: action(db, job_id, actor=audit.os_actor(), reason=reason))
    typer.echo(f"{job_id}: {state}")


def _required_reason(reason: str | None) -> str:
    if reason is None or not reason.strip():
        raise InvalidInput("--reason: say why (it is kept in the job's audit trail)")
    return reason.strip()


def _print_job(db: Any, job_id: str, as_json: bool) -> None:
    with db.transaction() as tx:
        document = guarded(lambda: queries.job_json(tx, job_id))
    if as_json:
        emit(document)
        return
    progress.print_job(document)
    typer.echo(_usage_text(document.get("usage") or {}))


def _usage_text(usage: dict[str, Any]) -> str:
    return (f"usage: {usage.get('input_tokens', 0):,} input, "
            f"{usage.get('output_tokens', 0):,} output, "
            f"{usage.get('cache_read_tokens', 0):,} cache read, "
            f"{usage.get('cache_write_tokens', 0):,} cache write tokens; "
            f"${usage.get('cost_usd', 0.0):,.4f}")


# ------------------------------------------------------------------ HTTP API, keys, Flower

api_key_app = typer.Typer(help="Bearer API keys of the HTTP API.", no_args_is_help=True)
app.add_typer(api_key_app, name="api-key")


@app.command()
def api(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
) -> None:
    """Serve the HTTP API (FastAPI on uvicorn); OpenAPI at /openapi.json."""
    import uvicorn

    from scheduler.api import create_app

    settings = resolve_settings(need_broker=True)  # /healthz checks the broker too
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@api_key_app.command("create")
def api_key_create(workspace: Workspace, as_json: JsonFlag = False) -> None:
    """A new key for one workspace, printed once: only its hash is stored."""
    from scheduler import auth

    db = open_database(resolve_settings())
    new = guarded(lambda: auth.create_key(db, workspace, audit.os_actor()))
    if as_json:
        emit({"key": new.key, "key_id": new.key_id, "workspace_id": new.workspace_id})
        return
    typer.echo(new.key)
    typer.echo(f"key id {new.key_id} for workspace {workspace}: shown once, store it now",
               err=True)


@api_key_app.command("revoke")
def api_key_revoke(key_id: Annotated[str, typer.Argument(help="The key id (key_…).")]) -> None:
    """Revoke a key by its id; requests with it answer 401 from now on."""
    from scheduler import auth

    db = open_database(resolve_settings())
    workspace = guarded(lambda: auth.revoke_key(db, key_id, audit.os_actor()))
    typer.echo(f"{key_id} of workspace {workspace}: revoked")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flower(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port")] = 5555,
    address: Annotated[str, typer.Option("--address")] = "127.0.0.1",
) -> None:
    """Run Flower on the broker, behind basic auth from FLOWER_BASIC_AUTH=user:password."""
    problem = flower_auth_problem(os.environ.get("FLOWER_BASIC_AUTH"))
    if problem:
        typer.echo(f"error: {problem}; refusing to start Flower without it", err=True)
        raise typer.Exit(2)
    from shared.settings import get_settings

    # Flower needs the broker only; embedded servers start only when no BROKER_URL is given.
    if not get_settings().broker_url:
        resolve_settings(need_broker=True)
    # Flower reads FLOWER_BASIC_AUTH itself: the password never appears in argv (or `ps`).
    argv = [sys.executable, "-m", "celery", "-A", "scheduler.flower_app", "flower",
            f"--port={port}", f"--address={address}", *ctx.args]
    os.execv(sys.executable, argv)


def flower_auth_problem(value: str | None) -> str | None:
    """What is wrong with a FLOWER_BASIC_AUTH value (comma-separated user:password pairs)."""
    if not value:
        return "FLOWER_BASIC_AUTH is not set (user:password)"
    for pair in value.split(","):
        user, colon, password = pair.partition(":")
        if not (user.strip() and colon and password):
            return "FLOWER_BASIC_AUTH must be user:password (comma-separated for several)"
    return None


if __name__ == "__main__":
    app()
