"""Process verbs: the schema, the long-running components (worker, scheduler, API, Flower),
their health probes, and the dev tools (the LLM stand-in, the demo).

A component refuses to start on an environment it cannot work in — a schema behind this
release, a broker that does not answer, a malformed BACKFILL_SECRET_KEY, a metrics port that
is taken — with one line saying so (exit 3), rather than failing on every session it takes.
Each configures the process's logs first (`shared.logs`: BACKFILL_LOG_FORMAT), and the worker
and the scheduler serve `/metrics` on `--metrics-port` (BACKFILL_METRICS_PORT).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Annotated

import typer

from scheduler.cli.common import app, db_app, guarded
from scheduler.cli.runtime import open_database, resolve_settings
from shared.errors import EnvironmentProblem, InvalidInput
from shared.settings import Settings

log = logging.getLogger("backfill.scheduler")

MetricsPort = Annotated[int | None, typer.Option(
    "--metrics-port", min=1, max=65535,
    help="Serve Prometheus /metrics on this port (default BACKFILL_METRICS_PORT; unset: none).")]
# A scheduler finishing its webhook attempts on SIGTERM waits at most this long (one attempt's
# bound); an attempt cut short is claimed again after its lease.
WEBHOOK_STOP_S = 20.0


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
    metrics_port: MetricsPort = None,
) -> None:
    """Run a Celery worker (threads pool; extra options after -- go to celery)."""
    from shared.logs import log_format

    settings = resolve_settings(need_broker=True)
    _require_environment(settings, broker=True)
    threads = concurrency or settings.worker_concurrency
    os.environ["BACKFILL_WORKER_CONCURRENCY"] = str(threads)
    if metrics_port is not None:  # the worker process (worker.app) serves it
        os.environ["BACKFILL_METRICS_PORT"] = str(metrics_port)
    # Celery's start-up banner is for a person; in a JSON log it would be the only lines
    # that are not JSON. (`--quiet` is an option of `celery` itself, not of `worker`.)
    quiet = ["--quiet"] if log_format(settings.log_format) == "json" else []
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", *quiet, "worker", "--pool", pool,
            "--concurrency", str(threads), "--queues", settings.queue_name,
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", *ctx.args]
    os.execv(sys.executable, argv)


@app.command()
def scheduler(metrics_port: MetricsPort = None) -> None:
    """Run the dispatcher and reconciler (while holding the leader lock) and webhook delivery.

    Runs until SIGTERM/SIGINT."""
    from scheduler.run.dispatcher import Dispatcher
    from scheduler.run.gauges import SchedulerGauges
    from scheduler.run.leader import run_while_leader
    from scheduler.webhooks.delivery import WebhookSender
    from scheduler.webhooks.secretbox import check_deployment_key
    from shared import logs
    from shared.broker import make_celery

    settings = resolve_settings(need_broker=True)
    logs.configure(settings.log_format)
    check_deployment_key(settings.secret_key)
    _require_environment(settings, broker=True)
    db = open_database(settings)
    port = metrics_port or settings.metrics_port
    if port is not None:
        from prometheus_client import REGISTRY

        REGISTRY.register(SchedulerGauges(db, settings))
        _serve_metrics(port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    dispatcher = Dispatcher(db, make_celery(settings), settings)
    sender = WebhookSender(db, settings).start(stop)
    log.info("scheduler running")
    run_while_leader(settings, dispatcher.tick, stop)
    sender.join(WEBHOOK_STOP_S)


def _serve_metrics(port: int) -> None:
    from shared import metrics

    try:
        metrics.serve(port)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot serve metrics on port {port}: {exc.strerror}") from None


@app.command()
def api(
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
) -> None:
    """Serve the HTTP API (FastAPI on uvicorn); OpenAPI at /openapi.json, metrics at /metrics."""
    import uvicorn

    from scheduler.http.app import create_app
    from scheduler.webhooks.secretbox import check_deployment_key
    from shared import logs

    settings = resolve_settings(need_broker=True)  # /healthz checks the broker too
    logs.configure(settings.log_format)
    check_deployment_key(settings.secret_key)
    _require_environment(settings, broker=False)
    # log_config=None: uvicorn's loggers go through ours (one format), not its own handlers.
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", log_config=None)


@app.command("secret-key")
def secret_key() -> None:
    """Print a new BACKFILL_SECRET_KEY: the deployment's key for webhook secrets at rest.

    Give the same key to every API replica and scheduler of one deployment."""
    from scheduler.webhooks.secretbox import new_secret_key

    typer.echo(new_secret_key())


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
