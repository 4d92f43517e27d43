"""The change report and revert of a job, as the console shows and offers them: the console's
one door to the "safe to apply" work (`scheduler.jobs.report`, `scheduler.jobs.changes`).

That work is not part of this branch yet, so here the report is absent (the job page has no
report section) and revert is off (no button; a hand-made POST is refused). Merging it means
calling `report.change_report(tx, job_id)` and `changes.revert(...)` from these two functions
and setting REVERT_AVAILABLE; the pages, the confirmation step and the notice already use them.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Connection

from shared.db import Database
from shared.errors import InvalidInput
from shared.settings import Settings

REVERT_AVAILABLE: Final = False


def change_report(tx: Connection, settings: Settings, job_id: str) -> dict[str, Any] | None:
    """The job's change report (DESIGN's report JSON); None: this release has none."""
    return None


def revert(db: Database, job_id: str, *, actor: str, reason: str | None = None,
           dry_run: bool = False) -> dict[str, Any]:
    """`{"reverted", "left_newer", "dry_run"}` of reverting the job for `actor`."""
    raise InvalidInput("revert is not available in this release of the console")
