"""Webhook delivery by real `backfill scheduler` processes (and workers), on a database of
their own, to a receiver on 127.0.0.1 (BACKFILL_WEBHOOK_ALLOW_PRIVATE=true, as on-premises):
retries until a 2xx with the same event id, bytes and a valid signature; nothing lost across
a restart of every process; the URL checked again at delivery; the horizon; removal; and the
outbox written (or rolled back) with the job's state change."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from test_webhooks_support import (
    Receiver,
    Stack,
    job_document,
    seed_workspace,
    wait_for_job,
    wait_until,
)

from scheduler.jobs import operations, planner
from scheduler.webhooks import registry
from scheduler.webhooks.secretbox import new_secret_key
from scheduler.webhooks.signing import SIGNATURE_HEADER, verify
from shared.db import Database
from shared.settings import Settings
from shared.state import jobs

pytestmark = pytest.mark.integration

# Short only here: a timeout of 1.5 s (10 s by default) and retries after the 1 s floor.
FAST = {"BACKFILL_WEBHOOK_TIMEOUT_S": "1.5", "BACKFILL_WEBHOOK_RETRY_BASE_S": "0.1"}


@pytest.fixture
def stack(scratch_url: str, scratch_db: Database, broker_url: str,
          stub_url: str) -> Iterator[Stack]:
    running = Stack(scratch_url, broker_url, stub_url, extra_env=dict(FAST))
    yield running
    running.stop_all()
    # What a test left undelivered must not be attempted by the next test's scheduler.
    with scratch_db.transaction() as tx:
        tx.execute(text("UPDATE webhook_deliveries SET gave_up_at = now() "
                        "WHERE delivered_at IS NULL AND gave_up_at IS NULL"))


def register(stack: Stack, db: Database, workspace_id: str, url: str) -> registry.NewWebhook:
    settings = Settings(secret_key=SecretStr(stack.secret_key), webhook_allow_private=True)
    return registry.add_webhook(db, settings, workspace_id, url, actor="os:pytest")


def empty_job(db: Database, workspace_id: str) -> str:
    """A job that matches nothing: completed at birth, so its event exists at once."""
    filters = [{"field": "call_id", "op": "eq", "value": "call_that_does_not_exist"}]
    return planner.create_job(db, Settings(), workspace_id, "call", filters,
                              created_by="os:pytest").job_id


def delivery(db: Database, webhook_id: str, job_id: str) -> Any:
    with db.transaction() as tx:
        return tx.execute(text("""
            SELECT d.*, e.id AS event_id, e.type FROM webhook_deliveries AS d
              JOIN webhook_events AS e ON e.id = d.event_id
             WHERE d.webhook_id = :w AND e.job_id = :j
        """), {"w": webhook_id, "j": job_id}).one_or_none()


def assert_signed(received: Any, secret: str) -> dict[str, Any]:
    header = received.headers[SIGNATURE_HEADER.lower()]
    assert verify(header, secret, received.body, now=int(time.time()))
    document: dict[str, Any] = json.loads(received.body)
    assert received.headers["backfill-event-id"] == document["id"]
    return document


def test_retries_500_500_timeout_then_200_with_one_event_id_and_valid_signatures(
        stack: Stack, scratch_db: Database) -> None:
    seeded = seed_workspace(scratch_db, succeeding=0)
    with Receiver(script=[500, 500, "hang"], hang_s=3.0) as receiver:
        hook = register(stack, scratch_db, seeded.workspace_id, receiver.url)
        job_id = empty_job(scratch_db, seeded.workspace_id)
        stack.scheduler()
        wait_until(lambda: (row := delivery(scratch_db, hook.id, job_id)) and row.delivered_at,
                   60, "the event to be delivered")
    assert len(receiver.requests) == 4
    bodies = {r.body for r in receiver.requests}
    assert len(bodies) == 1  # the same bytes every time
    documents = [assert_signed(r, hook.secret) for r in receiver.requests]
    assert len({d["id"] for d in documents}) == 1
    document = documents[0]
    assert set(document) == {"id", "type", "created_at", "job"}
    assert document["type"] == "backfill.completed" and document["id"].startswith("evt_")
    assert document["job"] == job_document(scratch_db, job_id)
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert all(gap >= 0.9 for gap in gaps), gaps  # backed off, never at once
    row = delivery(scratch_db, hook.id, job_id)
    assert (row.attempts, row.last_status, row.last_error, row.gave_up_at) == (4, 200, None, None)
    lines = [json.loads(line) for line in stack.logs["scheduler"].read_text().splitlines()]
    attempts = [(r["result"], r["failure"]) for r in lines if r["event"] == "webhook_delivery"]
    assert attempts == [("retry", "status"), ("retry", "status"), ("retry", "timeout"),
                        ("delivered", None)]


def test_a_restart_of_every_process_between_attempts_loses_no_event(
        stack: Stack, scratch_db: Database) -> None:
    seeded = seed_workspace(scratch_db, succeeding=3)
    with Receiver(then=503) as receiver:
        hook = register(stack, scratch_db, seeded.workspace_id, receiver.url)
        stack.worker()
        stack.scheduler()
        completed = planner.create_job(scratch_db, Settings(), seeded.workspace_id, "call", [],
                                       created_by="os:pytest").job_id
        wait_for_job(scratch_db, completed)
        wait_until(lambda: receiver.requests, 30, "a first, failed attempt")
        stack.stop("scheduler")
        stack.stop("worker")
        # While nothing runs: another event, and the endpoint recovers.
        cancelled = planner.create_job(scratch_db, Settings(), seeded.workspace_id, "call", [],
                                       created_by="os:pytest").job_id
        operations.cancel(scratch_db, cancelled, actor="os:pytest", reason="while down")
        receiver.then = 200
        failed_before = len(receiver.requests)
        stack.worker()
        stack.scheduler()
        wait_until(lambda: all(delivery(scratch_db, hook.id, job).delivered_at
                               for job in (completed, cancelled)), 60, "both delivered")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for received in receiver.requests:
        document = assert_signed(received, hook.secret)
        by_type.setdefault(document["type"], []).append(document)
    assert set(by_type) == {"backfill.completed", "backfill.cancelled"}
    assert len(by_type["backfill.completed"]) >= failed_before + 1
    assert len({d["id"] for d in by_type["backfill.completed"]}) == 1  # same id after restart
    assert {d["job"]["id"] for d in by_type["backfill.cancelled"]} == {cancelled}
    assert by_type["backfill.cancelled"][-1]["job"]["state"] == "cancelled"


def test_the_url_is_checked_again_before_every_attempt(stack: Stack,
                                                       scratch_db: Database) -> None:
    """Registered while private addresses were allowed; the scheduler no longer allows them,
    as if the name now resolved to one: no request leaves."""
    seeded = seed_workspace(scratch_db, succeeding=0)
    with Receiver() as receiver:
        hook = register(stack, scratch_db, seeded.workspace_id, receiver.url)
        job_id = empty_job(scratch_db, seeded.workspace_id)
        stack.extra_env["BACKFILL_WEBHOOK_ALLOW_PRIVATE"] = "false"
        stack.scheduler()
        row = wait_until(lambda: (r := delivery(scratch_db, hook.id, job_id)) and r.attempts >= 2
                         and r.last_error and r, 30, "two refused attempts")
        assert receiver.requests == []
    assert row.delivered_at is None and row.last_status is None
    assert row.last_error.startswith("the URL is refused now: url: must use https://")


def test_a_delivery_is_given_up_past_the_horizon(stack: Stack, scratch_db: Database) -> None:
    seeded = seed_workspace(scratch_db, succeeding=0)
    with Receiver(then=500) as receiver:
        hook = register(stack, scratch_db, seeded.workspace_id, receiver.url)
        job_id = empty_job(scratch_db, seeded.workspace_id)
        with scratch_db.transaction() as tx:  # an event made 27 hours ago
            tx.execute(text("UPDATE webhook_events SET created_at = now() - interval '27 hours'"
                            " WHERE job_id = :j"), {"j": job_id})
        stack.scheduler()
        row = wait_until(lambda: (r := delivery(scratch_db, hook.id, job_id)) and r.gave_up_at
                         and r, 30, "the delivery to be given up")
        time.sleep(2.5)  # past the next attempt it would have had
        assert len(receiver.requests) == 1
    assert (row.attempts, row.last_status, row.delivered_at) == (1, 500, None)


def test_removing_a_webhook_gives_up_its_pending_deliveries(stack: Stack,
                                                            scratch_db: Database) -> None:
    seeded = seed_workspace(scratch_db, succeeding=0)
    with Receiver(then=500) as receiver:
        hook = register(stack, scratch_db, seeded.workspace_id, receiver.url)
        job_id = empty_job(scratch_db, seeded.workspace_id)
        stack.scheduler()
        wait_until(lambda: receiver.requests, 30, "a first attempt")
        registry.remove_webhook(scratch_db, hook.id, actor="os:pytest")
        seen = len(receiver.requests)
        time.sleep(3)
        assert len(receiver.requests) <= seen + 1  # at most the attempt already under way
    row = delivery(scratch_db, hook.id, job_id)
    assert row.gave_up_at is not None and row.delivered_at is None
    assert row.last_error == "the webhook was removed"


def test_the_outbox_is_written_with_the_state_change_or_not_at_all(
        scratch_db: Database) -> None:
    """No scheduler runs here: only what the transitions themselves write."""
    seeded = seed_workspace(scratch_db, succeeding=2)
    silent = seed_workspace(scratch_db, succeeding=1)  # no endpoint: no event
    keyed = Settings(secret_key=SecretStr(new_secret_key()), webhook_allow_private=True)
    first = registry.add_webhook(scratch_db, keyed, seeded.workspace_id, "http://127.0.0.1:9/a",
                                 actor="os:pytest")
    job_id = planner.create_job(scratch_db, Settings(), seeded.workspace_id, "call", [],
                                created_by="os:pytest").job_id
    quiet_job = planner.create_job(scratch_db, Settings(), silent.workspace_id, "call", [],
                                   created_by="os:pytest").job_id

    with pytest.raises(RuntimeError), scratch_db.transaction() as tx:
        jobs.pause(tx, jobs.lock(tx, job_id), "rolled back")
        raise RuntimeError("the change fails after the transition")
    assert events_of(scratch_db, job_id) == []

    operations.pause(scratch_db, job_id, actor="os:pytest", reason="look")
    operations.resume(scratch_db, job_id, actor="os:pytest")  # running again: not announced
    with scratch_db.transaction() as tx:
        assert jobs.pause_running(tx, job_id, "llm_auth: 401")
    operations.cancel(scratch_db, job_id, actor="os:pytest", reason="done")
    operations.cancel(scratch_db, quiet_job, actor="os:pytest", reason="done")
    assert events_of(scratch_db, job_id) == [
        ("backfill.paused", first.id), ("backfill.paused", first.id),
        ("backfill.cancelled", first.id)]
    assert events_of(scratch_db, quiet_job) == []


def events_of(db: Database, job_id: str) -> list[tuple[str, str]]:
    with db.transaction() as tx:
        rows = tx.execute(text("""
            SELECT e.type, d.webhook_id FROM webhook_events AS e
              JOIN webhook_deliveries AS d ON d.event_id = e.id
             WHERE e.job_id = :j ORDER BY e.created_at, e.id
        """), {"j": job_id}).all()
    return [(row.type, row.webhook_id) for row in rows]
