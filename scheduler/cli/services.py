"""Process verbs: the schema, the long-running components (worker, scheduler, API, Flower),
their health probes, and the dev tools (the LLM stand-in, the demo).

A component refuses to start on an environment it cannot work in — a schema behind this
release, a broker that does not answer — with one line saying so (exit 3), rather than failing
on every session it takes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Annotated

import typer

from scheduler.cli.common import app, db_app, guarded
from scheduler.cli.runtime import open_database, resolve_settings
from shared.errors import InvalidInput
from shared.settings import Settings


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply Alembic migrations up to head."""
    from shared.migrate import upgrade_to_head

    settings = resolve_settings()
    upgrade_to_head(settings.require_database_url())
    typer.echo("database schema is at head", err=True)


def _require_environment(settings: Settings, *, broker: bool) -> None:
    """The schema at this release's head, and the broker answering when the component needs
    it; an EnvironmentProblem (exit 3) otherwise."""
    from shared.broker import require_broker
    from shared.migrate import require_schema_at_head

    db = open_database(settings)
    try:
        require_schema_at_head(db, settings.database_url)
    finally:
        db.dispose()
    if broker:
        require_broker(settings.broker_url)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-c")] = None,
    pool: Annotated[str, typer.Option("--pool")] = "threads",
) -> None:
    """Run a Celery worker (threads pool; extra options after -- go to celery)."""
    settings = resolve_settings(need_broker=True)
    _require_environment(settings, broker=True)
    threads = concurrency or settings.worker_concurrency
    os.environ["BACKFILL_WORKER_CONCURRENCY"] = str(threads)
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", pool,
            "--concurrency", str(threads), "--queues", settings.queue_name,
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", *ctx.args]
    os.execv(sys.executable, argv)


@app.command()
def scheduler() -> None:
    """Run the dispatcher and reconciler until SIGTERM/SIGINT, while holding the leader lock."""
    from scheduler.run.dispatcher import Dispatcher
    from scheduler.run.leader import run_while_leader
    from shared.broker import make_celery

    settings = resolve_settings(need_broker=True)
    _require_environment(settings, broker=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    dispatcher = Dispatcher(open_database(settings), make_celery(settings), settings)
    typer.echo("scheduler running", err=True)
    run_while_leader(settings, dispatcher.tick, stop)


@app.command()
def api(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
) -> None:
    """Serve the HTTP API (FastAPI on uvicorn); OpenAPI at /openapi.json."""
    import uvicorn

    from scheduler.http.app import create_app

    settings = resolve_settings(need_broker=True)  # /healthz checks the broker too
    _require_environment(settings, broker=False)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


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
    from scheduler.cli import probes
    from shared.settings import get_settings

    # Never resolve_settings() here: a probe must not start embedded servers.
    if component == "worker":
        result = probes.probe_worker(get_settings(), destination or probes.default_worker_name(),
                                     timeout_s)
    elif component == "scheduler":
        result = probes.probe_scheduler(get_settings().scheduler_heartbeat_file, max_age_s)
    else:
        typer.echo(f"error: unknown component {component!r} (worker or scheduler)", err=True)
        raise typer.Exit(2)
    typer.echo(result.message, err=True)
    raise typer.Exit(0 if result.healthy else 1)


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
    from scheduler.dev.demo import run_demo

    run_demo(sessions=sessions, concurrency=concurrency)
