"""The change report and revert of a job, as the console shows and offers them.

Both belong to the "safe to apply" work (`scheduler/jobs/report.py`, `scheduler/jobs/changes.py`);
this adapter is the console's one place that calls them.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Connection

from shared.db import Database
from shared.errors import InvalidInput
from shared.settings import Settings

REVERT_AVAILABLE: Final = False


def change_report(tx: Connection, settings: Settings, job_id: str) -> dict[str, Any] | None:
    """The job's change report, or None while the report is not part of this release."""
    return None


def revert(db: Database, job_id: str, *, actor: str, reason: str | None = None,
           dry_run: bool = False) -> dict[str, Any]:
    raise InvalidInput("revert is not part of this release")
