"""The baseline of figure (a): a no-op task on the worker's own Celery app, broker and pool.

    celery -A bench.noop_app worker --pool threads --concurrency C --queues Q

The task does nothing but count itself done in Redis (one INCR), so the bench can see when
the last one finished without Celery results (which the app switches off).
"""

from __future__ import annotations

import threading

import redis

from bench.noop_names import DONE_KEY, NOOP
from shared.broker import redis_client_url
from shared.settings import get_settings
from worker.app import app

_client: redis.Redis | None = None
_lock = threading.Lock()


def _redis() -> redis.Redis:
    global _client
    with _lock:
        if _client is None:
            _client = redis.Redis.from_url(redis_client_url(get_settings().require_broker_url()))
        return _client


@app.task(name=NOOP, ignore_result=True, acks_late=True)
def noop() -> None:
    _redis().incr(DONE_KEY)


__all__ = ["app", "noop"]
