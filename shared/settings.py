"""Settings, read once from the environment and passed down (never read at import time)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the system. Names map to environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    database_url: str | None = None
    broker_url: str | None = None
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    backfill_llm: Literal["anthropic", "stub"] | None = None

    # Where embedded Postgres/Redis keep their data when no URL is given.
    backfill_run_dir: str = ".run"

    # LLM call
    default_model: str = Field("claude-haiku-4-5", alias="BACKFILL_DEFAULT_MODEL")
    llm_timeout_s: float = Field(60.0, alias="BACKFILL_LLM_TIMEOUT_S")
    llm_max_tokens: int = Field(2048, alias="BACKFILL_LLM_MAX_TOKENS")

    # Retries have one owner: the item goes back to `pending` with a `not_before` time and the
    # dispatcher sends it again. The SDK's own retries are switched off.
    max_attempts: int = Field(6, alias="BACKFILL_MAX_ATTEMPTS")
    invalid_output_attempts: int = Field(3, alias="BACKFILL_INVALID_OUTPUT_ATTEMPTS")
    retry_base_s: float = Field(2.0, alias="BACKFILL_RETRY_BASE_S")
    retry_cap_s: float = Field(300.0, alias="BACKFILL_RETRY_CAP_S")

    # Broker / dispatch
    visibility_timeout_s: int = Field(3600, alias="BACKFILL_VISIBILITY_TIMEOUT_S")
    dispatch_window: int = Field(200, alias="BACKFILL_DISPATCH_WINDOW")
    dispatch_interval_s: float = Field(0.5, alias="BACKFILL_DISPATCH_INTERVAL_S")
    lease_s: int = Field(600, alias="BACKFILL_LEASE_S")
    queued_deadline_s: int = Field(1800, alias="BACKFILL_QUEUED_DEADLINE_S")
    queue_name: str = Field("backfill", alias="BACKFILL_QUEUE")

    # Database
    db_statement_timeout_ms: int = Field(30000, alias="BACKFILL_DB_STATEMENT_TIMEOUT_MS")
    db_connect_timeout_s: int = Field(10, alias="BACKFILL_DB_CONNECT_TIMEOUT_S")
    db_pool_size: int = Field(10, alias="BACKFILL_DB_POOL_SIZE")

    # Worker
    worker_concurrency: int = Field(32, alias="BACKFILL_WORKER_CONCURRENCY")

    max_filter_rows: int = Field(50, alias="BACKFILL_MAX_FILTER_ROWS")

    @property
    def llm_mode(self) -> Literal["anthropic", "stub"]:
        if self.backfill_llm:
            return self.backfill_llm
        return "anthropic" if self.anthropic_api_key else "stub"

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("DATABASE_URL is not set (run `backfill demo` or export it)")
        return self.database_url

    def require_broker_url(self) -> str:
        if not self.broker_url:
            raise RuntimeError("BROKER_URL is not set (run `backfill demo` or export it)")
        return self.broker_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read on first use."""
    return Settings()
