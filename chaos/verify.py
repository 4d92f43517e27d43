"""After a run: what Postgres says happened to every matched session, and the table."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from chaos.dataset import PERMANENT_KINDS, Dataset
from shared.db import Database

# Per item: what it should have become (from the session itself and the planted failures),
# how many successful runs the job wrote for it, and whether the session's current analysis
# is one of them.
_ITEMS = text("""
    SELECT i.session_id, i.state, i.error_kind, i.attempts,
           CASE WHEN s.session_id IS NULL OR s.status = 'not_connected'
                     OR NOT EXISTS (SELECT 1 FROM jsonb_array_elements(s.transcript) AS t
                                     WHERE btrim(coalesce(t->>'content', '')) <> '')
                THEN 'skipped'
                WHEN i.session_id = ANY(:planted) THEN 'failed'
                ELSE 'succeeded' END AS want,
           (SELECT count(*) FROM analysis_runs AS r
             WHERE r.job_id = i.job_id AND r.session_id = i.session_id) AS runs,
           EXISTS (SELECT 1 FROM analysis_runs AS r
                    WHERE r.id = s.analysis_run_id AND r.job_id = i.job_id
                      AND r.session_id = i.session_id) AS current
      FROM backfill_items AS i LEFT JOIN sessions AS s ON s.session_id = i.session_id
     WHERE i.job_id = :job_id
""")

TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})


@dataclass
class RunResult:
    fault: str
    sessions: int = 0
    succeeded: int = 0
    skipped: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    retried: int = 0  # items that ran more than once (a fault hit them mid-call)
    reconciled: int = 0  # items the reconciler sent back (expired lease, lost message)
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and not self.problems


def verify(db: Database, job_id: str, dataset: Dataset, result: RunResult) -> RunResult:
    with db.transaction() as tx:
        rows = tx.execute(_ITEMS, {"job_id": job_id,
                                   "planted": list(dataset.expected_failures)}).all()
        job_state = tx.execute(text("SELECT state FROM backfill_jobs WHERE id = :id"),
                               {"id": job_id}).scalar_one()
    _count(result, rows)
    result.problems += _problems(rows, dataset)
    if result.sessions != dataset.matched:
        result.problems.append(f"job has {result.sessions} items, {dataset.matched} expected")
    if job_state != "completed":
        result.problems.append(f"job ended {job_state}")
    return result


def _count(result: RunResult, rows: Sequence[Any]) -> None:
    result.sessions = len(rows)
    result.succeeded = sum(row.state == "succeeded" for row in rows)
    result.skipped = sum(row.state == "skipped" for row in rows)
    result.failed = sum(row.state == "failed" for row in rows)
    result.lost = sum(_lost(row) for row in rows)
    result.retried = sum(row.attempts > 1 for row in rows)
    # Extra runs of a (job, session), and runs of an item that did not succeed.
    result.duplicated = sum(max(row.runs - 1, 0) + (row.runs > 0 and row.state != "succeeded")
                            for row in rows)


def _lost(row: Any) -> bool:
    if row.state not in TERMINAL:
        return True
    wanted_success = row.want == "succeeded"
    return wanted_success and not (row.state == "succeeded" and row.runs >= 1 and row.current)


def _problems(rows: Sequence[Any], dataset: Dataset) -> list[str]:
    problems: list[str] = []
    unexpected: dict[str, int] = {}
    for row in rows:
        if row.state == "failed" and not _planted_failure(row):
            unexpected[str(row.error_kind)] = unexpected.get(str(row.error_kind), 0) + 1
        expected_kind = dataset.expected_failures.get(row.session_id)
        if row.want == "failed" and (row.state, row.error_kind) != ("failed", expected_kind):
            problems.append(f"{row.session_id} ended {row.state}/{row.error_kind}, "
                            f"expected failed/{expected_kind}")
        if row.want == "skipped" and row.state != "skipped":
            problems.append(f"{row.session_id} ended {row.state}, expected skipped")
    problems += [f"{n} unexpected {kind} failure(s)" for kind, n in sorted(unexpected.items())]
    return problems


def _planted_failure(row: Any) -> bool:
    return bool(row.want == "failed" and row.error_kind in PERMANENT_KINDS)


COLUMNS = ("fault", "sessions", "succeeded", "skipped", "failed", "lost", "duplicated",
           "retried", "reconciled", "wall time", "checks")


def table(results: Sequence[RunResult]) -> str:
    """Plain aligned text (stdout may be a log file or a CI console)."""
    rows = [COLUMNS] + [_cells(result) for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [_line(row, widths) for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def _cells(result: RunResult) -> tuple[str, ...]:
    numbers = (result.sessions, result.succeeded, result.skipped, result.failed, result.lost,
               result.duplicated, result.retried, result.reconciled)
    checks = "ok" if result.ok else "; ".join(result.problems) or "FAILED"
    return (result.fault, *map(str, numbers), f"{result.wall_s:.1f}s", checks)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    first, *numbers, wall, checks = cells
    padded = [first.ljust(widths[0])]
    padded += [cell.rjust(width) for cell, width in zip(numbers, widths[1:-2], strict=True)]
    padded += [wall.rjust(widths[-2]), checks.ljust(widths[-1])]
    return " | ".join(padded).rstrip()


_RECONCILED = re.compile(r"(leases_requeued|lost_requeued|overdue_requeued)=(\d+)")


def reconciled_from_log(scheduler_log: Path) -> int:
    """Items the scheduler's reconciler sent back during the run, from its log lines."""
    if not scheduler_log.exists():
        return 0
    lines = scheduler_log.read_text(errors="replace")
    return sum(int(number) for _, number in _RECONCILED.findall(lines))
