"""The job and session documents arranged for the console's pages: progress shares, rate and
ETA, cost against the cap, which actions the job's state allows, analyses as rows. Pure, so
the templates only lay things out and the arithmetic is tested without a browser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from scheduler.http.console.reads import Activity
from scheduler.jobs.changes import REVERTIBLE_STATES
from scheduler.web.report_view import NO_VALUE, ShownValue, shown_value
from shared.vocabulary import OPEN_ITEM_STATES, TERMINAL_ITEM_STATES

# The actions of the job page, in the order of its buttons (also the `data-action` hooks).
ACTIONS: Final = ("pause", "resume", "requeue", "cancel", "revert")
ACTION_LABELS: Final = {
    "pause": "Pause", "resume": "Resume", "requeue": "Requeue failed", "cancel": "Cancel job",
    "revert": "Revert changes",
}
# Irreversible: the console asks once more, saying what will happen, before doing them.
CONFIRMED_ACTIONS: Final = frozenset({"cancel", "revert"})
# DESIGN "Safe to apply": only a terminal or paused job can be reverted.


@dataclass(frozen=True)
class Segment:
    state: str
    count: int
    width: str  # CSS width, a share of the matched sessions


@dataclass(frozen=True)
class JobView:
    job: Mapping[str, Any]
    segments: tuple[Segment, ...]
    done: int
    remaining: int
    percent: str
    rate_per_min: float | None
    eta_s: float | None
    cost_usd: float
    max_cost_usd: float | None
    error_kinds: tuple[tuple[str, int], ...]
    actions: tuple[str, ...]

    @property
    def id(self) -> str:
        return str(self.job["id"])

    @property
    def state(self) -> str:
        return str(self.job["state"])

    @property
    def live(self) -> bool:
        """Whether the page should keep polling: only a running job changes by itself."""
        return self.state == "running"

    @property
    def done_percent(self) -> int:
        """For the progress bar's aria-valuenow."""
        matched = int(self.job["counts"]["matched"])
        return int(self.done * 100 / matched) if matched else 100

    @property
    def cost_share(self) -> str | None:
        if not self.max_cost_usd:
            return None
        return f"{min(self.cost_usd / self.max_cost_usd, 1.0) * 100:.1f}%"


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def percent_text(share: float) -> str:
    # One session of a million done must not read as "0%", nor 999,999 as "100%".
    if 0 < share < 0.01:
        return "<1%"
    if 0.99 < share < 1:
        return ">99%"
    return f"{share * 100:.0f}%"


def allowed_actions(state: str, failed: int) -> tuple[str, ...]:
    """The buttons the job's state allows (the operations refuse the others with a 409)."""
    allowed = {
        "pause": state == "running",
        "resume": state == "paused",
        "requeue": failed > 0 and state != "cancelled",
        "cancel": state in {"running", "paused"},
        "revert": state in REVERTIBLE_STATES,
    }
    return tuple(action for action in ACTIONS if allowed[action])


def job_view(job: Mapping[str, Any], activity: Activity | None) -> JobView:
    counts: Mapping[str, int] = job["counts"]
    matched = counts["matched"]
    done = sum(counts[state] for state in TERMINAL_ITEM_STATES)
    remaining = sum(counts[state] for state in OPEN_ITEM_STATES)
    rate = activity.per_minute if activity is not None and job["state"] == "running" else None
    eta = remaining / rate * 60 if rate and remaining else None
    return JobView(
        job=job,
        segments=tuple(Segment(state, counts[state], f"{_share(counts[state], matched) * 100:.2f}%")
                       for state in TERMINAL_ITEM_STATES if counts[state]),
        done=done,
        remaining=remaining,
        percent=percent_text(_share(done, matched)) if matched else "100%",
        rate_per_min=rate,
        eta_s=eta,
        cost_usd=float((job.get("usage") or {}).get("cost_usd") or 0.0),
        # The cap arrives with spend control; a job without one shows its cost alone.
        max_cost_usd=job.get("max_cost_usd"),
        error_kinds=tuple(sorted(job["error_kinds"].items(), key=lambda kv: (-kv[1], kv[0]))),
        actions=allowed_actions(job["state"], counts["failed"]),
    )


@dataclass(frozen=True)
class AnalysisRow:
    field: str
    value: ShownValue


def analysis_rows(analysis: Mapping[str, Any] | None) -> tuple[AnalysisRow, ...]:
    """An analysis object as rows, custom fields named as the change report names them
    (`custom_analysis_data.<name>`)."""
    if not analysis:
        return ()
    rows = [AnalysisRow(name, shown_value(value)) for name, value in analysis.items()
            if name != "custom_analysis_data"]
    custom: Mapping[str, Any] = analysis.get("custom_analysis_data") or {}
    rows += [AnalysisRow(f"custom_analysis_data.{name}", shown_value(value))
             for name, value in sorted(custom.items())]
    return tuple(rows)


def duration_text(seconds: float | None) -> str:
    """`45 s`, `12 min`, `3 h 05 min`, `2 d 4 h`: as precise as a person needs."""
    if seconds is None:
        return NO_VALUE
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    minutes, _ = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def when_text(value: str | datetime | None) -> str:
    """A timestamp in UTC to the second: operators compare it with logs, which are in UTC."""
    if value is None:
        return NO_VALUE
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def usd_text(value: float | None) -> str:
    if value is None:
        return NO_VALUE
    return f"${value:,.2f}" if value >= 100 else f"${value:,.4f}"


def rate_text(per_minute: float | None) -> str:
    if per_minute is None:
        return NO_VALUE
    return f"{per_minute:,.0f}/min" if per_minute >= 10 else f"{per_minute:,.1f}/min"
