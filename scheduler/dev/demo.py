"""`backfill demo`: a real backfill end to end, with every process started and stopped here."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from scheduler.cli import render
from scheduler.cli.runtime import open_database, resolve_settings
from scheduler.dev import processes
from scheduler.dev.demo_data import generate_demo_dataset, write_jsonl
from scheduler.jobs import documents, planner
from scheduler.jobs.filters import matching_sessions
from scheduler.jobs.importer import import_batch, parse_import_file
from shared.db import Database
from shared.migrate import upgrade_to_head
from shared.models import SessionRecord
from shared.settings import Settings, get_settings

console = Console(stderr=True)
DEMO_WORKSPACE = "ws_demo_dental"
SAMPLE_SIZE = 5


def run_demo(sessions: int, concurrency: int) -> None:
    settings = resolve_settings(need_broker=True)
    run_dir = Path(settings.backfill_run_dir)
    _use_a_secret_key(run_dir)
    console.rule("1. schema and data")
    upgrade_to_head(settings.require_database_url())
    db = open_database(settings)
    _import_dataset(db, run_dir, sessions)
    started: list[subprocess.Popen[bytes]] = []
    try:
        console.rule("2. stand-in LLM, worker, scheduler")
        settings = _start_llm(settings, run_dir, started)
        _start_workers(run_dir, concurrency, started)
        console.rule("3. backfill")
        _run_backfill(db, settings)
    finally:
        for process in reversed(started):
            processes.stop(process)
        console.print(f"stopped {len(started)} processes; logs in {run_dir}/logs/")


def _use_a_secret_key(run_dir: Path) -> None:
    """The deployment's key (webhook secrets at rest) for the processes started here: the
    environment's, else one kept under the run directory across demos."""
    if os.environ.get("BACKFILL_SECRET_KEY"):
        return
    from scheduler.webhooks.secretbox import new_secret_key

    path = run_dir / "secret-key"
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(new_secret_key() + "\n", encoding="ascii")
    os.environ["BACKFILL_SECRET_KEY"] = path.read_text(encoding="ascii").strip()
    get_settings.cache_clear()
    console.print(f"BACKFILL_SECRET_KEY from {path}")


def _import_dataset(db: Database, run_dir: Path, sessions: int) -> None:
    path = run_dir / "demo-sessions.jsonl"
    write_jsonl(generate_demo_dataset(sessions=sessions), path)
    summary = import_batch(db, parse_import_file(path)).as_dict()
    counts = ", ".join(f"{kind} {numbers}" for kind, numbers in summary.items())
    console.print(f"imported {path}: {counts}")


def _start_llm(
    settings: Settings, run_dir: Path, started: list[subprocess.Popen[bytes]]
) -> Settings:
    if settings.llm_mode == "anthropic":
        console.print("ANTHROPIC_API_KEY is set: analysing with Claude")
        return settings
    port = processes.free_port()
    started.append(processes.start(
        processes.backfill_command("llm-stub", "--port", str(port), "--latency-ms", "50"),
        run_dir / "logs" / "llm-stub.log",
    ))
    processes.wait_for_http(f"http://127.0.0.1:{port}/healthz")
    os.environ["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{port}"
    os.environ["BACKFILL_LLM"] = "stub"
    get_settings.cache_clear()
    console.print(f"no ANTHROPIC_API_KEY: using the local stand-in on port {port}")
    return get_settings()


def _start_workers(
    run_dir: Path, concurrency: int, started: list[subprocess.Popen[bytes]]
) -> None:
    logs = run_dir / "logs"
    started.append(processes.start(
        processes.backfill_command("worker", "--concurrency", str(concurrency)),
        logs / "worker.log",
    ))
    started.append(processes.start(processes.backfill_command("scheduler"), logs / "scheduler.log"))
    console.print(f"worker (threads x {concurrency}) and scheduler started")


def demo_filters(db: Database) -> list[dict[str, Any]]:
    """Several rows: the workspace's voice agents, a time window, statuses, a duration floor."""
    with db.transaction() as tx:
        agents = tx.execute(text("""
            SELECT DISTINCT agent_id FROM agent_versions
             WHERE workspace_id = :ws AND kind = 'voice' ORDER BY agent_id
        """), {"ws": DEMO_WORKSPACE}).scalars().all()
        first, last = tx.execute(text("""
            SELECT min(start_timestamp), max(start_timestamp) FROM sessions
             WHERE workspace_id = :ws AND kind = 'call'
        """), {"ws": DEMO_WORKSPACE}).one()
    return [
        {"field": "agent", "op": "in", "value": [{"agent_id": a} for a in agents]},
        {"field": "start_timestamp", "op": "bt", "value": [first, last]},
        {"field": "call_status", "op": "in", "value": ["ended", "not_connected", "error"]},
        {"field": "duration_ms", "op": "ge", "value": 0},
    ]


def _run_backfill(db: Database, settings: Settings) -> None:
    filters = demo_filters(db)
    matched = planner.preview(db, settings, DEMO_WORKSPACE, "call", filters)
    console.print(f"filters match {matched} calls in {DEMO_WORKSPACE}")
    samples = _sample_sessions(db, settings, filters)
    before = _analyses(db, samples)
    job = planner.create_job(db, settings, DEMO_WORKSPACE, "call", filters, created_by="demo")
    final = render.follow(db, settings, job.job_id)
    render.print_job(final)
    _print_before_after(before, _analyses(db, samples))


def _sample_sessions(db: Database, settings: Settings, filters: list[dict[str, Any]]) -> list[str]:
    """A few answered calls out of the ones the backfill will touch."""
    rows = planner.validate_request(settings, DEMO_WORKSPACE, "call", filters)
    query = (matching_sessions(DEMO_WORKSPACE, "call", rows)
             .where(SessionRecord.status == "ended")
             .order_by(SessionRecord.session_id).limit(SAMPLE_SIZE))
    with db.transaction() as tx:
        return list(tx.execute(query).scalars())


def _analyses(db: Database, session_ids: list[str]) -> dict[str, dict[str, Any]]:
    with db.transaction() as tx:
        return {sid: documents.session_json(tx, sid) for sid in session_ids}


def _print_before_after(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> None:
    table = Table("session", "before (imported)", "after (regenerated)", "source",
                  title="before / after", show_lines=True)
    for session_id, old in before.items():
        new = after[session_id]
        source = new["analysis_source"] or {}
        table.add_row(
            session_id, _brief(old["call_analysis"]), _brief(new["call_analysis"]),
            f"{source.get('agent_id')} v{source.get('agent_version')} {source.get('model')}",
        )
    Console(width=max(Console().width, 160)).print(table)


def _brief(analysis: dict[str, Any]) -> str:
    custom = "\n".join(f"  {k} = {v!s:.40}" for k, v in analysis["custom_analysis_data"].items())
    return (f"{analysis['call_summary']!s:.80}\nsuccessful={analysis['call_successful']} "
            f"sentiment={analysis['user_sentiment']}\n{custom}")
