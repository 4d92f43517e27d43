"""The scheduler's gauges (`shared.metrics.SCRAPED_GAUGES`), computed when Prometheus scrapes
`/metrics`: a few grouped SQL counts and the broker queue's length. Nothing is computed when
nobody scrapes, and nothing is stale when someone does.

Every scheduler replica answers with the same numbers (they are the database's), so a
dashboard takes `max` over replicas, never `sum`. A scrape while Postgres or Redis is away
leaves those gauges out (the process's other metrics still answer) and logs why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text

from shared.broker import redis_client_url
from shared.db import Database
from shared.metrics import BROKER_QUEUE_LENGTH, JOB_ITEMS, JOBS, WEBHOOKS_PENDING
from shared.settings import Settings
from shared.vocabulary import ITEM_STATES, JOB_STATES

log = logging.getLogger("backfill.scheduler.gauges")

# Well inside Prometheus's default scrape timeout (10 s).
SCRAPE_TIMEOUT_MS = 5000

_ITEMS_OF_RUNNING_JOBS = text("""
    SELECT i.state, count(*) AS n
      FROM backfill_items AS i JOIN backfill_jobs AS j ON j.id = i.job_id
     WHERE j.state = 'running'
     GROUP BY i.state
""")
_JOBS_BY_STATE = text("SELECT state, count(*) AS n FROM backfill_jobs GROUP BY state")
_OPEN_DELIVERIES = text("""
    SELECT count(*) FROM webhook_deliveries WHERE delivered_at IS NULL AND gave_up_at IS NULL
""")


class SchedulerGauges(Collector):
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.queue = settings.queue_name
        self.redis = redis.Redis.from_url(redis_client_url(settings.require_broker_url()),
                                          socket_timeout=2, socket_connect_timeout=2)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Registering must not query anything: the families, without samples.
        return [JOB_ITEMS.family(), JOBS.family(), BROKER_QUEUE_LENGTH.family(),
                WEBHOOKS_PENDING.family()]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield from self._database_gauges()
        yield from self._broker_gauge()

    def _database_gauges(self) -> list[GaugeMetricFamily]:
        items: dict[str, int] = dict.fromkeys(ITEM_STATES, 0)
        jobs: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
        try:
            with self.db.transaction() as tx:
                tx.execute(text("SELECT set_config('statement_timeout', :ms, true)"),
                           {"ms": str(SCRAPE_TIMEOUT_MS)})
                items |= {row.state: row.n for row in tx.execute(_ITEMS_OF_RUNNING_JOBS)}
                jobs |= {row.state: row.n for row in tx.execute(_JOBS_BY_STATE)}
                pending = int(tx.execute(_OPEN_DELIVERIES).scalar_one())
        except Exception as exc:  # Postgres away: these gauges are missing from this scrape
            log.warning("cannot count items and jobs for /metrics: %s", type(exc).__name__)
            return []
        return [_by_state(JOB_ITEMS.family(), items), _by_state(JOBS.family(), jobs),
                _single(WEBHOOKS_PENDING.family(), pending)]

    def _broker_gauge(self) -> list[GaugeMetricFamily]:
        try:
            # The list KEDA watches: messages no worker has taken yet.
            length = int(self.redis.llen(self.queue))
        except redis.RedisError as exc:
            log.warning("cannot read the broker queue length for /metrics: %s",
                        type(exc).__name__)
            return []
        return [_single(BROKER_QUEUE_LENGTH.family(), length)]


def _by_state(family: GaugeMetricFamily, counts: dict[str, int]) -> GaugeMetricFamily:
    for state, count in counts.items():
        family.add_metric([state], count)
    return family


def _single(family: GaugeMetricFamily, value: int) -> GaugeMetricFamily:
    family.add_metric([], value)
    return family
