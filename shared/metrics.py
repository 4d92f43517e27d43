"""Prometheus metrics, one definition each (`prometheus_client`, its default registry).

Who counts what:
- the pipeline (worker tasks, and the scheduler's batch cycle, which runs the same steps):
  sessions by outcome, tokens and cost as billed;
- the worker's LLM call policy: requests by status, their duration, rate-limit waits;
- the scheduler: messages dispatched, leadership, webhook deliveries, and gauges computed from
  SQL counts when it is scraped (`scheduler/run/gauges.py`, names below);
- the API: HTTP requests by route.

Each process serves its own numbers: `backfill worker|scheduler --metrics-port P`
(`BACKFILL_METRICS_PORT`) and the API at `/metrics`; Prometheus adds them up.

Labels take a few known values each: a model, an outcome, an error kind, a state, a status, a
route template. Never a job, session or workspace id: every value of a label is a series of
its own, kept for as long as the process lives.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

from shared.pricing import Tokens

# A `_created` timestamp beside every counter doubles the series and no panel reads it.
disable_created_metrics()

# The value of a label that does not apply (a success has no error kind, a skip no model).
NONE = "none"

# LLM calls take seconds; a batch result can take hours (it is not timed here).
_LLM_SECONDS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120)
_WAIT_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
_HTTP_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# --------------------------------------------------------------------------- pipeline

SESSIONS = Counter(
    "backfill_sessions", "Attempts at a session that ended, by what they ended in",
    ["outcome", "error_kind", "model"])
LLM_TOKENS = Counter(
    "backfill_llm_tokens", "Tokens the provider billed (type: input, output, cache_read, "
    "cache_write)", ["model", "type"])
LLM_COST = Counter(
    "backfill_llm_cost_usd", "What the billed tokens cost at the configured prices", ["model"])

# --------------------------------------------------------------------------- LLM calls (worker)

LLM_REQUESTS = Counter(
    "backfill_llm_requests", "Messages requests by HTTP status (timeout, connection: none "
    "came back)", ["model", "status"])
LLM_REQUEST_DURATION = Histogram(
    "backfill_llm_request_duration_seconds", "Time from sending a Messages request to its "
    "answer", ["model"], buckets=_LLM_SECONDS)
RATELIMIT_WAIT = Histogram(
    "backfill_ratelimit_wait_seconds", "Time a call waited for the global rate limit",
    buckets=_WAIT_SECONDS)

# --------------------------------------------------------------------------- scheduler

DISPATCHED = Counter("backfill_dispatched_messages", "Task messages published to the broker")
SCHEDULER_LEADER = Gauge(
    "backfill_scheduler_leader", "1 while this scheduler holds the leader lock and dispatches")
WEBHOOK_DELIVERIES = Counter(
    "backfill_webhook_deliveries", "Webhook delivery attempts by result (delivered, retry, "
    "gave_up)", ["result"])

# --------------------------------------------------------------------------- API

HTTP_REQUESTS = Counter(
    "backfill_http_requests", "API requests by route template and status",
    ["method", "route", "status"])
HTTP_REQUEST_DURATION = Histogram(
    "backfill_http_request_duration_seconds", "API request duration", ["route"],
    buckets=_HTTP_SECONDS)


# --------------------------------------------------------------------------- scraped gauges


@dataclass(frozen=True)
class GaugeSpec:
    """A gauge the scheduler computes when scraped (a SQL count, a queue length)."""

    name: str
    documentation: str
    labels: tuple[str, ...] = ()

    def family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=list(self.labels))


JOB_ITEMS = GaugeSpec("backfill_job_items", "Items of running jobs, by item state", ("state",))
JOBS = GaugeSpec("backfill_jobs", "Jobs, by job state", ("state",))
BROKER_QUEUE_LENGTH = GaugeSpec(
    "backfill_broker_queue_length", "Task messages waiting in the broker queue (what KEDA "
    "scales the workers on)")
WEBHOOKS_PENDING = GaugeSpec(
    "backfill_webhook_deliveries_pending", "Webhook deliveries neither delivered nor given up")
SCRAPED_GAUGES = (JOB_ITEMS, JOBS, BROKER_QUEUE_LENGTH, WEBHOOKS_PENDING)


# --------------------------------------------------------------------------- recording


def count_session(outcome: str, error_kind: str | None, model: str | None) -> None:
    SESSIONS.labels(outcome, error_kind or NONE, model or NONE).inc()


def count_billed(model: str, tokens: Tokens, usd: float) -> None:
    for kind, count in (("input", tokens.input), ("output", tokens.output),
                        ("cache_read", tokens.cache_read), ("cache_write", tokens.cache_write)):
        if count:
            LLM_TOKENS.labels(model, kind).inc(count)
    if usd:
        LLM_COST.labels(model).inc(usd)


def count_llm_request(model: str, status: str, seconds: float | None) -> None:
    """One request; `seconds` is None when no answer came back (its time says nothing)."""
    LLM_REQUESTS.labels(model, status).inc()
    if seconds is not None:
        LLM_REQUEST_DURATION.labels(model).observe(seconds)


# --------------------------------------------------------------------------- serving


def serve(port: int) -> None:
    """/metrics of this process on every interface (Prometheus scrapes from elsewhere), on a
    daemon thread; OSError when the port is taken."""
    start_http_server(port, addr="0.0.0.0")


def exposition() -> tuple[bytes, str]:
    """This process's metrics in the text format, and its content type (the API's route)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
