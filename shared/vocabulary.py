"""The product's words, one copy: session kinds, states, sentiments, outcomes, error kinds, modes.

Every module that validates, stores or prints one of these words takes it from here, so adding
a state or an error kind is a one-line change that the tests see everywhere at once. Where a
word set is also a type (a pydantic field, a typed argument), the `Literal` is the one copy and
the tuple is read from it.
"""

from __future__ import annotations

from typing import Final, Literal, TypeGuard, get_args

# --------------------------------------------------------------------------- sessions

SessionKind = Literal["call", "chat"]
SESSION_KINDS: Final[tuple[SessionKind, ...]] = get_args(SessionKind)
# An agent version is a voice or a chat agent; its sessions are calls or chats.
AgentKind = Literal["voice", "chat"]
AGENT_KINDS: Final[tuple[AgentKind, ...]] = get_args(AgentKind)

CallStatus = Literal["registered", "not_connected", "ongoing", "ended", "error"]
CALL_STATUSES: Final[tuple[CallStatus, ...]] = get_args(CallStatus)
ChatStatus = Literal["ongoing", "ended", "error"]
CHAT_STATUSES: Final[tuple[ChatStatus, ...]] = get_args(ChatStatus)
CallType = Literal["web_call", "phone_call"]
CALL_TYPES: Final[tuple[CallType, ...]] = get_args(CallType)
Direction = Literal["inbound", "outbound"]
DIRECTIONS: Final[tuple[Direction, ...]] = get_args(Direction)
Sentiment = Literal["Positive", "Negative", "Neutral", "Unknown"]
SENTIMENTS: Final[tuple[Sentiment, ...]] = get_args(Sentiment)
CUSTOM_FIELD_TYPES: Final[tuple[str, ...]] = ("string", "enum", "boolean", "number")

# Why an item ended `skipped` (DESIGN "Skips").
SKIP_DELETED: Final = "session deleted"
SKIP_NOT_CONNECTED: Final = "not connected"
SKIP_NO_TRANSCRIPT: Final = "no transcript"

# --------------------------------------------------------------------------- items and jobs

ItemState = Literal["pending", "queued", "running", "succeeded", "failed", "skipped",
                    "cancelled"]
ITEM_STATES: Final[tuple[ItemState, ...]] = get_args(ItemState)
TERMINAL_ITEM_STATES: Final[tuple[ItemState, ...]] = (
    "succeeded", "failed", "skipped", "cancelled")
OPEN_ITEM_STATES: Final[tuple[ItemState, ...]] = ("pending", "queued", "running")

JobState = Literal["running", "paused", "cancelled", "completed"]
JOB_STATES: Final[tuple[JobState, ...]] = get_args(JobState)
# States a job rests in until someone acts: a follower (`--wait`, `watch`) stops there.
RESTING_JOB_STATES: Final[tuple[JobState, ...]] = ("completed", "cancelled", "paused")

# How a job's requests travel: one Celery task per session, or the Message Batches API.
Mode = Literal["live", "batch"]
MODES: Final[tuple[Mode, ...]] = get_args(Mode)
LIVE: Final = "live"
BATCH: Final = "batch"

# What one delivery of a session task (or one batch result) ended in: for logs and tests.
Outcome = Literal["succeeded", "skipped", "failed", "retry", "paused", "not_claimed",
                  "superseded", "duplicate", "db_unavailable", "abandoned"]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)

# --------------------------------------------------------------------------- error kinds

# DESIGN "Error kinds", grouped by what the retry policy does with them.
TRANSIENT_ERROR_KINDS: Final[tuple[str, ...]] = (
    "llm_rate_limited", "llm_overloaded", "llm_server_error", "llm_timeout", "llm_connection",
    "db_unavailable")
RETRIED_THEN_FAILED_ERROR_KINDS: Final[tuple[str, ...]] = ("llm_invalid_output",)
PERMANENT_ERROR_KINDS: Final[tuple[str, ...]] = (
    "llm_bad_request", "llm_refusal", "config_missing")
JOB_FATAL_ERROR_KINDS: Final[tuple[str, ...]] = ("llm_auth", "llm_billing")
# Written by the reconciler, not by an analysis: the worker holding the item stopped answering.
LEASE_EXPIRED: Final = "lease_expired"
ERROR_KINDS: Final[tuple[str, ...]] = (
    *TRANSIENT_ERROR_KINDS, *RETRIED_THEN_FAILED_ERROR_KINDS, *PERMANENT_ERROR_KINDS,
    *JOB_FATAL_ERROR_KINDS, LEASE_EXPIRED)

# --------------------------------------------------------------------------- JSON values


def json_type(value: object) -> str:
    """The JSON name of a decoded value, for messages a JSON user can read (never the value
    itself: it may be personal data)."""
    if value is None:
        return "null"
    names: tuple[tuple[type, str], ...] = (
        (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
        (list, "array"), (dict, "object"),
    )
    return next((name for cls, name in names if isinstance(value, cls)), type(value).__name__)


def is_json_integer(value: object) -> TypeGuard[int]:
    # bool is a subclass of int in Python; JSON true is not a number.
    return isinstance(value, int) and not isinstance(value, bool)


def is_json_number(value: object) -> TypeGuard[int | float]:
    return is_json_integer(value) or isinstance(value, float)

# --------------------------------------------------------------------------- webhooks

# What a workspace's webhook endpoints are told (DESIGN "Webhooks").
WebhookEventType = Literal["backfill.completed", "backfill.paused", "backfill.cancelled"]
WEBHOOK_EVENT_TYPES: Final[tuple[WebhookEventType, ...]] = get_args(WebhookEventType)
