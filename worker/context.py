"""What a task needs, built once per worker process: engine, LLM caller, lease heartbeat.

Made on first use in the process that runs tasks (never before a fork: an engine or a socket
inherited across a fork is shared by two processes) and disposed at shutdown.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from shared.db import Database
from shared.settings import Settings
from worker.leases import LeaseKeeper
from worker.llm import Caller, make_caller


@dataclass
class WorkerContext:
    settings: Settings
    db: Database
    caller: Caller
    leases: LeaseKeeper | None = None

    def close(self) -> None:
        """After a warm shutdown has let the in-flight tasks finish (their leases renewed to
        the end), stop the heartbeat, then close the LLM client and the pool."""
        if self.leases is not None:
            self.leases.stop()
        self.caller.close()
        self.db.dispose()


def build_context(settings: Settings) -> WorkerContext:
    # One connection per thread, plus one for the heartbeat.
    pool_size = max(settings.worker_concurrency + 1, 5)
    db = Database.from_settings(settings, pool_size=pool_size)
    leases = LeaseKeeper(db, settings.lease_s, max_hold_s=settings.task_deadline_s)
    leases.start()
    return WorkerContext(settings=settings, db=db, caller=make_caller(settings), leases=leases)


class ProcessContext:
    """The process's one WorkerContext, made by the first task that needs it."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._context: WorkerContext | None = None
        self._lock = threading.Lock()  # the first tasks may arrive on several threads at once

    def get(self) -> WorkerContext:
        with self._lock:
            if self._context is None:
                self._context = build_context(self._settings)
            return self._context

    def forget(self) -> None:
        """After a fork: the child builds its own (the parent's sockets are not its own)."""
        self._context = None

    def close(self) -> None:
        with self._lock:
            if self._context is not None:
                self._context.close()
                self._context = None
