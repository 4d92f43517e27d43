"""Trials and their promotion (DESIGN "Safe to apply").

A trial is a job whose options carry `trial_size`: its runs are written to history with their
before and never become a session's current analysis (`applied` false). Promoting a completed
trial makes an ordinary job that names it (`promoted_from`, at most one job per trial); when
that job reaches a session the trial analysed with the configuration the session would use
now, the trial's result is recorded as this job's, without asking the LLM again.

This module is the one place that says what a trial is (`TRIAL_OPTION`, `is_trial`, and the
same rule in SQL) and how a job finds the result it may reuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, text

TRIAL_OPTION: Final = "trial_size"
# The SQL form of `is_trial`, over a `backfill_jobs` row aliased `j`.
IS_TRIAL_SQL: Final = f"((j.options ->> '{TRIAL_OPTION}') IS NOT NULL)"


def is_trial(options: Mapping[str, Any] | None) -> bool:
    return (options or {}).get(TRIAL_OPTION) is not None


@dataclass(frozen=True)
class TrialRun:
    """A trial's unapplied run that a promoted job may record as its own."""

    run_id: int
    result: dict[str, Any]
    field_types: dict[str, str]
    agent_id: str
    agent_version: int
    used_draft: bool
    model: str
    requested_model: str | None
    started_at: datetime


@dataclass(frozen=True)
class JobRecording:
    """What of a job decides how its results are recorded, read with the session it
    analyses (`shared.pipeline.load_session`, by `IS_TRIAL_SQL`)."""

    trial: bool
    promoted_from: str | None


@dataclass(frozen=True)
class Recording:
    """How a job's result for one session is written."""

    apply: bool
    """False for a trial: history only."""
    reusable: TrialRun | None
    """The trial's result to record instead of asking the LLM (a promoted job whose trial
    analysed this session with the same configuration)."""


_REUSABLE = text("""
    SELECT t.id AS run_id, t.result, t.field_types, t.agent_id, t.agent_version,
           t.used_draft, t.model, t.requested_model, t.started_at
      FROM analysis_runs AS t
     WHERE t.job_id = :trial_id AND t.session_id = :session_id
       AND NOT t.applied AND t.config_hash = :config_hash
""")


def recording_for(tx: Connection, job: JobRecording, session_id: str,
                  config_hash: str) -> Recording:
    """Whether the job applies its results, and the trial result it may reuse for this
    session with this configuration (looked up only for a job promoted from a trial)."""
    if job.promoted_from is None:
        return Recording(apply=not job.trial, reusable=None)
    row = tx.execute(_REUSABLE, {"trial_id": job.promoted_from, "session_id": session_id,
                                 "config_hash": config_hash}).one_or_none()
    reusable = None if row is None else TrialRun(
        run_id=row.run_id, result=row.result, field_types=row.field_types or {},
        agent_id=row.agent_id, agent_version=row.agent_version, used_draft=row.used_draft,
        model=row.model, requested_model=row.requested_model, started_at=row.started_at)
    return Recording(apply=not job.trial, reusable=reusable)


# --------------------------------------------------------------------------- promotion

_MARK_PROMOTED = text("UPDATE backfill_jobs SET promoted_from = :trial_id WHERE id = :job_id")
_PROMOTED_TO = text("SELECT id FROM backfill_jobs WHERE promoted_from = :trial_id")


def mark_promoted(tx: Connection, job_id: str, trial_id: str) -> None:
    """The new job `job_id` is the promotion of `trial_id` (a unique index allows one)."""
    tx.execute(_MARK_PROMOTED, {"job_id": job_id, "trial_id": trial_id})


def promoted_to(tx: Connection, trial_id: str) -> str | None:
    """The job a trial was promoted to, if it was."""
    return tx.execute(_PROMOTED_TO, {"trial_id": trial_id}).scalar_one_or_none()
