"""Leases and the reconciler against real Postgres and Redis: a killed worker's items come back,
lost messages are found by reading the broker (and only those), the heartbeat keeps a live
worker's claims, and the attempt cap ends an item that keeps dying with `lease_expired`."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import text

from chaos.cluster import scratch_database
from chaos.seed import running_job, workspace_with_calls
from scheduler.run.dispatcher import Dispatcher
from shared.broker import ANALYZE_SESSION, broker_snapshot, make_celery, redis_client_url, task_key
from shared.db import Database
from shared.settings import Settings
from shared.state import items as item_states
from tests.integration.conftest import prepared
from worker import llm
from worker.context import WorkerContext
from worker.leases import LeaseKeeper
from worker.service import run_and_record

pytestmark = pytest.mark.integration

GRACE_S = 1.0


@pytest.fixture(scope="module")
def scratch_url(database_url: str) -> Iterator[str]:
    with scratch_database(database_url, "backfill_leases") as url:
        yield url


@pytest.fixture(scope="module")
def settings(scratch_url: str, broker_url: str) -> Settings:
    # A queue of its own: nothing consumes it, so messages stay where the test puts them.
    return Settings(database_url=scratch_url, broker_url=broker_url,
                    queue_name=f"backfill_leases_{secrets.token_hex(4)}", lease_s=600,
                    max_attempts=3, lost_message_grace_s=GRACE_S, reconcile_interval_s=0)


@pytest.fixture(scope="module")
def db(settings: Settings) -> Iterator[Database]:
    database = Database.from_settings(settings, pool_size=3)
    yield database
    database.dispose()


@pytest.fixture(scope="module")
def celery_app(settings: Settings) -> Iterator[Celery]:
    app = make_celery(settings)
    yield app
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(settings.queue_name)
    app.close()


@pytest.fixture(scope="module")
def dispatcher(db: Database, celery_app: Celery, settings: Settings) -> Dispatcher:
    return Dispatcher(db, celery_app, settings)


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """Every test starts with an empty queue and leaves no fake deliveries behind."""
    client = redis.Redis.from_url(redis_client_url(settings.require_broker_url()))
    client.delete(settings.queue_name)
    yield client
    for tag in client.hkeys("unacked"):
        if tag.startswith(b"test-"):
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
    client.delete(settings.queue_name)
    client.close()


def new_job(db: Database, count: int = 1, state: str = "queued") -> tuple[str, list[str]]:
    suffix = secrets.token_hex(4)
    sids = [f"call_{suffix}_{n}" for n in range(count)]
    workspace_with_calls(db, f"ws_{suffix}", {sid: "hello" for sid in sids})
    running_job(db, f"bf_{suffix}", f"ws_{suffix}", sids, state=state)
    return f"bf_{suffix}", sids


def items(db: Database, job: str) -> dict[str, Any]:
    with db.transaction() as tx:
        rows = tx.execute(text("SELECT * FROM backfill_items WHERE job_id = :j"), {"j": job})
        return {row.session_id: row for row in rows}


def age_queued(db: Database, job: str, seconds: float) -> None:
    with db.transaction() as tx:
        tx.execute(text("UPDATE backfill_items SET queued_at = now() - make_interval(secs => :s)"
                        " WHERE job_id = :j AND state = 'queued'"), {"j": job, "s": seconds})


def claim(db: Database, job: str, sid: str, lease_s: float = 600) -> item_states.Claim:
    with db.transaction() as tx:
        found = item_states.claim(tx, job, sid, lease_s)
    assert found is not None
    return found


def expire_lease(db: Database, job: str) -> None:
    with db.transaction() as tx:
        tx.execute(text("UPDATE backfill_items SET lease_expires_at = now() - interval '1 second'"
                        " WHERE job_id = :j AND state = 'running'"), {"j": job})


def test_expired_lease_goes_back_to_pending(db: Database, dispatcher: Dispatcher) -> None:
    job, [sid] = new_job(db)
    claim(db, job, sid)
    expire_lease(db, job)
    report = dispatcher.reconcile()
    assert report.leases_requeued >= 1
    row = items(db, job)[sid]
    assert (row.state, row.error_kind, row.attempts, row.lease_expires_at) == (
        "pending", "lease_expired", 1, None)


def test_an_item_that_keeps_dying_fails_with_lease_expired_at_the_cap(
        db: Database, dispatcher: Dispatcher, settings: Settings) -> None:
    job, [sid] = new_job(db)
    for attempt in range(1, settings.max_attempts + 1):
        with db.transaction() as tx:
            tx.execute(text("UPDATE backfill_items SET state = 'queued' WHERE job_id = :j"),
                       {"j": job})
        assert claim(db, job, sid).attempt == attempt
        expire_lease(db, job)
        dispatcher.reconcile()
    row = items(db, job)[sid]
    assert (row.state, row.error_kind, row.finished_at is not None) == (
        "failed", "lease_expired", True)


def test_expired_lease_of_a_cancelled_job_ends_cancelled(db: Database,
                                                         dispatcher: Dispatcher) -> None:
    job, [sid] = new_job(db)
    claim(db, job, sid)
    with db.transaction() as tx:
        tx.execute(text("UPDATE backfill_jobs SET state = 'cancelled' WHERE id = :j"), {"j": job})
    expire_lease(db, job)
    dispatcher.reconcile()
    assert items(db, job)[sid].state == "cancelled"


def test_the_database_gone_while_recording_is_recovered_by_the_lease(
        db: Database, dispatcher: Dispatcher, settings: Settings) -> None:
    """The worker can write neither the result nor the failure: the item stays running until
    its lease lapses, then the reconciler sends it again."""
    job, [sid] = new_job(db)
    held = claim(db, job, sid)
    dead = settings.model_copy(update={
        "database_url": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
        "db_connect_timeout_s": 1})
    dead_db = Database.from_settings(dead, pool_size=1)
    client = llm.make_caller(settings.model_copy(update={
        "anthropic_base_url": "http://127.0.0.1:1", "backfill_llm": "stub"}))
    started = prepared(WorkerContext(settings, db, client), held)
    try:
        assert run_and_record(WorkerContext(dead, dead_db, client), started) == "abandoned"
    finally:
        client.close()
        dead_db.dispose()
    assert items(db, job)[sid].state == "running"
    expire_lease(db, job)
    dispatcher.reconcile()
    assert items(db, job)[sid].state == "pending"


def publish(celery_app: Celery, settings: Settings, job: str, sid: str) -> None:
    celery_app.send_task(ANALYZE_SESSION, args=[job, sid], queue=settings.queue_name)


def take_message(redis_client: redis.Redis, settings: Settings, taken_at: float) -> None:
    """What a worker's kombu does on delivery: the message moves from the queue to the
    `unacked` hash, indexed by the time it was taken."""
    raw = redis_client.rpop(settings.queue_name)
    assert raw is not None
    tag = f"test-{secrets.token_hex(8)}"
    redis_client.hset("unacked", tag, json.dumps([json.loads(raw), "", settings.queue_name]))
    redis_client.zadd("unacked_index", {tag: taken_at})


def test_broker_snapshot_sees_waiting_and_taken_messages(
        db: Database, celery_app: Celery, settings: Settings, redis_client: redis.Redis) -> None:
    job, [waiting, taken] = new_job(db, 2)
    publish(celery_app, settings, job, taken)
    publish(celery_app, settings, job, waiting)
    take_message(redis_client, settings, taken_at=1234.5)  # the oldest: `taken`
    snapshot = broker_snapshot(celery_app, settings.queue_name)
    assert snapshot is not None
    assert (job, waiting) in snapshot.waiting and (job, taken) not in snapshot.waiting
    assert snapshot.taken_at[(job, taken)] == 1234.5
    assert snapshot.holds((job, taken), 1000) and not snapshot.holds((job, taken), 2000)


def test_lost_messages_are_found_and_only_those(
        db: Database, dispatcher: Dispatcher, celery_app: Celery, settings: Settings,
        redis_client: redis.Redis) -> None:
    job, sids = new_job(db, 5)
    lost, waiting, taken_now, taken_long_ago, young = sids
    for sid in (taken_long_ago, taken_now, waiting):  # taken ones first: rpop takes the oldest
        publish(celery_app, settings, job, sid)
    take_message(redis_client, settings, taken_at=time.time() - 60)  # its worker died
    take_message(redis_client, settings, taken_at=time.time())  # a worker is claiming it
    age_queued(db, job, 10 * GRACE_S)
    with db.transaction() as tx:  # just dispatched: its message may be on its way
        tx.execute(text("UPDATE backfill_items SET queued_at = now() WHERE job_id = :j "
                        "AND session_id = :s"), {"j": job, "s": young})
    assert dispatcher.reconciler.requeue_lost_messages() == 2
    states = {sid: row.state for sid, row in items(db, job).items()}
    assert states == {lost: "pending", taken_long_ago: "pending", waiting: "queued",
                      taken_now: "queued", young: "queued"}
    assert items(db, job)[lost].attempts == 0  # a lost message is not the item's attempt


def test_task_key_ignores_what_is_not_ours() -> None:
    assert task_key(b"not json") is None
    assert task_key(json.dumps({"headers": {"task": "other"}, "body": ""})) is None


def test_heartbeat_keeps_a_running_claim_and_only_that(db: Database, settings: Settings) -> None:
    job, [kept, released, superseded, overdue] = new_job(db, 4)
    keeper = LeaseKeeper(db, lease_s=1.0, max_hold_s=30)
    claims = {sid: claim(db, job, sid, lease_s=1.0) for sid in (kept, released, superseded)}
    stale = LeaseKeeper(db, lease_s=1.0, max_hold_s=0.0)  # held too long: a stuck thread
    overdue_claim = claim(db, job, overdue, lease_s=1.0)
    keeper.start()
    stale.start()
    try:
        with (keeper.holding(claims[kept]), keeper.holding(claims[superseded]),
              stale.holding(overdue_claim)):
            with keeper.holding(claims[released]):
                pass
            with db.transaction() as tx:  # the reconciler took it back and it was re-claimed
                tx.execute(text("UPDATE backfill_items SET attempts = attempts + 1 "
                                "WHERE job_id = :j AND session_id = :s"),
                           {"j": job, "s": superseded})
            time.sleep(2.5)
            with db.transaction() as tx:
                alive = dict(tx.execute(text(
                    "SELECT session_id, lease_expires_at > now() FROM backfill_items "
                    "WHERE job_id = :j"), {"j": job}).all())
    finally:
        keeper.stop()
        stale.stop()
    assert alive == {kept: True, released: False, superseded: False, overdue: False}
