"""Producer: filter rows in, one item row per matching session out, expanded inside Postgres.

The selection is one SQL query built in four steps, in this order:

1. the filter rows (`shared.filters.matching_sessions`: workspace and kind always enforced);
2. `sample_rate`: a deterministic sample by session id;
3. `limit`: the newest N of what is left;
4. `skip_current`: leave out sessions whose current analysis already came from the
   configuration the worker would use now.

`limit` comes before `skip_current` on purpose: running the same job again with
`skip_current` selects the same newest N and leaves out the ones already done, which is what
"resume a half-done effort" means. Applied the other way round, a resume would reach past
the original N into older sessions.

`preview` counts exactly the query `create_job` inserts from, so the two always agree.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, TypeGuard, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    CursorResult,
    Select,
    Subquery,
    Text,
    bindparam,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from scheduler.batches import resolve_mode
from shared.analysis import (
    AgentVersionInfo,
    build_request,
    config_hash,
    resolve_config,
    system_text,
)
from shared.db import Database
from shared.errors import AnalysisConfigMissing, InvalidInput
from shared.filters import FilterRow, matching_sessions, parse_filters
from shared.models import AnalysisRun, BackfillItem, SessionRecord
from shared.pricing import Mode, Tokens, cost_usd
from shared.settings import Settings

KINDS = ("call", "chat")
OPTION_NAMES = ("sample_rate", "limit", "skip_current")
MODES = ("live", "batch")
MAX_LIMIT = 10_000_000
# hashtextextended() returns a signed 64-bit hash; masking the sign bit leaves 63 uniform bits.
_HASH_MASK = 2**63 - 1
_HASH_SPACE = 2**63


@dataclass(frozen=True)
class CreatedJob:
    job_id: str
    created: bool  # False when an idempotency key returned an existing job


@dataclass(frozen=True)
class JobOptions:
    """How much of the filtered set a job takes (see the module docstring for the order)."""

    sample_rate: float = 1.0
    limit: int | None = None
    skip_current: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def new_job_id() -> str:
    return "bf_" + secrets.token_hex(10)


# --------------------------------------------------------------------------- options


def _json_type(value: object) -> str:
    """The JSON name of a decoded value, for messages a JSON user can read."""
    if value is None:
        return "null"
    names = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
             (list, "array"), (dict, "object"))
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def _is_number(value: object) -> TypeGuard[int | float]:
    # bool is an int in Python, but JSON true is not a number.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: object) -> str:
    return repr(value)[:40] if _is_number(value) else _json_type(value)


def _sample_rate(value: object) -> float:
    if value is None:
        return 1.0
    # NaN fails the range test like any other value outside (0, 1].
    if not _is_number(value) or not 0 < value <= 1:
        raise InvalidInput(
            f"options.sample_rate: must be a number with 0 < r ≤ 1, got {_shown(value)}"
        )
    return float(value)


def _limit(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIMIT:
        raise InvalidInput(
            f"options.limit: must be an integer with 1 ≤ n ≤ {MAX_LIMIT:,}, got {_shown(value)}"
        )
    return value


def _skip_current(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"options.skip_current: must be a boolean, got {_json_type(value)}")
    return value


def parse_options(raw: object) -> JobOptions:
    """Validate decoded JSON options; null (or a missing option) means its default."""
    if raw is None:
        return JobOptions()
    if isinstance(raw, JobOptions):
        return raw
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"options: must be an object, got {_json_type(raw)}")
    unknown = sorted(str(name) for name in raw if name not in OPTION_NAMES)
    if unknown:
        raise InvalidInput(
            f"options: unknown option(s) {', '.join(unknown)[:200]} "
            f"(known: {', '.join(OPTION_NAMES)})"
        )
    return JobOptions(
        sample_rate=_sample_rate(raw.get("sample_rate")),
        limit=_limit(raw.get("limit")),
        skip_current=_skip_current(raw.get("skip_current")),
    )


# --------------------------------------------------------------------------- entry points


def validate_request(
    settings: Settings, workspace_id: str, kind: str, raw_filters: object
) -> list[FilterRow]:
    if not isinstance(workspace_id, str) or not workspace_id.strip():
        raise InvalidInput("workspace: must be a non-empty string")
    if kind not in KINDS:
        raise InvalidInput(f"kind: must be one of {', '.join(KINDS)}, not {kind!r}")
    return parse_filters(kind, raw_filters, max_rows=settings.max_filter_rows)


def preview(
    db: Database,
    settings: Settings,
    workspace_id: str,
    kind: str,
    raw: object,
    *,
    options: object = None,
) -> int:
    """How many sessions `create_job` with the same filters and options would take now."""
    rows = validate_request(settings, workspace_id, kind, raw)
    job_options = parse_options(options)
    with db.transaction() as tx:
        _require_workspace(tx, workspace_id)
        selected = selection(tx, settings, workspace_id, kind, rows, job_options).subquery()
        return int(tx.execute(select(func.count()).select_from(selected)).scalar_one())


def create_job(
    db: Database,
    settings: Settings,
    workspace_id: str,
    kind: str,
    raw_filters: object,
    *,
    options: object = None,
    idempotency_key: str | None = None,
    created_by: str | None = None,
    mode: str | None = None,
    on_created: Callable[[Connection, str], None] | None = None,
) -> CreatedJob:
    """Validate everything first, then create job and items in one transaction (all or nothing).

    `mode` is `live` (one Celery task per session) or `batch` (the Message Batches API, driven
    by the scheduler); None picks `batch` above `BACKFILL_BATCH_AUTO_THRESHOLD` matches.
    `on_created(tx, job_id)` runs in the same transaction (the audit event commits with the
    job or not at all); an idempotent replay does not call it.
    """
    rows = validate_request(settings, workspace_id, kind, raw_filters)
    job_options = parse_options(options)
    if mode is not None and mode not in MODES:
        raise InvalidInput(f"mode: must be one of {', '.join(MODES)}, not {mode!r}")
    with db.transaction() as tx:
        _require_workspace(tx, workspace_id)
        job_id = _insert_job(tx, workspace_id, kind, raw_filters, job_options.as_json(),
                             idempotency_key, created_by)
        if job_id is None:
            return CreatedJob(_job_for_key(tx, workspace_id, idempotency_key), created=False)
        query = selection(tx, settings, workspace_id, kind, rows, job_options)
        matched = _expand(tx, job_id, query, settings.db_expansion_timeout_ms)
        _record_matched(tx, job_id, matched)
        if resolve_mode(mode, matched, settings.batch_auto_threshold) == "batch":
            _record_batch_mode(tx, job_id)
        if on_created is not None:
            on_created(tx, job_id)
    return CreatedJob(job_id, created=True)


def _record_batch_mode(tx: Connection, job_id: str) -> None:
    # Only batch jobs carry a mode in `options`: a live job's options stay as they were.
    tx.execute(text("""UPDATE backfill_jobs SET options = options || '{"mode": "batch"}'::jsonb
                        WHERE id = :id"""), {"id": job_id})


def _require_workspace(tx: Connection, workspace_id: str) -> None:
    found = tx.execute(text("SELECT 1 FROM workspaces WHERE id = :id"), {"id": workspace_id})
    if found.first() is None:
        raise InvalidInput(f"workspace: unknown workspace {workspace_id!r}")


_INSERT_JOB = text("""
    INSERT INTO backfill_jobs (id, workspace_id, kind, filters, options, idempotency_key,
                               created_by)
    VALUES (:id, :workspace_id, :kind, CAST(:filters AS jsonb), CAST(:options AS jsonb), :key,
            :created_by)
    ON CONFLICT (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
""")


def _insert_job(
    tx: Connection, workspace_id: str, kind: str, raw: Any, options: dict[str, Any],
    key: str | None, created_by: str | None,
) -> str | None:
    params = {
        "id": new_job_id(), "workspace_id": workspace_id, "kind": kind,
        "filters": json.dumps(raw), "options": json.dumps(options), "key": key,
        "created_by": created_by,
    }
    row = tx.execute(_INSERT_JOB, params).first()
    return None if row is None else str(row.id)


def _job_for_key(tx: Connection, workspace_id: str, key: str | None) -> str:
    return str(tx.execute(
        text("SELECT id FROM backfill_jobs WHERE workspace_id = :ws AND idempotency_key = :key"),
        {"ws": workspace_id, "key": key},
    ).scalar_one())


def _expand(tx: Connection, job_id: str, query: Select[Any], timeout_ms: int) -> int:
    """One INSERT … SELECT: the ids never leave Postgres."""
    # Expanding millions of sessions legitimately outlasts the per-statement default.
    tx.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(timeout_ms)})
    matches = query.subquery()
    source = select(literal(job_id).label("job_id"), matches.c.session_id)
    result = tx.execute(
        insert(BackfillItem).from_select(["job_id", "session_id"], source),
        execution_options={"preserve_rowcount": True},  # else SQLAlchemy reports -1
    )
    return int(cast(CursorResult[Any], result).rowcount)


def _record_matched(tx: Connection, job_id: str, matched: int) -> None:
    # A job that matched nothing is complete at birth.
    tx.execute(text("""
        UPDATE backfill_jobs
           SET matched = :matched,
               state = CASE WHEN :matched = 0 THEN 'completed' ELSE state END,
               finished_at = CASE WHEN :matched = 0 THEN clock_timestamp() END
         WHERE id = :id
    """), {"matched": matched, "id": job_id})


# --------------------------------------------------------------------------- selection


def selection(
    tx: Connection, settings: Settings, workspace_id: str, kind: str, rows: list[FilterRow],
    options: JobOptions,
) -> Select[Any]:
    """SELECT session_id of the sessions a job with these filters and options takes.

    Public for tools that look at the query itself (`bench/` EXPLAINs it). With
    `skip_current` it reads the matched groups and agent versions through `tx` first.
    """
    candidates = _candidates(workspace_id, kind, rows, options).subquery("candidates")
    query = select(candidates.c.session_id)
    if not options.skip_current:
        return query
    groups = _current_config_hashes(tx, settings, workspace_id, kind, candidates)
    return _without_current(query, candidates, groups) if groups else query


def _candidates(
    workspace_id: str, kind: str, rows: list[FilterRow], options: JobOptions
) -> Select[Any]:
    """Steps 1–3: filters, sample, limit."""
    query = matching_sessions(workspace_id, kind, rows)
    if options.skip_current:
        query = query.add_columns(
            SessionRecord.agent_id, SessionRecord.analysis_run_id,
            literal_column(_TRANSFER_SIGNATURE, Text).label("transfer_signature"),
        )
    if options.sample_rate < 1:
        query = query.where(_sampled(options.sample_rate))
    if options.limit is not None:
        query = query.order_by(
            SessionRecord.start_timestamp.desc().nulls_last(), SessionRecord.session_id,
        ).limit(options.limit)
    return query


def _sampled(rate: float) -> ColumnElement[bool]:
    """A session is in the sample when the hash of its id, read as a fraction of the hash
    space, is below the rate.

    Why this hash: it depends on the session id alone (no job id, no random seed), so running
    the same job again picks the same sessions, and a smaller rate picks a subset of a larger
    one. hashtextextended() is the function Postgres uses to route text to hash partitions,
    so its values cannot change between releases without breaking those tables; under the
    usual deterministic collations it hashes the bytes of the text alone. The threshold
    is an exact integer computed here: comparing bigints keeps the sample about as cheap as a
    plain scan (numeric division would cost several times more on a million rows).
    """
    threshold = math.ceil(Fraction(rate) * _HASH_SPACE)
    bucket = func.hashtextextended(SessionRecord.session_id, literal(0, BigInteger)).op("&")(
        literal(_HASH_MASK, BigInteger)
    )
    return bucket < literal(threshold, BigInteger)


# The part of a session's transfers that the configuration depends on: the destination and
# the analysis setting of each transfer, in order. Grouping on the raw column would not work:
# each transfer also carries its own time (`at_ms`), which makes nearly every session its own
# group. Computed only for sessions that have a current analysis (the others cannot be
# skipped); a column that is not an array gets no signature and is never skipped.
_SIGNATURE_OF_ARRAY = """WHEN sessions.agent_transfers = '[]'::jsonb THEN '[]'
    ELSE (SELECT CAST(jsonb_agg(jsonb_build_array(
                     step.transfer -> 'to_agent_id',
                     step.transfer -> 'post_call_analysis_setting') ORDER BY step.position)
                 AS text)
            FROM jsonb_array_elements(sessions.agent_transfers)
                 WITH ORDINALITY AS step(transfer, position))
END"""
_TRANSFER_SIGNATURE = """CASE
    WHEN sessions.analysis_run_id IS NULL
      OR jsonb_typeof(sessions.agent_transfers) IS DISTINCT FROM 'array' THEN NULL
    """ + _SIGNATURE_OF_ARRAY
# The same signature for every session (cost estimates group all matched sessions).
_ANY_TRANSFER_SIGNATURE = """CASE
    WHEN jsonb_typeof(sessions.agent_transfers) IS DISTINCT FROM 'array' THEN '[]'
    """ + _SIGNATURE_OF_ARRAY


@dataclass(frozen=True)
class _ConfigGroup:
    """Sessions of one agent with the same transfer signature share one configuration."""

    agent_id: str
    signature: str
    config_hash: str


def _current_config_hashes(
    tx: Connection, settings: Settings, workspace_id: str, kind: str, candidates: Subquery
) -> list[_ConfigGroup]:
    """The configuration hash the worker would use now, for each group among the candidates."""
    found = tx.execute(
        select(candidates.c.agent_id, candidates.c.transfer_signature).distinct()
        .where(candidates.c.transfer_signature.is_not(None))
    ).all()
    groups = [(str(row.agent_id), str(row.transfer_signature)) for row in found]
    transfers = {signature: _transfers(signature) for _, signature in groups}
    versions = _load_agent_versions(tx, workspace_id, _agents_involved(groups, transfers))
    resolved = (
        (agent_id, signature,
         _config_hash(kind, agent_id, transfers[signature], versions, settings.default_model))
        for agent_id, signature in groups
    )
    return [_ConfigGroup(a, s, h) for a, s, h in resolved if h is not None]


def _transfers(signature: str) -> list[dict[str, Any]]:
    """The signature back in the shape `resolve_config` reads (missing keys come back null)."""
    return [
        {"to_agent_id": destination, "post_call_analysis_setting": setting}
        for destination, setting in json.loads(signature)
    ]


def _agents_involved(
    groups: Sequence[tuple[str, str]], transfers: Mapping[str, list[dict[str, Any]]]
) -> list[str]:
    agents = {agent_id for agent_id, _ in groups}
    for steps in transfers.values():
        agents |= {step["to_agent_id"] for step in steps if isinstance(step["to_agent_id"], str)}
    return sorted(agents)


def _config_hash(
    kind: str, agent_id: str, transfers: list[dict[str, Any]],
    versions: Mapping[str, Sequence[AgentVersionInfo]], default_model: str,
) -> str | None:
    """None when the worker could not resolve a configuration: such sessions are kept."""
    try:
        return config_hash(resolve_config(kind, agent_id, transfers, versions, default_model))
    except AnalysisConfigMissing:
        return None


_LOAD_VERSIONS = text("""
    SELECT agent_id, version, is_published, kind, analysis_model, analysis_data
      FROM agent_versions
     WHERE workspace_id = :workspace_id AND agent_id = ANY(:agent_ids)
""")


def _load_agent_versions(
    tx: Connection, workspace_id: str, agent_ids: list[str]
) -> dict[str, list[AgentVersionInfo]]:
    """The same rows the worker reads at run time (the scheduler cannot import worker/)."""
    versions: dict[str, list[AgentVersionInfo]] = {}
    rows = tx.execute(_LOAD_VERSIONS, {"workspace_id": workspace_id, "agent_ids": agent_ids})
    for row in rows:
        versions.setdefault(row.agent_id, []).append(AgentVersionInfo(
            agent_id=row.agent_id, version=row.version, is_published=row.is_published,
            kind=row.kind, model=row.analysis_model, fields=list(row.analysis_data or []),
        ))
    return versions


def _without_current(
    query: Select[Any], candidates: Subquery, groups: Sequence[_ConfigGroup]
) -> Select[Any]:
    """Step 4, still inside the one statement: join each candidate to its current run and
    drop it when (agent, transfer signature, run's config hash) is one of the groups.

    The groups go in as three parallel arrays (one bound parameter each, whatever their
    number) unnested into a small relation Postgres can hash.
    """
    current = func.unnest(
        _text_array("group_agents", [g.agent_id for g in groups]),
        _text_array("group_signatures", [g.signature for g in groups]),
        _text_array("group_hashes", [g.config_hash for g in groups]),
    ).table_valued("agent_id", "signature", "config_hash").render_derived("current_config")
    runs = AnalysisRun.__table__
    is_current = select(literal(1)).select_from(current).where(
        current.c.agent_id == candidates.c.agent_id,
        current.c.signature == candidates.c.transfer_signature,
        current.c.config_hash == runs.c.config_hash,
    ).exists()
    return (
        query.select_from(candidates.outerjoin(runs, runs.c.id == candidates.c.analysis_run_id))
        .where(~is_current)
    )


def _text_array(name: str, values: list[str]) -> ColumnElement[Any]:
    # The psycopg dialect renders the bind cast (`::TEXT[]`) itself.
    return bindparam(name, values, type_=ARRAY(Text))


# --------------------------------------------------------------------------- cost estimate

CHARS_PER_TOKEN = 4
# Below this many tokens a prefix is not cached (the provider's minimum for most models).
MIN_CACHEABLE_TOKENS = 1024


@dataclass(frozen=True)
class _Group:
    """Matched sessions of one agent and transfer signature: one configuration."""

    agent_id: str
    signature: str
    sessions: int
    analysed: int
    transcript_chars: int


@dataclass
class _ModelEstimate:
    sessions: int = 0
    tokens: Tokens = Tokens()


def preview_estimate(
    db: Database,
    settings: Settings,
    workspace_id: str,
    kind: str,
    raw: object,
    *,
    options: object = None,
    mode: Mode = "live",
) -> dict[str, Any]:
    """`{"matched": n, "estimate": {...}}`: the sessions `create_job` would take now, and
    the tokens and USD their analysis would take with the model of each one's effective
    configuration (resolved per agent and transfer signature, as `skip_current` does).

    Input is chars / 4 of the transcript plus the request's static part; the static prefix
    of each configuration is a cache write once, then cache reads. Sessions that will be
    skipped (not connected, no transcript) cost nothing; sessions without a configuration
    are left out (they fail at once)."""
    rows = validate_request(settings, workspace_id, kind, raw)
    job_options = parse_options(options)
    with db.transaction() as tx:
        _require_workspace(tx, workspace_id)
        selected = selection(tx, settings, workspace_id, kind, rows, job_options)
        groups = _estimate_groups(tx, selected.subquery("selected"))
        transfers = {group.signature: _transfers(group.signature) for group in groups}
        pairs = [(group.agent_id, group.signature) for group in groups]
        versions = _load_agent_versions(tx, workspace_id, _agents_involved(pairs, transfers))
    per_model: dict[str, _ModelEstimate] = {}
    for group in groups:
        _add_group(settings, kind, group, transfers[group.signature], versions, per_model)
    return {"matched": sum(group.sessions for group in groups),
            "estimate": _estimate_document(settings, per_model, mode)}


def _estimate_groups(tx: Connection, selected: Subquery) -> list[_Group]:
    signature = literal_column(_ANY_TRANSFER_SIGNATURE, Text)
    will_run = (func.coalesce(SessionRecord.status, "") != "not_connected") & (
        SessionRecord.transcript != literal("[]").cast(SessionRecord.transcript.type))
    found = tx.execute(
        select(SessionRecord.agent_id, signature.label("signature"),
               func.count().label("sessions"),
               func.count().filter(will_run).label("analysed"),
               func.coalesce(func.sum(func.length(SessionRecord.transcript.cast(Text)))
                             .filter(will_run), 0).label("chars"))
        .join(selected, selected.c.session_id == SessionRecord.session_id)
        .group_by(SessionRecord.agent_id, signature)
    ).all()
    return [_Group(str(row.agent_id), str(row.signature), int(row.sessions),
                   int(row.analysed), int(row.chars)) for row in found]


def _add_group(
    settings: Settings, kind: str, group: _Group, transfers: list[dict[str, Any]],
    versions: Mapping[str, Sequence[AgentVersionInfo]], per_model: dict[str, _ModelEstimate],
) -> None:
    try:
        config = resolve_config(kind, group.agent_id, transfers, versions,
                                settings.default_model)
    except AnalysisConfigMissing:
        return
    if not group.analysed:
        return
    request = build_request(config, [], max(settings.llm_max_tokens, 1))
    prefix = _tokens(len(system_text(config)))
    # The prompt blocks the provider bills as input. The output schema is not counted: the
    # stand-in does not bill it and the real API's structured-output overhead is small.
    static = _tokens(len(json.dumps(request["messages"])))
    transcripts = _tokens(group.transcript_chars)
    tokens = Tokens(input=transcripts + static * group.analysed,
                    output=settings.estimate_output_tokens * group.analysed)
    if settings.prompt_caching and prefix >= MIN_CACHEABLE_TOKENS:
        # One write per configuration, then reads while the cache stays warm.
        tokens += Tokens(cache_write=prefix, cache_read=prefix * (group.analysed - 1))
    else:
        tokens += Tokens(input=prefix * group.analysed)
    entry = per_model.setdefault(config.model, _ModelEstimate())
    entry.sessions += group.analysed
    entry.tokens += tokens


def _tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def _estimate_document(
    settings: Settings, per_model: Mapping[str, _ModelEstimate], mode: Mode
) -> dict[str, Any]:
    breakdown = {
        model: {"sessions": entry.sessions, "input_tokens": entry.tokens.input,
                "cache_write_tokens": entry.tokens.cache_write,
                "cache_read_tokens": entry.tokens.cache_read,
                "output_tokens": entry.tokens.output,
                "usd": round(cost_usd(settings, model, entry.tokens, mode), 6)}
        for model, entry in sorted(per_model.items())
    }
    total = sum((entry.tokens for entry in per_model.values()), Tokens())
    return {
        "input_tokens": total.input + total.cache_write + total.cache_read,
        "output_tokens": total.output,
        "usd": round(sum(row["usd"] for row in breakdown.values()), 6),
        "model_breakdown": breakdown,
        "mode": mode,
    }
