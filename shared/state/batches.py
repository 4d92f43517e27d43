"""The Message Batches a batch-mode job submitted: `in_progress → ended | missing`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

_RECORD = text("""
    INSERT INTO backfill_batches (id, job_id, request_count) VALUES (:id, :job_id, :count)
""")

_OPEN = text("""
    SELECT id, job_id, submitted_at FROM backfill_batches
     WHERE state = 'in_progress' ORDER BY submitted_at
""")

_END = text("""
    UPDATE backfill_batches SET state = :state, ended_at = clock_timestamp() WHERE id = :id
""")


@dataclass(frozen=True)
class OpenBatch:
    batch_id: str
    job_id: str
    submitted_at: datetime


def record(tx: Connection, batch_id: str, job_id: str, request_count: int) -> None:
    tx.execute(_RECORD, {"id": batch_id, "job_id": job_id, "count": request_count})


def open_batches(tx: Connection) -> list[OpenBatch]:
    return [OpenBatch(row.id, row.job_id, row.submitted_at) for row in tx.execute(_OPEN)]


def end(tx: Connection, batch_id: str, state: str) -> None:
    """ended (its results are written) or missing (the provider does not know it)."""
    tx.execute(_END, {"id": batch_id, "state": state})
