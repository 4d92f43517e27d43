"""The one Settings: read once from the environment by an entry point and passed down.

Only entry points (the CLI, the Celery app, the Flower app, the ASGI app factory) call
`get_settings()`; everything below them takes the `Settings` it is given, so a test can run any
piece on settings of its own.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import EnvironmentProblem, SettingsInvalid

# The ASCII bytes of "backfill" as one bigint: easy to recognise in pg_locks.
DEFAULT_LEADER_LOCK_KEY = 0x6261636B66696C6C


class Settings(BaseSettings):
    """Every knob of the system. Names map to environment variables (case-insensitive)."""

    # Settings hold secrets (URLs with passwords, keys): a validation error names the variable,
    # never the value it was given.
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True)

    database_url: str | None = None
    broker_url: str | None = None
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    backfill_llm: Literal["anthropic", "stub"] | None = None

    # Where embedded Postgres/Redis keep their data when no URL is given.
    backfill_run_dir: str = ".run"

    # The deployment's secret (a Fernet key, or several comma-separated while rotating): signs
    # operator console sessions and encrypts webhook secrets at rest. A SecretStr, so it never
    # shows in a repr, a log line or a validation error; its format is checked at the API's and
    # the scheduler's start (scheduler/webhooks/secretbox.py).
    secret_key: SecretStr | None = Field(None, alias="BACKFILL_SECRET_KEY")

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
    queue_name: str = Field("backfill", alias="BACKFILL_QUEUE")

    # Leases and the reconciler. A claim's lease is renewed by its worker's heartbeat (every
    # third of the lease) while the task runs, so the lease measures whether the worker is
    # alive, not how long an LLM call takes: a killed worker's items go back after `lease_s`,
    # however long LLM calls may be. Too short only costs duplicate LLM calls (the result
    # write is fenced on the attempt), never a double write.
    lease_s: float = Field(60, alias="BACKFILL_LEASE_S")
    # How often the scheduler reconciles (expired leases, lost messages).
    reconcile_interval_s: float = Field(5.0, alias="BACKFILL_RECONCILE_INTERVAL_S")
    # A queued item whose message is neither waiting in the broker nor held by a worker that
    # took it within this grace is re-dispatched (a flushed broker, a worker killed before its
    # claim, a claim that failed because Postgres was away).
    lost_message_grace_s: float = Field(30.0, alias="BACKFILL_LOST_MESSAGE_GRACE_S")
    # Without a broker that can be inspected, a queued item older than this is re-dispatched.
    queued_deadline_s: float = Field(1800, alias="BACKFILL_QUEUED_DEADLINE_S")

    # Message Batches mode (scheduler/batches.py). A job created without a mode goes to the
    # Batches API when it matches more sessions than this (0 = never automatically).
    batch_auto_threshold: int = Field(10_000, alias="BACKFILL_BATCH_AUTO_THRESHOLD")
    # Items claimed into new batches per job per scheduler pass: bounds the scheduler's memory
    # (each request holds a transcript) and its per-pass transaction.
    batch_submit_limit: int = Field(10_000, alias="BACKFILL_BATCH_SUBMIT_LIMIT")
    # The API's limits of one batch; a claim is split into as many batches as needed.
    batch_max_requests: int = Field(100_000, alias="BACKFILL_BATCH_MAX_REQUESTS")
    batch_max_bytes: int = Field(256_000_000, alias="BACKFILL_BATCH_MAX_BYTES")
    # A batch may take 24 h to end: its items hold a lease beyond that (renewed at each poll),
    # so the reconciler does not take them back while the provider still works on them.
    batch_lease_s: float = Field(26 * 3600, alias="BACKFILL_BATCH_LEASE_S")
    # Polls start soon after submission and back off to this interval.
    batch_poll_interval_s: float = Field(60.0, alias="BACKFILL_BATCH_POLL_INTERVAL_S")

    # Database
    db_statement_timeout_ms: int = Field(30000, alias="BACKFILL_DB_STATEMENT_TIMEOUT_MS")
    # Expanding a job (one INSERT … SELECT over millions of sessions) gets its own bound.
    db_expansion_timeout_ms: int = Field(900000, alias="BACKFILL_DB_EXPANSION_TIMEOUT_MS")
    db_connect_timeout_s: int = Field(10, alias="BACKFILL_DB_CONNECT_TIMEOUT_S")
    db_pool_size: int = Field(10, alias="BACKFILL_DB_POOL_SIZE")

    # Worker
    worker_concurrency: int = Field(32, alias="BACKFILL_WORKER_CONCURRENCY")

    max_filter_rows: int = Field(50, alias="BACKFILL_MAX_FILTER_ROWS")

    # Scheduler leadership (scheduler/run/leader.py): schedulers that must not dispatch side
    # by side share a lock key (and a database); a standby asks for the lock every retry_s;
    # every pass touches the heartbeat file that `backfill probe scheduler` reads.
    leader_lock_key: int = Field(DEFAULT_LEADER_LOCK_KEY, alias="BACKFILL_LEADER_LOCK_KEY")
    leader_retry_s: float = Field(1.0, gt=0, alias="BACKFILL_LEADER_RETRY_S")
    scheduler_heartbeat_file: Path | None = Field(None,
                                                  alias="BACKFILL_SCHEDULER_HEARTBEAT_FILE")

    # Global LLM rate limit (shared/ratelimit.py), per API key and model, shared by every
    # worker through Redis. 0 = unlimited. The period is 60 s for the provider's
    # per-minute limits; tests and the bench shorten it to keep runs short.
    rl_requests_per_min: int = Field(0, ge=0, alias="BACKFILL_RL_REQUESTS_PER_MIN")
    rl_input_tokens_per_min: int = Field(0, ge=0, alias="BACKFILL_RL_INPUT_TOKENS_PER_MIN")
    rl_output_tokens_per_min: int = Field(0, ge=0, alias="BACKFILL_RL_OUTPUT_TOKENS_PER_MIN")
    rl_period_s: float = Field(60.0, gt=0, alias="BACKFILL_RL_PERIOD_S")
    # How long a task waits for capacity before it gives the item back as `llm_rate_limited`
    # (the retry path then spaces it out); counted in the task's deadline.
    rl_max_wait_s: float = Field(30.0, ge=0, alias="BACKFILL_RL_MAX_WAIT_S")
    # Output tokens taken before a call; corrected with the real count after it. 0 = the
    # request's max_tokens (never under-counts, but holds capacity until the call returns).
    rl_output_estimate_tokens: int = Field(0, ge=0, alias="BACKFILL_RL_OUTPUT_ESTIMATE_TOKENS")
    rl_burst_share: float = Field(0.02, gt=0, le=1, alias="BACKFILL_RL_BURST_SHARE")
    rl_safety_share: float = Field(0.02, ge=0, lt=1, alias="BACKFILL_RL_SAFETY_SHARE")
    # Backfills share the API key with the platform's live post-call analysis: they may use
    # this share of each limit above, and never the last (1 - share) of a provider's window
    # (shared/ratelimit.py).
    rl_share: float = Field(1.0, alias="BACKFILL_RL_SHARE")
    # The provider limits `count_tokens` calls on their own (requests per period); 0 = none.
    rl_count_tokens_per_min: int = Field(0, ge=0, alias="BACKFILL_RL_COUNT_TOKENS_PER_MIN")

    # Prompt caching of the static prefix (instructions + field definitions). Off only to
    # measure what caching saves (`make bench`).
    prompt_caching: bool = Field(True, alias="BACKFILL_PROMPT_CACHING")

    # Cost estimates. USD per million tokens (input, output): configurable defaults close to
    # the public list prices; check them against the provider's price page. A model not in
    # the table is priced as `default_model`.
    llm_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "claude-haiku-4-5": (1.0, 5.0),
            "claude-sonnet-4-5": (3.0, 15.0),
            "claude-sonnet-4-6": (3.0, 15.0),
            "claude-sonnet-5": (3.0, 15.0),
            "claude-opus-4-1": (15.0, 75.0),
            "claude-opus-4-5": (5.0, 25.0),
        },
        alias="BACKFILL_LLM_PRICES",
    )
    price_cache_write_multiplier: float = Field(1.25, ge=0, alias="BACKFILL_PRICE_CACHE_WRITE")
    price_cache_read_multiplier: float = Field(0.1, ge=0, alias="BACKFILL_PRICE_CACHE_READ")
    price_batch_multiplier: float = Field(0.5, ge=0, alias="BACKFILL_PRICE_BATCH")
    # Output tokens one analysis is expected to take, for `preview` estimates of a
    # configuration that has no recorded runs yet.
    estimate_output_tokens: int = Field(250, ge=0, alias="BACKFILL_ESTIMATE_OUTPUT_TOKENS")
    # The provider's rule: a cached prefix shorter than the model's minimum is not cached
    # (billed as plain input, nothing written). Keys are model ids without a date suffix; a
    # model not listed has the minimum of most models, 1,024.
    cache_min_tokens: dict[str, int] = Field(
        default_factory=lambda: {
            "claude-haiku-4-5": 4096,
            "claude-opus-4-5": 4096,
            "claude-opus-4-6": 4096,
            "claude-sonnet-4-6": 2048,
            "claude-3-5-haiku": 2048,
            "claude-sonnet-4-5": 1024,
            "claude-sonnet-4": 1024,
            "claude-opus-4-1": 1024,
            "claude-opus-4": 1024,
        },
        alias="BACKFILL_CACHE_MIN_TOKENS",
    )
    # Estimates ask the provider's token counter about a sample of the matched sessions: at
    # most this many calls (0 = never: the local estimate), all within this time.
    estimate_count_calls: int = Field(20, ge=0, le=1000, alias="BACKFILL_ESTIMATE_COUNT_CALLS")
    estimate_timeout_s: float = Field(10.0, gt=0, alias="BACKFILL_ESTIMATE_TIMEOUT_S")
    # A capped job reserves each session's estimate plus this share before it is sent, so an
    # estimate that is a little low does not carry the job's spend past its cap.
    budget_margin: float = Field(0.1, ge=0, le=1, alias="BACKFILL_BUDGET_MARGIN")

    @field_validator("rl_share")
    @classmethod
    def _a_share(cls, share: float) -> float:
        # NaN fails the comparison like any other value outside (0, 1].
        if not 0 < share <= 1:
            raise ValueError("must be a share with 0 < s ≤ 1 (the share of each rate limit "
                             "backfills may use)")
        return share

    # Observability and notifications (shared/logs.py, shared/metrics.py, scheduler/webhooks/).
    # None = text on a terminal, json otherwise.
    log_format: Literal["json", "text"] | None = Field(None, alias="BACKFILL_LOG_FORMAT")
    # Where a worker or scheduler serves /metrics (one port per process); None = not served.
    metrics_port: int | None = Field(None, ge=1, le=65535, alias="BACKFILL_METRICS_PORT")
    # Tests and on-premises receivers: private addresses and http:// (addresses.py).
    webhook_allow_private: bool = Field(False, alias="BACKFILL_WEBHOOK_ALLOW_PRIVATE")
    # DESIGN: no answer within 10 s is a failed attempt (shorter only in tests). Retries back
    # off exponentially from a base; None = the schedule's own (scheduler/webhooks/backoff.py).
    webhook_timeout_s: float = Field(10.0, gt=0, le=10, alias="BACKFILL_WEBHOOK_TIMEOUT_S")
    webhook_retry_base_s: float | None = Field(None, gt=0, alias="BACKFILL_WEBHOOK_RETRY_BASE_S")

    @model_validator(mode="after")
    def _below_visibility_timeout(self) -> Settings:
        """A message is redelivered once unacknowledged for the visibility timeout, so every
        wait and every task must end well before it (DESIGN: "visibility timeout well above
        the longest task (including backoff)")."""
        if self.retry_cap_s >= self.visibility_timeout_s:
            raise ValueError("BACKFILL_RETRY_CAP_S must be below BACKFILL_VISIBILITY_TIMEOUT_S")
        if self.task_deadline_s >= self.visibility_timeout_s:
            raise ValueError("BACKFILL_LLM_TIMEOUT_S plus the database timeouts must stay "
                             "below BACKFILL_VISIBILITY_TIMEOUT_S")
        if self.lease_s <= 0:
            raise ValueError("BACKFILL_LEASE_S must be positive")
        return self

    @property
    def task_deadline_s(self) -> float:
        """The longest one task can legitimately run: its wait for rate-limit
        capacity, its LLM call plus a few database
        transactions (claim, load, write, failure), each bounded by its own timeouts."""
        per_transaction = self.db_statement_timeout_ms / 1000 + self.db_connect_timeout_s
        return self.rl_max_wait_s + self.llm_timeout_s + 4 * per_transaction

    @property
    def llm_mode(self) -> Literal["anthropic", "stub"]:
        if self.backfill_llm:
            return self.backfill_llm
        return "anthropic" if self.anthropic_api_key else "stub"

    def require_database_url(self) -> str:
        if not self.database_url:
            raise EnvironmentProblem("DATABASE_URL is not set (run `backfill demo` or export it)")
        return self.database_url

    def require_broker_url(self) -> str:
        if not self.broker_url:
            raise EnvironmentProblem("BROKER_URL is not set (run `backfill demo` or export it)")
        return self.broker_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read on first use. A value the settings refuse stops the
    process with one line naming the variable (SettingsInvalid is an EnvironmentProblem)."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsInvalid(settings_problem(exc)) from None


def settings_problem(exc: ValidationError) -> str:
    """What is wrong, by variable name; never the value given (it may be a secret)."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "settings"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{where.upper()}: {message}")
    return "invalid setting " + "; ".join(problems)
