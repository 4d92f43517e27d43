"""Leader election: of all running schedulers, only the holder of one Postgres lock dispatches.

Run `backfill scheduler` as two (or more) replicas on different hosts. Each opens a dedicated
connection and calls `pg_try_advisory_lock(key)`; the one that gets it is the leader and runs
dispatcher passes, the others retry every `BACKFILL_LEADER_RETRY_S`. The lock is session-level:
Postgres releases it when the leader's connection ends, whether the leader exits, is killed or
its host disappears (TCP keepalives on both ends bound how long a dead peer goes unnoticed).

The leader checks, before every pass, that its connection still holds the lock; a Postgres
restart or a terminated backend loses the lock, and the leader steps down until it wins the
lock again. The lock is about efficiency, not correctness: claims are conditional
(`FOR UPDATE SKIP LOCKED`, `UPDATE … RETURNING`), so even an overlapping pass of two
dispatchers never sends an item twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from shared import metrics
from shared.db import normalise_database_url
from shared.settings import DEFAULT_LEADER_LOCK_KEY, Settings

log = logging.getLogger("backfill.scheduler.leader")

# When the network between the leader and Postgres dies (no FIN, no RST), both ends must
# notice, and the leader first: it gives up its leadership before Postgres frees the lock.
# Client side: the leader checks its lock before every pass and does not dispatch while the
# check waits; an unanswered check fails after tcp_user_timeout, 8 s. Keepalives cover an idle
# connection (a standby between attempts). Both are ignored on Unix sockets, where a dead peer
# shows at once.
_CLIENT_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 4,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 8_000,
}
# Server side: the backend probes the leader too, and ends the session, freeing the lock, after
# 8 s of silence plus 3 unanswered probes 2 s apart: ~14 s, against the leader's <= 9 s.
_SERVER_OPTIONS = (
    "-c statement_timeout=5000 -c tcp_keepalives_idle=8"
    " -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
)

_TRY_LOCK = "SELECT pg_try_advisory_lock(%s)"
_UNLOCK = "SELECT pg_advisory_unlock(%s)"
# A bigint advisory key shows in pg_locks as classid (high 32 bits), objid (low), objsubid 1.
_STILL_HELD = """
    SELECT EXISTS (SELECT 1 FROM pg_locks
                    WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                      AND classid = %s AND objid = %s AND objsubid = 1)
"""


def lock_key_parts(key: int) -> tuple[int, int]:
    """(classid, objid) under which pg_locks shows a bigint advisory key."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def libpq_params(database_url: str) -> dict[str, Any]:
    """psycopg keyword arguments for a SQLAlchemy URL (host, port, user, … and query args)."""
    url = make_url(normalise_database_url(database_url))
    params: dict[str, Any] = url.translate_connect_args(username="user", database="dbname")
    params.update(url.query)  # e.g. host=/socket/dir for the embedded server
    return params


def application_name() -> str:
    """Names the holder in pg_stat_activity, so an operator can tell which replica leads."""
    return f"backfill-scheduler-{os.uname().nodename}-{os.getpid()}"[:63]


@dataclass
class LeaderLock:
    """A session-level advisory lock on a connection of its own, held for the leadership."""

    database_url: str
    key: int = DEFAULT_LEADER_LOCK_KEY
    connect_timeout_s: int = 10
    _connection: psycopg.Connection[Any] | None = field(default=None, init=False, repr=False)
    last_error: str | None = field(default=None, init=False)

    def try_acquire(self) -> bool:
        """True once this process holds the lock; False while another does or Postgres is away."""
        try:
            connection = self._connect()
            acquired = connection.execute(_TRY_LOCK, (self.key,)).fetchone()
        except psycopg.Error as exc:
            self._drop(exc)
            return False
        self.last_error = None
        return bool(acquired and acquired[0])

    def still_held(self) -> bool:
        """Asks Postgres, not our memory: a restart or a killed backend silently drops locks."""
        if self._connection is None:
            return False
        try:
            row = self._connection.execute(_STILL_HELD, lock_key_parts(self.key)).fetchone()
        except psycopg.Error as exc:
            self._drop(exc)
            return False
        return bool(row and row[0])

    def release(self) -> None:
        """Unlock before closing, so a standby's next attempt already succeeds."""
        if self._connection is None:
            return
        # A failure means the connection is gone, and the lock with it.
        with contextlib.suppress(psycopg.Error):
            self._connection.execute(_UNLOCK, (self.key,))
        self._close()

    def _connect(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(
                **libpq_params(self.database_url),
                **_CLIENT_KEEPALIVE,
                autocommit=True,  # never idle in a transaction while holding the lock
                connect_timeout=self.connect_timeout_s,
                options=_SERVER_OPTIONS,
                application_name=application_name(),
            )
        return self._connection

    def _drop(self, exc: psycopg.Error) -> None:
        self.last_error = f"{type(exc).__name__}: {str(exc).strip() or 'connection lost'}"
        self._close()

    def _close(self) -> None:
        if self._connection is not None:
            # Closing a dead connection can only fail in uninteresting ways.
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None


@dataclass
class Heartbeat:
    """A file whose modification time says the scheduler loop is turning (for probes)."""

    path: Path | None

    def beat(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError:
            log.warning("cannot touch heartbeat file %s", self.path, exc_info=True)


def heartbeat_age_s(path: Path) -> float | None:
    """Seconds since the last beat, or None if there never was one."""
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None


def announce(message: str) -> None:
    """Leadership changes go to the scheduler's log, in its format: an operator reading it
    learns who dispatches (the gauge `backfill_scheduler_leader` says it too)."""
    log.info(message)


@dataclass
class LeaderLoop:
    """Runs `tick` only while holding the lock; `tick` returns how many messages it sent."""

    lock: LeaderLock
    tick: Callable[[], int]
    idle_s: float
    retry_s: float
    heartbeat: Heartbeat = field(default_factory=lambda: Heartbeat(None))
    leading: bool | None = field(default=None, init=False)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.heartbeat.beat()
                self._update_leadership()
                if not self.leading:
                    stop.wait(self.retry_s)
                elif self._pass() == 0:
                    stop.wait(self.idle_s)
        finally:
            self.lock.release()
            metrics.SCHEDULER_LEADER.set(0)
            if self.leading:
                announce("scheduler stopped; leader lock released")

    def _update_leadership(self) -> None:
        held = self.lock.still_held() if self.leading else self.lock.try_acquire()
        if held == self.leading:
            return
        if held:
            announce(f"scheduler is the leader (advisory lock {self.lock.key}); dispatching")
        elif self.leading:
            announce(f"scheduler lost the leader lock ({self.lock.last_error or 'released'});"
                     " standing by")
        else:
            announce(f"scheduler is on standby: {_standby_reason(self.lock)}")
        self.leading = held
        metrics.SCHEDULER_LEADER.set(1 if held else 0)

    def _pass(self) -> int:
        try:
            return self.tick()
        except Exception:  # a failed pass (DB restart, broker blip) is retried next pass
            log.exception("dispatch pass failed; retrying")
            return 0


def _standby_reason(lock: LeaderLock) -> str:
    if lock.last_error:
        return f"cannot reach Postgres ({lock.last_error}); retrying"
    return f"another scheduler holds advisory lock {lock.key}"


def run_while_leader(settings: Settings, tick: Callable[[], int], stop: threading.Event) -> None:
    """The scheduler's main loop: dispatch passes while leader, lock attempts while standby."""
    loop = LeaderLoop(
        lock=LeaderLock(settings.require_database_url(), settings.leader_lock_key,
                        settings.db_connect_timeout_s),
        tick=tick,
        idle_s=settings.dispatch_interval_s,
        retry_s=settings.leader_retry_s,
        heartbeat=Heartbeat(settings.scheduler_heartbeat_file),
    )
    loop.run(stop)
