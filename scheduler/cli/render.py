"""Human output: live progress bars (on stderr, so --json stays clean) and tables."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from scheduler.jobs import documents
from shared.db import Database
from shared.settings import Settings
from shared.vocabulary import RESTING_JOB_STATES, TERMINAL_ITEM_STATES

stderr = Console(stderr=True)
stdout = Console()

def done_count(job: dict[str, Any]) -> int:
    return sum(job["counts"][state] for state in TERMINAL_ITEM_STATES)


def follow(db: Database, settings: Settings, job_id: str, poll_s: float = 0.5) -> dict[str, Any]:
    """Poll SQL counts until the job stops running; returns the last job document."""
    with _progress_bar() as bar:
        job = _read_job(db, settings, job_id)
        task = bar.add_task(job_id, total=job["counts"]["matched"] or 1, detail="")
        while True:
            bar.update(task, completed=done_count(job), detail=_detail(job))
            if job["state"] in RESTING_JOB_STATES:
                return job
            time.sleep(poll_s)
            job = _read_job(db, settings, job_id)


class RateColumn(ProgressColumn):
    """Sessions finished per second, over rich's recent samples (the last 30 s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("–/s" if speed is None else f"{speed:.1f}/s", style="progress.data.speed")


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        RateColumn(), TimeRemainingColumn(), TextColumn("{task.fields[detail]}"),
        console=stderr,
    )


def _read_job(db: Database, settings: Settings, job_id: str) -> dict[str, Any]:
    with db.transaction() as tx:
        return documents.job_json(tx, settings, job_id)


def _detail(job: dict[str, Any]) -> str:
    counts = job["counts"]
    parts = [f"ok {counts['succeeded']}", f"failed {counts['failed']}",
             f"skipped {counts['skipped']}", f"running {counts['running']}"]
    if job["error_kinds"]:
        parts.append(" ".join(f"{k}={n}" for k, n in job["error_kinds"].items()))
    return " ".join(parts)


def _kind_of(job: dict[str, Any]) -> str:
    """A trial reads as one wherever a job is listed: it changes no session until promoted."""
    return f"{job['kind']} trial" if job.get("trial") else job["kind"]


def print_job(job: dict[str, Any]) -> None:
    stdout.print(f"[bold]{job['id']}[/] {_kind_of(job)} backfill in {job['workspace_id']}: "
                 f"[bold]{job['state']}[/]" + (f" ({escape(job['state_reason'])})"
                                                if job.get("state_reason") else ""))
    if job.get("trial"):
        stdout.print("trial: results are kept in history and change no session; "
                     f"`backfill report {job['id']}` shows them, `backfill promote {job['id']}` "
                     "applies them")
    if job.get("promoted_from"):
        stdout.print(f"promoted from trial {job['promoted_from']}")
    table = Table("state", "sessions")
    for state, count in job["counts"].items():
        table.add_row(state, str(count))
    stdout.print(table)
    if job["error_kinds"]:
        stdout.print("error kinds: " + ", ".join(f"{k} {n}" for k, n in job["error_kinds"].items()))
    if job.get("audit"):
        print_audit(job["audit"])


def print_audit(events: list[dict[str, Any]]) -> None:
    table = Table("when", "who", "action", "reason", title="audit")
    for event in events:
        # Reasons are free text: escaped so that "[x]" is not read as rich markup.
        table.add_row(str(event["at"])[:19], escape(event["actor"]), event["action"],
                      escape(event["reason"] or ""))
    stdout.print(table)


def print_job_table(jobs: list[dict[str, Any]]) -> None:
    table = Table("job", "workspace", "kind", "state", "matched", "done", "failed", "created")
    for job in jobs:
        counts = job["counts"]
        table.add_row(job["id"], job["workspace_id"], _kind_of(job), job["state"],
                      str(counts["matched"]), str(done_count(job)), str(counts["failed"]),
                      str(job["created_at"])[:19])
    stdout.print(table)


def print_session(document: dict[str, Any]) -> None:
    analysis_key = "call_analysis" if document["kind"] == "call" else "chat_analysis"
    table = Table("field", "value", title=f"{document['session_id']} ({document['kind']})")
    for key, value in document[analysis_key].items():
        table.add_row(key, str(value))
    source = document["analysis_source"] or {}
    for key, value in source.items():
        table.add_row(f"source.{key}", str(value))
    stdout.print(table)


def print_failed(items: list[dict[str, Any]]) -> None:
    table = Table("session", "error kind", "message", "attempts")
    for item in items:
        table.add_row(item["session_id"], item["error_kind"] or "", (item["error"] or "")[:80],
                      str(item["attempts"]))
    stdout.print(table)
