"""The lease heartbeat: while a task runs, its worker keeps the item's lease fresh.

Why a heartbeat rather than one long lease: a lease long enough for the slowest task (an LLM
call of up to `BACKFILL_LLM_TIMEOUT_S` plus several database transactions, each with its own
timeout) would leave a killed worker's items stranded for minutes. With renewal the lease only
has to outlive a few missed heartbeats, so the reconciler re-dispatches a dead worker's items
soon after `BACKFILL_LEASE_S`, however long an LLM call may take.

One thread per worker process renews every claim the process holds in one UPDATE, every third
of the lease. Renewal is fenced on the claim's attempt, so a claim the reconciler has already
taken back is never revived. A claim held longer than `max_hold_s` (past every timeout of a
task) is not renewed any more: a thread stuck beyond its timeouts is treated like a dead worker.
If the database is away, renewals fail and leases may lapse; the reconciler then re-dispatches
the items, and the fenced result write makes the late original a no-op ("superseded").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from shared.db import Database
from shared.state import items
from shared.state.items import Claim

log = logging.getLogger("backfill.worker")

ClaimKey = tuple[str, str, int]


class LeaseKeeper:
    """Holds this process's running claims and renews their leases in the background."""

    def __init__(self, db: Database, lease_s: float, max_hold_s: float) -> None:
        self.db = db
        self.lease_s = lease_s
        self.max_hold_s = max_hold_s
        self.interval_s = max(lease_s / 3, 0.05)
        self._held: dict[ClaimKey, tuple[Claim, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, claim: Claim) -> Iterator[None]:
        """Renew the claim's lease for as long as the block runs."""
        key = (claim.job_id, claim.session_id, claim.attempt)
        with self._lock:
            self._held[key] = (claim, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(key, None)

    def renewable(self) -> list[Claim]:
        """Claims held for less than max_hold_s."""
        oldest = time.monotonic() - self.max_hold_s
        with self._lock:
            return [claim for claim, since in self._held.values() if since >= oldest]

    def renew(self) -> int:
        """One heartbeat; returns how many leases were extended."""
        claims = self.renewable()
        if not claims:
            return 0
        with self.db.transaction() as tx:
            return items.renew_leases(tx, claims, self.lease_s)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.renew()
            except Exception as exc:  # the next beat tries again; a lapsed lease is safe
                log.warning("lease heartbeat failed: %s", type(exc).__name__)
