"""Liveness and readiness checks for containers that serve no HTTP: workers and schedulers.

`backfill probe worker` asks this host's Celery worker for a `ping` over the broker (the
worker's main thread answers even when every pool thread is busy with an LLM call), so it
needs neither Flower nor an HTTP port. When the broker itself is unreachable the probe passes:
restarting workers cannot bring Redis back, and a restart storm would only add to the outage.

`backfill probe scheduler` reads the age of the heartbeat file the scheduler loop touches on
every pass (leader and standby alike).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from scheduler.run.leader import heartbeat_age_s
from shared.broker import make_celery
from shared.settings import Settings


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    message: str


def default_worker_name() -> str:
    """Celery's default node name, which is also what a pod's hostname gives it."""
    return f"celery@{socket.gethostname()}"


def probe_worker(settings: Settings, destination: str, timeout_s: float) -> ProbeResult:
    celery = make_celery(settings)
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)
        replies = celery.control.ping(destination=[destination], timeout=timeout_s)
    except Exception as exc:  # any broker failure: not the worker's fault, see module doc
        return ProbeResult(True, f"broker unreachable ({type(exc).__name__}); "
                                 f"not judging {destination}")
    if replies:
        return ProbeResult(True, f"{destination} answered")
    return ProbeResult(False, f"{destination} did not answer within {timeout_s:g}s")


def probe_scheduler(heartbeat_file: Path | None, max_age_s: float) -> ProbeResult:
    if heartbeat_file is None:
        return ProbeResult(False, "BACKFILL_SCHEDULER_HEARTBEAT_FILE is not set")
    age = heartbeat_age_s(heartbeat_file)
    if age is None:
        return ProbeResult(False, f"no heartbeat at {heartbeat_file} yet")
    if age > max_age_s:
        return ProbeResult(False, f"last heartbeat {age:.0f}s ago (limit {max_age_s:g}s)")
    return ProbeResult(True, f"last heartbeat {age:.1f}s ago")
