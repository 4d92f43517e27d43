"""Safe-to-apply verbs: report (read: --json, --html), promote, revert.

A trial itself is `backfill create … --trial N` (`jobs`). Like every verb module, the heavy
imports happen inside the verbs: `backfill report JOB --json` loads neither the LLM SDK nor the
web framework.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.common import JsonFlag, Reason, app, emit, guarded
from scheduler.cli.jobs import print_job
from scheduler.cli.runtime import open_database, resolve_settings
from shared.errors import InvalidInput


@app.command()
def report(
    job_id: str,
    as_json: JsonFlag = False,
    html: Annotated[Path | None, typer.Option(
        "--html", help="Also write the report as one self-contained page with charts.",
        dir_okay=False)] = None,
) -> None:
    """What a job changed (or a trial would change): per-field changes, matrices, examples."""
    from scheduler.jobs.report import change_report

    db = open_database(resolve_settings())
    with db.transaction() as tx:
        document = guarded(lambda: change_report(tx, job_id))
    if html is not None:
        guarded(lambda: _write_html(document, html))
    if as_json:
        emit(document)
        return
    from scheduler.cli import render
    from scheduler.web.report_text import print_report

    print_report(document, render.stdout)


def _write_html(document: dict[str, Any], path: Path) -> None:
    from datetime import UTC, datetime

    from scheduler.web.report_html import render_report_html

    page = render_report_html(document, generated_at=datetime.now(UTC).isoformat(
        timespec="seconds"))
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"--html: cannot write {path}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {path}", err=True)


@app.command()
def promote(
    job_id: str,
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until done.")] = False,
    reason: Reason = None,
    as_json: JsonFlag = False,
) -> None:
    """Apply a completed trial: a job over its filters and options that reuses the trial's
    results where the configuration is unchanged (promoting twice gives the same job)."""
    from scheduler.jobs import audit, changes

    settings = resolve_settings()
    db = open_database(settings)
    promoted = guarded(lambda: changes.promote(db, settings, job_id, actor=audit.os_actor(),
                                               reason=reason))
    if not promoted.created:
        typer.echo(f"{job_id} was promoted already, to {promoted.job_id}", err=True)
    if wait:
        from scheduler.cli import render

        render.follow(db, settings, promoted.job_id)
    print_job(db, settings, promoted.job_id, as_json)


@app.command()
def revert(
    job_id: str,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; change nothing.")] = False,
    reason: Reason = None,
    as_json: JsonFlag = False,
) -> None:
    """Give every session the job's runs wrote its analysis from before them (sessions that a
    later job or rerun wrote are left alone)."""
    from scheduler.jobs import audit, changes

    db = open_database(resolve_settings())
    done = guarded(lambda: changes.revert(db, job_id, actor=audit.os_actor(), dry_run=dry_run,
                                          reason=reason))
    if as_json:
        emit(done.as_json())
        return
    verb = "would revert" if dry_run else "reverted"
    typer.echo(f"{verb} {done.reverted} sessions; {done.left_newer} left alone (written later "
               "by another job or a rerun)")
