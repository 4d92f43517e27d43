"""The events a webhook receives and the exact bytes of their body.

The body is built once, when the event is created, and kept: the signature covers the raw
bytes, and every retry must send the same bytes under the same event id so a receiver can
deduplicate. The encoding is deterministic (sorted keys, no spaces) so equal events give
equal bytes, and ASCII-only (non-ASCII text as \\u escapes) so a receiver that turns the
body into text and back before checking the signature still gets the signed bytes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

EVENT_TYPES = ("backfill.completed", "backfill.paused", "backfill.cancelled")

# Every job state, so a new state cannot be added without deciding what it announces.
_EVENT_BY_JOB_STATE: dict[str, str | None] = {
    "running": None,
    "completed": "backfill.completed",
    "paused": "backfill.paused",
    "cancelled": "backfill.cancelled",
}


def event_type_for(job_state: str) -> str | None:
    """The event announcing that a job entered `job_state`; None for `running` (a resume or a
    requeue is not announced)."""
    try:
        return _EVENT_BY_JOB_STATE[job_state]
    except KeyError:
        raise ValueError(f"unknown job state {job_state!r}") from None


def event_body(event_id: str, event_type: str, created_at: datetime, job: dict[str, Any]
               ) -> bytes:
    """`{"id", "type", "created_at", "job"}` as compact JSON bytes; `created_at` in UTC."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    if created_at.utcoffset() is None:
        raise ValueError("created_at must carry a time zone")
    document = {
        "id": event_id,
        "type": event_type,
        "created_at": created_at.astimezone(UTC).isoformat(),
        "job": job,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")
