"""`backfill demo`: a real backfill end to end, with every process started and stopped here.

The story of DESIGN "Safe to apply": a trial of a few dozen calls with the agent's new draft,
its change report, then the promotion to every matched call (the trial's results applied
without a second LLM call), a before/after table, and the report as a page under the run
directory."""

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
from scheduler.jobs import changes, documents, operations, planner
from scheduler.jobs.importer import import_batch, parse_import_file
from scheduler.jobs.report import change_report
from scheduler.web.report_html import render_report_html
from scheduler.web.report_text import print_report
from shared.db import Database
from shared.migrate import upgrade_to_head
from shared.settings import Settings, get_settings

console = Console(stderr=True)
DEMO_WORKSPACE = "ws_demo_dental"
# Its draft asks for new fields with new prompts: the backfill the customer wants to try.
DEMO_AGENT = "dental_front_desk"
DEMO_ACTOR = "demo"
TRIAL_SIZE = 40
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
        _run_backfill(db, settings, run_dir)
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
    """Several rows: the agent whose draft was edited, a time window, statuses, a duration
    floor."""
    with db.transaction() as tx:
        first, last = tx.execute(text("""
            SELECT min(start_timestamp), max(start_timestamp) FROM sessions
             WHERE workspace_id = :ws AND kind = 'call'
        """), {"ws": DEMO_WORKSPACE}).one()
    return [
        {"field": "agent", "op": "in", "value": [{"agent_id": DEMO_AGENT}]},
        {"field": "start_timestamp", "op": "bt", "value": [first, last]},
        {"field": "call_status", "op": "in", "value": ["ended", "not_connected", "error"]},
        {"field": "duration_ms", "op": "ge", "value": 0},
    ]


def _run_backfill(db: Database, settings: Settings, run_dir: Path) -> None:
    filters = demo_filters(db)
    matched = planner.preview(db, settings, DEMO_WORKSPACE, "call", filters)
    console.print(f"filters match {matched} calls in {DEMO_WORKSPACE}")

    console.rule(f"3. trial: {TRIAL_SIZE} calls with the new draft, nothing applied")
    trial = operations.create_job(db, settings, DEMO_WORKSPACE, "call", filters,
                                  actor=DEMO_ACTOR, options={"trial_size": TRIAL_SIZE},
                                  reason="demo: what would the new prompts change?")
    render.follow(db, settings, trial.job_id)
    with db.transaction() as tx:
        trial_report = change_report(tx, trial.job_id)
    print_report(trial_report, _wide())

    console.rule("4. promote: the trial applied to every matched call")
    samples = _sample_sessions(db, trial.job_id)
    before = _analyses(db, samples)
    promoted = changes.promote(db, settings, trial.job_id, actor=DEMO_ACTOR,
                               reason="demo: the trial reads right")
    final = render.follow(db, settings, promoted.job_id)
    render.print_job(final)
    console.print(f"{_reused(db, promoted.job_id)} calls took the trial's result: no second "
                  "LLM call for them")
    _print_before_after(before, _analyses(db, samples))

    console.rule("5. the change report, as a page")
    with db.transaction() as tx:
        applied_report = change_report(tx, promoted.job_id)
    page = run_dir / "demo-report.html"
    page.write_text(render_report_html(applied_report), encoding="utf-8")
    console.print(f"wrote {page.resolve()}")
    console.print(f"taking it back would be: backfill revert {promoted.job_id} --reason …")


def _wide() -> Console:
    return Console(width=max(Console().width, 140))


def _sample_sessions(db: Database, trial_id: str) -> list[str]:
    """A few calls the trial analysed: their after is the trial's result, reused."""
    with db.transaction() as tx:
        return list(tx.execute(text("""
            SELECT session_id FROM analysis_runs WHERE job_id = :job
             ORDER BY session_id LIMIT :n
        """), {"job": trial_id, "n": SAMPLE_SIZE}).scalars())


def _reused(db: Database, job_id: str) -> int:
    """Runs of the job that billed nothing: the trial's results recorded again."""
    with db.transaction() as tx:
        return int(tx.execute(text("""
            SELECT count(*) FROM analysis_runs
             WHERE job_id = :job AND input_tokens = 0 AND output_tokens = 0
        """), {"job": job_id}).scalar_one())


def _analyses(db: Database, session_ids: list[str]) -> dict[str, dict[str, Any]]:
    with db.transaction() as tx:
        return {sid: documents.session_json(tx, sid) for sid in session_ids}


def _print_before_after(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> None:
    table = Table("session", "before (imported)", "after (the trial's result, applied)",
                  "source", title="before / after", show_lines=True)
    for session_id, old in before.items():
        new = after[session_id]
        source = new["analysis_source"] or {}
        table.add_row(
            session_id, _brief(old["call_analysis"]), _brief(new["call_analysis"]),
            f"{source.get('agent_id')} v{source.get('agent_version')} {source.get('model')}",
        )
    _wide().print(table)


def _brief(analysis: dict[str, Any]) -> str:
    custom = "\n".join(f"  {k} = {v!s:.40}" for k, v in analysis["custom_analysis_data"].items())
    return (f"{analysis['call_summary']!s:.80}\nsuccessful={analysis['call_successful']} "
            f"sentiment={analysis['user_sentiment']}\n{custom}")
