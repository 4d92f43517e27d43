"""Tables. Postgres is the source of truth for job and item state; the broker only carries ids."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = _now()


class AgentVersion(Base):
    """One version of an agent with its analysis configuration (Retell-style)."""

    __tablename__ = "agent_versions"

    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    is_published: Mapped[bool] = mapped_column(Boolean, nullable=False)
    agent_name: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)  # voice | chat
    analysis_model: Mapped[str | None] = mapped_column(Text)
    analysis_data: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    updated_at: Mapped[datetime] = _now()


class SessionRecord(Base):
    """A call or a chat, with the columns the filters need and its current analysis."""

    __tablename__ = "sessions"

    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)  # call | chat
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    agent_id: Mapped[str] = mapped_column(String(128), nullable=False)
    agent_version: Mapped[int | None] = mapped_column(Integer)
    batch_call_id: Mapped[str | None] = mapped_column(Text)
    from_number: Mapped[str | None] = mapped_column(Text)
    to_number: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(32))  # call_status | chat_status
    call_type: Mapped[str | None] = mapped_column(String(32))
    direction: Mapped[str | None] = mapped_column(String(16))
    disconnection_reason: Mapped[str | None] = mapped_column(Text)
    start_timestamp: Mapped[int | None] = mapped_column(BigInteger)
    end_timestamp: Mapped[int | None] = mapped_column(BigInteger)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    transcript: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    dynamic_variables: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    agent_transfers: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    # Denormalised from agent_transfers so `transfer_agent in [...]` is a GIN lookup.
    transfer_agent_ids: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")
    )
    # Current analysis.
    summary: Mapped[str | None] = mapped_column(Text)
    successful: Mapped[bool | None] = mapped_column(Boolean)
    user_sentiment: Mapped[str | None] = mapped_column(String(16))
    in_voicemail: Mapped[bool | None] = mapped_column(Boolean)
    custom_analysis_data: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    # Provenance of the current analysis: the run that wrote it (null = imported).
    analysis_run_id: Mapped[int | None] = mapped_column(BigInteger)
    # Start time of that run: a run that started earlier never overwrites it (no lost update).
    analysis_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    imported_at: Mapped[datetime] = _now()

    __table_args__ = (
        Index("ix_sessions_ws_kind_start", "workspace_id", "kind", "start_timestamp"),
        Index("ix_sessions_ws_kind_agent", "workspace_id", "kind", "agent_id", "agent_version"),
        # Agent + time window, the usual backfill: reads only the window's part of each agent
        # (bench/filters_bench.py: preview and expansion about 2x faster on 1M sessions).
        Index("ix_sessions_ws_kind_agent_start", "workspace_id", "kind", "agent_id",
              "start_timestamp"),
        Index("ix_sessions_ws_kind_status", "workspace_id", "kind", "status"),
        Index("ix_sessions_transfer_agents", "transfer_agent_ids", postgresql_using="gin"),
        # `from_number sw` is LIKE 'prefix%': text_pattern_ops serves it whatever the collation,
        # and INCLUDE (session_id) lets the expansion take the ids from the index alone
        # (bench/filters_bench.py: preview ~15x, expansion ~2x faster than a scan).
        Index(
            "ix_sessions_ws_kind_from_number", "workspace_id", "kind", "from_number",
            postgresql_ops={"from_number": "text_pattern_ops"},
            postgresql_include=["session_id"],
        ),
        Index(
            "ix_sessions_metadata", "metadata", postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
    )


class BackfillJob(Base):
    __tablename__ = "backfill_jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)
    filters: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    options: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    state: Mapped[str] = mapped_column(String(16), nullable=False, server_default="running")
    state_reason: Mapped[str | None] = mapped_column(Text)
    matched: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Safe to apply: the completed trial this job was promoted from (at most one job each).
    promoted_from: Mapped[str | None] = mapped_column(String(40))
    # Spend control (shared/state/budget.py writes these). USD: the cap (null = none), what
    # the job's calls cost so far, and what its queued and running sessions hold against the
    # cap; spent + reserved never passes the cap when a reservation is made.
    max_cost_usd: Mapped[Decimal | None] = mapped_column(Numeric)
    spent_usd: Mapped[Decimal] = mapped_column(Numeric, nullable=False, server_default="0")
    reserved_usd: Mapped[Decimal] = mapped_column(Numeric, nullable=False, server_default="0")
    # Why the job is paused, as a word (`budget_exhausted`); state_reason says it in full.
    pause_reason: Mapped[str | None] = mapped_column(String(32))
    # A session's estimated cost, base + per character of its stored transcript, fixed when
    # the job got its cap: what each reservation holds.
    estimate_base_usd: Mapped[Decimal | None] = mapped_column(Numeric)
    estimate_usd_per_char: Mapped[Decimal | None] = mapped_column(Numeric)

    __table_args__ = (
        Index(
            "uq_backfill_jobs_promoted_from", "promoted_from", unique=True,
            postgresql_where=text("promoted_from IS NOT NULL"),
        ),
        Index(
            "uq_backfill_jobs_idempotency", "workspace_id", "idempotency_key", unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_backfill_jobs_active", "state", postgresql_where=text("state = 'running'")),
        Index("ix_backfill_jobs_ws_created", "workspace_id", "created_at"),
    )


class BackfillItem(Base):
    """One session of one job. The claim on this row is what makes a task idempotent."""

    __tablename__ = "backfill_items"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("backfill_jobs.id", ondelete="CASCADE"), primary_key=True
    )
    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A retried item waits in Postgres (not as an ETA message in the broker) until this time.
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Spend control: what the item holds against its job's cap while queued or running, and
    # what its calls cost that the job's spent_usd does not hold yet (the scheduler settles
    # both into the job row; shared/state/budget.py).
    reserved_usd: Mapped[Decimal | None] = mapped_column(Numeric)
    unsettled_usd: Mapped[Decimal] = mapped_column(Numeric, nullable=False, server_default="0")

    __table_args__ = (
        # Per-state counts and "next pending items" are index-only scans.
        Index("ix_backfill_items_job_state", "job_id", "state"),
        Index(
            "ix_backfill_items_leases", "lease_expires_at",
            postgresql_where=text("state IN ('queued', 'running')"),
        ),
        # Spend control: the few items the scheduler still has to settle.
        Index(
            "ix_backfill_items_unsettled", "job_id",
            postgresql_where=text("reserved_usd IS NOT NULL OR unsettled_usd <> 0"),
        ),
    )


class BackfillBatch(Base):
    """One Message Batch submitted for a batch-mode job; its requests are the job's items that
    were claimed with it (custom_id: a digest of job, session and attempt)."""

    __tablename__ = "backfill_batches"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # the provider's batch id
    job_id: Mapped[str] = mapped_column(
        ForeignKey("backfill_jobs.id", ondelete="CASCADE"), nullable=False
    )
    # in_progress → ended (results written) | missing (the provider does not know the id)
    state: Mapped[str] = mapped_column(String(16), nullable=False, server_default="in_progress")
    request_count: Mapped[int] = mapped_column(Integer, nullable=False)
    submitted_at: Mapped[datetime] = _now()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_backfill_batches_open", "state",
              postgresql_where=text("state = 'in_progress'")),
        Index("ix_backfill_batches_job", "job_id"),
    )


class AnalysisRun(Base):
    """History: every analysis ever written for a session, with its provenance."""

    __tablename__ = "analysis_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.session_id", ondelete="CASCADE"), nullable=False
    )
    job_id: Mapped[str | None] = mapped_column(String(40))
    workspace_id: Mapped[str] = mapped_column(String(128), nullable=False)
    agent_id: Mapped[str] = mapped_column(String(128), nullable=False)
    agent_version: Mapped[int] = mapped_column(Integer, nullable=False)
    used_draft: Mapped[bool] = mapped_column(Boolean, nullable=False)
    model: Mapped[str] = mapped_column(Text, nullable=False)
    requested_model: Mapped[str | None] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    result: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    input_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    output_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    cache_read_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    cache_write_tokens: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    latency_ms: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = _now()
    # Safe to apply (trial runs, change reports, promote, revert).
    # The session's analysis when this run was written, in the shape of `result`; null for
    # runs older than the feature (reports count them apart, reverts skip them).
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The run that had written that analysis; null when it was the imported one.
    before_run_id: Mapped[int | None] = mapped_column(BigInteger)
    # Custom field name -> type in the configuration the run used (the report's field types).
    field_types: Mapped[dict[str, str]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    # False for a trial's run: kept in history, never made the session's current analysis.
    applied: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    # A revert's history row names the run it undid (its job_id is null).
    reverted_run_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        # At most one successful run per (job, session): a doubled delivery cannot write twice.
        Index(
            "uq_analysis_runs_job_session", "job_id", "session_id", unique=True,
            postgresql_where=text("job_id IS NOT NULL"),
        ),
        Index("ix_analysis_runs_session", "session_id", "created_at"),
        # "Was this run reverted already?": a second revert of a job changes nothing.
        Index("ix_analysis_runs_reverted", "reverted_run_id",
              postgresql_where=text("reverted_run_id IS NOT NULL")),
        # Spend control: estimates read the latest runs of a configuration (output tokens).
        Index("ix_analysis_runs_config_hash", "config_hash", "created_at"),
    )


class ApiKey(Base):
    """A bearer key of one workspace, or an admin key. Only a hash is stored; the key is shown
    once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Operator console: an admin key opens the console and sees every workspace, so it has
    # none (NULL); the check keeps "admin" and "no workspace" one fact.
    workspace_id: Mapped[str | None] = mapped_column(ForeignKey("workspaces.id"))
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("admin = (workspace_id IS NULL)", name="admin_has_no_workspace"),
    )


class AuditEvent(Base):
    """Who did what to a job, when and why (create, requeue, pause, resume, cancel, rerun)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # Operator console: NULL for what belongs to no workspace (an admin key's creation).
    workspace_id: Mapped[str | None] = mapped_column(String(128))
    job_id: Mapped[str | None] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(Text, nullable=False)  # "api_key:<id>" or "os:<user>"
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = _now()

    __table_args__ = (Index("ix_audit_events_job", "job_id", "created_at"),)


# --------------------------------------------------------------------------- notifications
# Webhooks (scheduler/webhooks/): a workspace's endpoints, the events of its jobs (the outbox,
# written by shared/state/events.py with the job's state change) and one delivery per event
# and endpoint, retried until a 2xx or the horizon: all in Postgres, so every process may
# restart between attempts.


class Webhook(Base):
    """An endpoint of one workspace. Its secret is stored encrypted (BACKFILL_SECRET_KEY)."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # wh_…
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_webhooks_active", "workspace_id", postgresql_where=text("removed_at IS NULL")),
    )


class WebhookEvent(Base):
    """A job state change announced to the workspace's endpoints. `body` is rendered at the
    first delivery attempt and resent unchanged (the signature covers these bytes)."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # evt_…
    workspace_id: Mapped[str] = mapped_column(String(128), nullable=False)
    job_id: Mapped[str] = mapped_column(
        ForeignKey("backfill_jobs.id", ondelete="CASCADE"), nullable=False
    )
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = _now()
    body: Mapped[bytes | None] = mapped_column(LargeBinary)

    __table_args__ = (Index("ix_webhook_events_job", "job_id", "created_at"),)


class WebhookDelivery(Base):
    """One event for one endpoint: delivered after a 2xx, else retried at `next_attempt_at`
    until it is given up."""

    __tablename__ = "webhook_deliveries"

    event_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), primary_key=True
    )
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    gave_up_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # The delivery loop's "what is due" reads only open deliveries.
        Index("ix_webhook_deliveries_due", "next_attempt_at",
              postgresql_where=text("delivered_at IS NULL AND gave_up_at IS NULL")),
        Index("ix_webhook_deliveries_webhook", "webhook_id"),
    )


__all__ = [
    "AgentVersion", "ApiKey", "AuditEvent", "AnalysisRun", "BackfillBatch", "BackfillItem",
    "BackfillJob", "Base", "SessionRecord", "Webhook", "WebhookDelivery", "WebhookEvent",
    "Workspace",
]
