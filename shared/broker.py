"""The broker: the Celery app object and task names, shared by the scheduler (sends) and
workers (run); a read-only view of the messages the broker holds (the reconciler's
lost-message check); and the plain Redis URL and reachability check beside them."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import redis
from celery import Celery

from shared.errors import BrokerUnreachable
from shared.settings import Settings

ANALYZE_SESSION = "backfill.analyze_session"


def make_celery(settings: Settings) -> Celery:
    """Configured for long I/O-bound tasks where Postgres, not the broker, holds the state."""
    app = Celery("backfill", broker=settings.require_broker_url(), set_as_current=True)
    app.conf.update(
        task_default_queue=settings.queue_name,
        task_routes={ANALYZE_SESSION: {"queue": settings.queue_name}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        # Task events so Flower can list tasks; arguments are ids only.
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_transport_options={
            # Must exceed the longest task including its retry countdown, else redelivery.
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_timeout": 10,
            "socket_connect_timeout": 10,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=10,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
    )
    return app


# --- what the broker holds (for the reconciler) -----------------------------------------------

TaskKey = tuple[str, str]  # (job_id, session_id)


@dataclass(frozen=True)
class BrokerSnapshot:
    """The analyze_session messages the broker holds: waiting in the queue, or taken by a worker
    and not acknowledged yet (with the time the worker took it, in epoch seconds)."""

    waiting: frozenset[TaskKey]
    taken_at: Mapping[TaskKey, float]

    def holds(self, key: TaskKey, taken_since: float) -> bool:
        """Whether a message for `key` waits, or was taken at or after `taken_since`.

        A live worker claims within milliseconds of taking a message, so a message taken long
        ago whose item is still queued was taken by a worker that died or could not claim.
        """
        return key in self.waiting or self.taken_at.get(key, float("-inf")) >= taken_since


def broker_snapshot(app: Celery, queue: str) -> BrokerSnapshot | None:
    """Read the queue and kombu's `unacked` hash in one MULTI/EXEC.

    None when the broker cannot be inspected this way (not Redis, or a global key prefix):
    the reconciler then relies on the queued deadline alone.
    """
    with app.connection_for_read() as connection:
        if connection.transport.driver_type != "redis":
            return None
        channel = connection.default_channel
        if getattr(channel, "global_keyprefix", ""):
            return None
        return _redis_snapshot(channel, queue)


def _redis_snapshot(channel: Any, queue: str) -> BrokerSnapshot:
    # Priority messages live in sibling lists (queue + sep + priority); read them all.
    lists = list(dict.fromkeys(channel._q_for_pri(queue, p) for p in channel.priority_steps))
    with channel.conn_or_acquire() as client, client.pipeline(transaction=True) as pipe:
        for key in lists:
            pipe.lrange(key, 0, -1)
        pipe.hgetall(channel.unacked_key)
        pipe.zrange(channel.unacked_index_key, 0, -1, withscores=True)
        *queued, unacked, index = pipe.execute()
    waiting = {key for raw in chain.from_iterable(queued) if (key := task_key(raw))}
    delivered = dict(index)
    taken_at: dict[TaskKey, float] = {}
    for tag, raw in unacked.items():
        key = task_key(raw)
        if key is not None:
            taken_at[key] = max(taken_at.get(key, 0.0), float(delivered.get(tag, 0.0)))
    return BrokerSnapshot(frozenset(waiting), taken_at)


def task_key(raw: bytes | str) -> TaskKey | None:
    """(job_id, session_id) of a raw analyze_session message, else None.

    A queued message is kombu's JSON envelope; an unacked entry wraps it as
    `[envelope, exchange, routing_key]`. The body is Celery protocol 2: `[args, kwargs, embed]`.
    """
    try:
        envelope = json.loads(raw)
        if isinstance(envelope, list):
            envelope = envelope[0]
        if envelope["headers"].get("task") != ANALYZE_SESSION:
            return None
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]), str(args[1])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None  # not ours, or not readable: the reconciler treats its item as unheld


# --- plain Redis ------------------------------------------------------------------------------


def redis_client_url(broker_url: str) -> str:
    """kombu's `redis+socket://PATH` is redis-py's `unix://PATH`."""
    if broker_url.startswith("redis+socket://"):
        return "unix://" + broker_url.removeprefix("redis+socket://")
    return broker_url


def broker_reachable(url: str, timeout_s: float = 3.0) -> bool:
    try:
        with redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        ) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def broker_location(broker_url: str | None) -> str:
    """HOST:PORT (or the socket path) of a broker URL, never its password."""
    if not broker_url:
        return "(BROKER_URL is not set)"
    client_url = redis_client_url(broker_url)
    if client_url.startswith("unix://"):
        return "socket " + client_url.removeprefix("unix://")
    kwargs = redis.connection.parse_url(client_url)
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def require_broker(broker_url: str | None) -> None:
    """Refuse to start a process that needs the broker while it does not answer."""
    if not broker_url or not broker_reachable(redis_client_url(broker_url)):
        raise BrokerUnreachable(
            f"cannot connect to the broker at {broker_location(broker_url)}: is Redis "
            "running, and BROKER_URL right?")
