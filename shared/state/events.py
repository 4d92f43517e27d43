"""The webhook outbox: when a job completes, pauses or is cancelled, an event for its
workspace's endpoints and one delivery row per endpoint, in the transaction of the change.

Written by `shared.state.jobs`'s transitions, so no transition can forget its event, an event
commits with its change (never lost), and a change that rolls back takes its event with it
(never sent for nothing). A workspace without endpoints gets no rows. The scheduler's
delivery loop (`scheduler/webhooks/delivery.py`) sends them; the body is rendered with the
job JSON at the first attempt and kept, so every retry sends the same bytes.
"""

from __future__ import annotations

import secrets

from sqlalchemy import Connection, text

from shared.vocabulary import WebhookEventType

# Every job state (a unit test holds it to the vocabulary), so a new state cannot be added
# without deciding what it announces; a resume or a requeue (back to running) is not.
_EVENT_BY_JOB_STATE: dict[str, WebhookEventType | None] = {
    "running": None,
    "completed": "backfill.completed",
    "paused": "backfill.paused",
    "cancelled": "backfill.cancelled",
}

# One statement: the event only when the workspace has an endpoint, a delivery per endpoint.
_RECORD = text("""
    WITH endpoints AS (
        SELECT id FROM webhooks WHERE workspace_id = :ws AND removed_at IS NULL
    ), event AS (
        INSERT INTO webhook_events (id, workspace_id, job_id, type)
        SELECT :id, :ws, :job_id, :type WHERE EXISTS (SELECT 1 FROM endpoints)
        RETURNING id
    )
    INSERT INTO webhook_deliveries (event_id, webhook_id)
    SELECT event.id, endpoints.id FROM event CROSS JOIN endpoints
""")


def event_type_for(job_state: str) -> WebhookEventType | None:
    """The event announcing that a job entered `job_state`; None for `running`."""
    try:
        return _EVENT_BY_JOB_STATE[job_state]
    except KeyError:
        raise ValueError(f"unknown job state {job_state!r}") from None


def new_event_id() -> str:
    """A new event id; it stays the same across every retry of the event's delivery."""
    return "evt_" + secrets.token_hex(16)


def record_job_event(tx: Connection, workspace_id: str, job_id: str, job_state: str) -> None:
    """The event (if any) announcing that the job entered `job_state`, for every endpoint the
    workspace has now."""
    event_type = event_type_for(job_state)
    if event_type is None:
        return
    tx.execute(_RECORD, {"id": new_event_id(), "ws": workspace_id, "job_id": job_id,
                         "type": event_type})
