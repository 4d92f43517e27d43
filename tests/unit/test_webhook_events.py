"""Webhook events: which job states announce what, and the exact body bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scheduler.webhooks.events import event_body
from shared.state.events import event_type_for
from shared.vocabulary import JOB_STATES, WEBHOOK_EVENT_TYPES

CREATED = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
JOB = {"id": "job_1", "workspace_id": "ws_1", "state": "completed",
       "counts": {"matched": 2, "succeeded": 2}, "created_at": "2025-03-04T05:00:00+00:00"}


def test_the_vocabulary_is_designs() -> None:
    assert WEBHOOK_EVENT_TYPES == ("backfill.completed", "backfill.paused", "backfill.cancelled")


@pytest.mark.parametrize(("state", "event"), [("completed", "backfill.completed"),
                                              ("paused", "backfill.paused"),
                                              ("cancelled", "backfill.cancelled"),
                                              ("running", None)])
def test_job_states_map_to_events(state: str, event: str | None) -> None:
    assert event_type_for(state) == event


def test_every_job_state_is_decided() -> None:
    for state in JOB_STATES:
        event_type_for(state)


def test_an_unknown_state_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown job state"):
        event_type_for("exploded")


def test_the_body_has_the_designed_fields() -> None:
    body = event_body("evt_1", "backfill.completed", CREATED, JOB)
    assert json.loads(body) == {"id": "evt_1", "type": "backfill.completed",
                                "created_at": "2025-03-04T05:06:07+00:00", "job": JOB}


def test_the_body_is_compact_bytes() -> None:
    body = event_body("evt_1", "backfill.paused", CREATED, {"id": "job_1", "counts": {"a": 1}})
    assert body == (b'{"created_at":"2025-03-04T05:06:07+00:00","id":"evt_1",'
                    b'"job":{"counts":{"a":1},"id":"job_1"},"type":"backfill.paused"}')


def test_equal_input_gives_equal_bytes_whatever_the_key_order() -> None:
    reordered = dict(reversed(list(JOB.items())))
    first = event_body("evt_1", "backfill.completed", CREATED, JOB)
    assert first == event_body("evt_1", "backfill.completed", CREATED, reordered)
    assert first == event_body("evt_1", "backfill.completed", CREATED, json.loads(
        json.dumps(JOB)))


def test_created_at_is_written_in_utc() -> None:
    one_hour_east = timezone(timedelta(hours=1))
    body = event_body("evt_1", "backfill.completed", CREATED.astimezone(one_hour_east), JOB)
    assert json.loads(body)["created_at"] == "2025-03-04T05:06:07+00:00"


def test_a_naive_created_at_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        event_body("evt_1", "backfill.completed", datetime(2025, 3, 4), JOB)


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        event_body("evt_1", "backfill.exploded", CREATED, JOB)


def test_the_body_is_ascii_with_text_escaped() -> None:
    body = event_body("evt_1", "backfill.completed", CREATED, {"workspace_id": "café ✓"})
    assert body.isascii()
    assert json.loads(body)["job"] == {"workspace_id": "café ✓"}


def test_a_job_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError):
        event_body("evt_1", "backfill.completed", CREATED, {"rate": float("nan")})
