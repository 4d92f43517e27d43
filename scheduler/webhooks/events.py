"""The events a webhook receives and the exact bytes of their body.

Which job state announces which event is the outbox's rule (`shared.state.events`). The body
is built once, at the event's first delivery attempt, and kept: the signature covers the raw
bytes, and every retry must send the same bytes under the same event id so a receiver can
deduplicate. The encoding is deterministic (sorted keys, no spaces) so equal events give
equal bytes, and ASCII-only (non-ASCII text as \\u escapes) so a receiver that turns the
body into text and back before checking the signature still gets the signed bytes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from shared.vocabulary import WEBHOOK_EVENT_TYPES


def event_body(event_id: str, event_type: str, created_at: datetime, job: dict[str, Any]
               ) -> bytes:
    """`{"id", "type", "created_at", "job"}` as compact JSON bytes; `created_at` in UTC."""
    if event_type not in WEBHOOK_EVENT_TYPES:
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
