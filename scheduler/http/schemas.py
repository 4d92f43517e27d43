"""Request and response bodies of the HTTP API (the JSON shapes of DESIGN.md), for OpenAPI.

Request models are strict (no coercion of "true" to true) and refuse unknown keys. Filter rows
and options are validated by the planner, the one place that knows them, so their messages
name `filters[i]` exactly as the CLI does; here they only get a documented JSON Schema.
Response models allow extra keys: adding a key to a document never breaks the API.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
)

from scheduler.jobs.filters import FIELDS, KEYED_OPS, LIST_OPS, ORDER_OPS, TEXT_OPS
from scheduler.jobs.options import MAX_LIMIT, MAX_TRIAL_SIZE
from shared.vocabulary import ItemState, JobState, SessionKind

MAX_IDS = 10_000  # session ids in one requeue request


def storable(value: str) -> str:
    """Postgres text holds no NUL and psycopg cannot encode lone surrogates: refuse both here,
    so such input is a 422 and never a database error."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


Text = Annotated[str, StringConstraints(max_length=1000), AfterValidator(storable)]
Reason = Annotated[str, StringConstraints(max_length=2000), AfterValidator(storable)]
SessionId = Annotated[str, StringConstraints(min_length=1, max_length=128),
                      AfterValidator(storable)]
ErrorKind = Annotated[str, StringConstraints(min_length=1, max_length=64),
                      AfterValidator(storable)]
Kind = SessionKind

_ALL_OPS = sorted({*TEXT_OPS, *ORDER_OPS, *LIST_OPS, *KEYED_OPS, "in"})
FILTERS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "maxItems": 50,
    "description": "Filter rows, all of which must hold (DESIGN.md, 'Filter rows'). A bad row "
                   "is a 422 whose message starts with `filters[i]:`.",
    "items": {
        "type": "object",
        "required": ["field", "op"],
        "additionalProperties": False,
        "properties": {
            "field": {"type": "string", "enum": sorted(FIELDS)},
            "op": {"type": "string", "enum": _ALL_OPS},
            "value": {"description": "Type depends on field and op; absent for pr/np."},
            "key": {"type": ["string", "null"], "description": "Entry name (keyed fields)."},
        },
    },
}
OPTIONS_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "additionalProperties": False,
    "description": "How much of the filtered set the job takes; null or absent = defaults.",
    "properties": {
        "sample_rate": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_LIMIT},
        "skip_current": {"type": ["boolean", "null"]},
        "trial_size": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_TRIAL_SIZE,
                       "description": "A trial of N of the sessions the job would take: "
                                      "analysed and reported, never applied (promote it)."},
        "max_cost_usd": {"type": ["number", "null"], "exclusiveMinimum": 0,
                         "description": "Budget cap in USD: the job pauses before it would "
                                        "spend more (at least one session's estimated cost)."},
    },
}

Filters = Annotated[Any, WithJsonSchema(FILTERS_SCHEMA)]
Options = Annotated[Any, WithJsonSchema(OPTIONS_SCHEMA)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


_EXAMPLE: dict[str, JsonValue] = {"kind": "call", "filters": [
    {"field": "call_status", "op": "in", "value": ["ended"]},
    {"field": "start_timestamp", "op": "ge", "value": 1761955200000},
]}


class PreviewRequest(_Request):
    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE]})

    kind: Kind
    filters: Filters
    options: Options = None


class CreateRequest(PreviewRequest):
    model_config = ConfigDict(json_schema_extra={
        "examples": [{**_EXAMPLE, "options": {"sample_rate": 0.5}, "reason": "new prompts"}]})

    reason: Reason | None = None


class ReasonRequest(_Request):
    reason: Reason | None = None


class ResumeRequest(ReasonRequest):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"max_cost_usd": 25.0, "reason": "approved a larger budget"}]})

    max_cost_usd: Annotated[float, Field(gt=0, allow_inf_nan=False, description=(
        "A new budget cap in USD (a job paused at its cap resumes only with one)."))] | None = None


class RequeueRequest(ReasonRequest):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error_kinds": ["llm_timeout"], "dry_run": True, "reason": "provider outage over"}]})

    error_kinds: Annotated[list[ErrorKind], Field(max_length=100)] | None = None
    session_ids: Annotated[list[SessionId], Field(max_length=MAX_IDS)] | None = None
    dry_run: bool = False


class RerunRequest(_Request):
    """Empty: a rerun always uses the agent's latest draft configuration."""


class RevertRequest(ReasonRequest):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"dry_run": True}, {"reason": "the new prompts misread cancellations"}]})

    dry_run: bool = False


# ------------------------------------------------------------------------------- responses


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class JobCounts(_Response):
    matched: int
    pending: int
    queued: int
    running: int
    succeeded: int
    failed: int
    skipped: int
    cancelled: int


class AuditEvent(_Response):
    at: str
    actor: str = Field(description="`api_key:<key id>` or `os:<user>`.")
    action: str
    reason: str | None
    details: dict[str, Any]


class Spend(_Response):
    spent_usd: float = Field(description="What the job's calls cost so far.")
    reserved_usd: float = Field(description="What its sessions in flight hold against the cap.")


class Job(_Response):
    id: str
    workspace_id: str
    kind: Kind
    filters: list[Any]
    options: dict[str, Any]
    state: JobState
    state_reason: str | None
    trial: bool = Field(description="A trial: its runs change no session (promote applies).")
    promoted_from: str | None = Field(description="The trial this job was promoted from.")
    counts: JobCounts
    error_kinds: dict[str, int]
    created_at: str
    finished_at: str | None
    audit: list[AuditEvent]
    max_cost_usd: float | None = Field(None, description="The budget cap in USD (null: none).")
    pause_reason: str | None = Field(None, description="`budget_exhausted` while paused at the "
                                                       "cap.")
    spend: Spend | None = None


class JobPage(_Response):
    items: list[Job]
    next_cursor: str | None


class Item(_Response):
    session_id: str
    state: ItemState
    error_kind: str | None
    error: str | None
    attempts: int


class ItemPage(_Response):
    items: list[Item]
    next_cursor: str | None


class AnalysisSource(_Response):
    agent_id: str
    agent_version: int
    used_draft: bool
    model: str
    config_hash: str
    job_id: str | None
    analyzed_at: str | None


class SessionAnalysis(_Response):
    """`call_analysis` for calls, `chat_analysis` for chats; the other key is absent."""

    session_id: str
    kind: Kind
    workspace_id: str
    agent_id: str
    agent_version: int | None
    call_analysis: dict[str, Any] | None = None
    chat_analysis: dict[str, Any] | None = None
    analysis_source: AnalysisSource | None


class Preview(_Response):
    matched: int
    # Tokens and USD per model for the chosen mode (see `backfill preview --json`).
    estimate: dict[str, Any]


class Requeued(_Response):
    requeued: int
    dry_run: bool


class Rerun(_Response):
    job: Job
    analysis: SessionAnalysis | None = Field(
        description="The session after the rerun, when waited for and the job finished.")


class Reverted(_Response):
    reverted: int = Field(description="Sessions whose analysis from before the job is back.")
    left_newer: int = Field(description="Sessions a later job or rerun wrote, left alone.")
    dry_run: bool


class ReportSessions(_Response):
    analysed: int = Field(description="Succeeded items.")
    changed: int = Field(description="Sessions with at least one field changed.")
    unchanged: int
    without_before: int = Field(description="Runs older than befores were recorded: not "
                                            "compared.")


class ReportField(_Response):
    type: Literal["string", "boolean", "enum", "number"]
    changed: int
    before_present: int
    after_present: int
    matrix: dict[str, dict[str, int]] | None = Field(
        None, description="boolean and enum fields: {before: {after: sessions}}, values as "
                          "JSON text (\"true\", \"null\"), enum values as themselves.")
    before_mean: float | None = Field(None, description="number fields: over present values.")
    after_mean: float | None = Field(None, description="number fields: over present values.")


class ReportExample(_Response):
    session_id: str
    field: str
    before: JsonValue
    after: JsonValue


class ChangeReport(_Response):
    """What a job (trial or applied) changed, field by field (DESIGN "Safe to apply")."""

    job_id: str
    trial: bool
    sessions: ReportSessions
    fields: dict[str, ReportField] = Field(
        description="`<kind>_summary`, `<kind>_successful`, `user_sentiment`, "
                    "`custom_analysis_data.<name>`.")
    examples: list[ReportExample] = Field(description="Up to 5 per changed field.")


class Health(_Response):
    status: Literal["ok", "unavailable"]
    postgres: Literal["ok", "unavailable"]
    broker: Literal["ok", "unavailable"]


class ErrorDetail(_Response):
    type: str = Field(description="unauthorized, not_found, conflict, invalid_input, "
                                  "invalid_filter, bad_json, too_large, unavailable, …")
    message: str
    filter_index: int | None = Field(None, description="The bad row, for invalid_filter.")


class ErrorBody(_Response):
    """Every error answer has this shape."""

    error: ErrorDetail
