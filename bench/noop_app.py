"""The baselines of figure (a), on the worker's own Celery app, broker and pool.

    celery -A bench.noop_app worker --pool threads --concurrency C --queues Q

`bench.noop` does nothing but count itself done in Redis (one INCR), so the bench can see
when the last one finished without Celery results (which the app switches off).

`bench.sdk_call` adds what no pipeline can do without: the one Messages call of a session,
through the worker's own caller (`worker.llm`: one SDK client per process, its call policy,
the raw answer decoded once), with a request of the pipeline's shape built once. Its rate is
the ceiling of the pipeline's: the pipeline ÷ no-op ratio cannot pass SDK call ÷ no-op.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import redis

from bench.noop_names import AGENT_FIELDS, DONE_KEY, NOOP, SDK_CALL
from shared import analysis
from shared.broker import redis_client_url
from shared.settings import get_settings
from worker.app import app
from worker.llm import Caller, make_caller

# One of the pipeline bench's sessions, as `seed_workspace` writes them (in SQL).
TRANSCRIPT = [{"role": "agent", "content": "Hello, how can I help?"},
              {"role": "user", "content": "My order 1 arrived broken."}]

@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(redis_client_url(get_settings().require_broker_url()))


@app.task(name=NOOP, ignore_result=True, acks_late=True)
def noop() -> None:
    _redis().incr(DONE_KEY)


@cache
def _caller() -> Caller:
    return make_caller(get_settings())


@cache
def _request() -> dict[str, Any]:
    settings = get_settings()
    agent = analysis.AgentVersionInfo("agent", 0, False, "voice", "claude-haiku-4-5",
                                      AGENT_FIELDS)
    config = analysis.resolve_config("call", "agent", [], {"agent": [agent]},
                                     settings.default_model)
    return analysis.build_request(config, TRANSCRIPT, settings.llm_max_tokens)


@app.task(name=SDK_CALL, ignore_result=True, acks_late=True)
def sdk_call() -> None:
    _caller().complete(_request())
    _redis().incr(DONE_KEY)


__all__ = ["app", "noop", "sdk_call"]
