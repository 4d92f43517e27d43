"""What a job would cost: `preview`'s estimate of tokens and USD per model, as the provider
bills (DESIGN "Spend control"), and the per-session estimate a capped job reserves.

The sessions are those `create_job` would take now (`selection`); each group of one agent and
transfer signature shares one configuration, resolved as the worker would resolve it, and
groups with the same configuration are estimated together. For each configuration:

- **input**: the provider's counter on a sample of its sessions (`token_counts`), scaled to
  all of them by their transcripts' length (read from a larger sample, so no preview reads
  every transcript); every block of the request counts, the output schema too;
- **cache**: the static prefix is a cache write once and cache reads after, only when it
  reaches the model's minimum (`BACKFILL_CACHE_MIN_TOKENS`); below it, plain input;
- **output**: the mean of the configuration's recorded runs, else
  `BACKFILL_ESTIMATE_OUTPUT_TOKENS`;
- **price**: the price table, with the batch discount in batch mode.

`basis` says what the estimate stands on: `history` (counted input, output from recorded
runs), `counted` (counted input, the default output), or `default` (the provider's counter
could not be asked: characters / 4, and `basis_reason` says why). The estimate's basis is
the weakest of its configurations'. Sessions that will be skipped cost nothing; sessions
without a configuration are left out (they fail at once).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

from sqlalchemy import Connection, Select, Subquery, Text, func, literal_column, select, text

from scheduler.jobs import token_counts
from scheduler.jobs.options import parse_mode, parse_options, resolve_mode
from scheduler.jobs.planner import require_workspace, validate_request
from scheduler.jobs.selection import (
    ANY_TRANSFER_SIGNATURE,
    agents_involved,
    selection,
    transfers_of,
)
from scheduler.jobs.token_counts import Candidate, InputModel, Member
from shared.analysis import AgentVersionInfo, EffectiveConfig, config_hash, resolve_config
from shared.db import Database
from shared.errors import AnalysisConfigMissing, EnvironmentProblem, NotFound
from shared.models import BackfillItem, SessionRecord
from shared.pipeline import load_agent_versions
from shared.pricing import PER_MTOK, Tokens, cost_usd, min_cacheable_tokens
from shared.settings import Settings
from shared.state.budget import SessionEstimate
from shared.vocabulary import OPEN_ITEM_STATES, Mode

Basis = Literal["default", "counted", "history"]
BASES: Final[tuple[Basis, ...]] = ("default", "counted", "history")  # weakest first
# Output tokens are the mean of a configuration's latest runs, at most this many.
RECENT_RUNS = 1000


@dataclass(frozen=True)
class _Group:
    """Matched sessions of one agent and transfer signature: one configuration."""

    agent_id: str
    signature: str
    sessions: int
    analysed: int


@dataclass
class _Configuration:
    """Groups that resolve to one configuration (the same hash)."""

    config: EffectiveConfig
    config_hash: str
    groups: list[_Group]

    @property
    def analysed(self) -> int:
        return sum(group.analysed for group in self.groups)


@dataclass(frozen=True)
class _Priced:
    """One configuration's estimate."""

    model: str
    sessions: int
    tokens: Tokens
    usd: float
    basis: Basis
    session: SessionEstimate


@dataclass(frozen=True)
class Estimate:
    """What `preview` answers, and what one session of such a job is expected to cost."""

    matched: int
    mode: Mode
    document: dict[str, Any]
    # The largest per-session estimate of the configurations: what a capped job reserves.
    session: SessionEstimate
    # The mean cost of one analysed session (0 when none is analysed).
    mean_session_usd: float

    def as_json(self) -> dict[str, Any]:
        return {"matched": self.matched, "estimate": self.document}


# --------------------------------------------------------------------------- entry points


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
    """`{"matched": n, "estimate": {...}}`: the sessions `create_job` would take now, and the
    tokens and USD their analysis would take, priced for `mode`."""
    return job_estimate(db, settings, workspace_id, kind, raw, options=options,
                        mode=mode).as_json()


def job_estimate(
    db: Database, settings: Settings, workspace_id: str, kind: str, raw: object, *,
    options: object = None, mode: str | None = None,
) -> Estimate:
    """The estimate of a job with these filters and options; `mode` None is the mode
    `create_job` would pick for the matched count."""
    rows = validate_request(settings, workspace_id, kind, raw)
    job_options = parse_options(options)
    requested = parse_mode(mode)

    def selected(tx: Connection) -> Select[Any]:
        require_workspace(tx, workspace_id)
        return selection(tx, settings, workspace_id, kind, rows, job_options)

    return _estimate(db, settings, workspace_id, kind, selected, requested)


_JOB = text("SELECT workspace_id, kind, options FROM backfill_jobs WHERE id = :id")


def open_items_estimate(db: Database, settings: Settings, job_id: str, mode: Mode) -> Estimate:
    """The estimate of a job's sessions not analysed yet (pending, queued, running)."""
    with db.transaction() as tx:
        job = tx.execute(_JOB, {"id": job_id}).one_or_none()
    if job is None:
        raise NotFound(f"no backfill job {job_id!r}")

    def selected(_: Connection) -> Select[Any]:
        return select(BackfillItem.session_id).where(
            BackfillItem.job_id == job_id, BackfillItem.state.in_(OPEN_ITEM_STATES))

    return _estimate(db, settings, job.workspace_id, job.kind, selected, mode)


# --------------------------------------------------------------------------- the estimate


def _estimate(db: Database, settings: Settings, workspace_id: str, kind: str,
              selected_by: Callable[[Connection], Select[Any]], requested: Mode | None
              ) -> Estimate:
    with db.transaction() as tx:
        selected = selected_by(tx).subquery("selected")
        groups = _estimate_groups(tx, selected)
        configurations = _configurations(tx, settings, workspace_id, kind, groups)
        history = _output_history(tx, [c.config_hash for c in configurations])
        members, takes = _plan(settings, configurations)
        samples = token_counts.sample_sessions(tx, selected, members, takes)
    matched = sum(group.sessions for group in groups)
    mode = resolve_mode(requested, matched, settings.batch_auto_threshold)
    counted = [session for index in sorted(samples) for session in samples[index].counted]
    models, failure = _input_models(settings, configurations, counted)
    chars = [samples.get(i, token_counts.ConfigSample()).chars(c.analysed)
             for i, c in enumerate(configurations)]
    priced = [_price(settings, c, n, m, history.get(c.config_hash), mode)
              for c, n, m in zip(configurations, chars, models, strict=True)]
    return Estimate(matched=matched, mode=mode,
                    document=_document(priced, mode, failure),
                    session=_largest_session(priced), mean_session_usd=_mean_usd(priced))


def _estimate_groups(tx: Connection, selected: Subquery) -> list[_Group]:
    """Sessions per agent and transfer signature (counts only: the transcripts' lengths come
    from the sample, so no transcript is read here)."""
    signature = literal_column(ANY_TRANSFER_SIGNATURE, Text)
    found = tx.execute(
        select(SessionRecord.agent_id, signature.label("signature"),
               func.count().label("sessions"),
               func.count().filter(token_counts.will_run()).label("analysed"))
        .join(selected, selected.c.session_id == SessionRecord.session_id)
        .group_by(SessionRecord.agent_id, signature)
    ).all()
    return [_Group(str(row.agent_id), str(row.signature), int(row.sessions),
                   int(row.analysed)) for row in found]


def _configurations(tx: Connection, settings: Settings, workspace_id: str, kind: str,
                    groups: Sequence[_Group]) -> list[_Configuration]:
    """The configurations the analysed groups resolve to, largest first."""
    transfers = {group.signature: transfers_of(group.signature) for group in groups}
    pairs = [(group.agent_id, group.signature) for group in groups]
    versions = load_agent_versions(tx, workspace_id, agents_involved(pairs, transfers))
    by_hash: dict[str, _Configuration] = {}
    for group in groups:
        config = _resolved(settings, kind, group, transfers[group.signature], versions)
        if config is None or not group.analysed:
            continue
        digest = config_hash(config)
        by_hash.setdefault(digest, _Configuration(config, digest, [])).groups.append(group)
    return sorted(by_hash.values(), key=lambda c: (-c.analysed, c.config_hash))


def _resolved(settings: Settings, kind: str, group: _Group, transfers: list[dict[str, Any]],
              versions: Mapping[str, Sequence[AgentVersionInfo]]) -> EffectiveConfig | None:
    try:
        return resolve_config(kind, group.agent_id, transfers, versions, settings.default_model)
    except AnalysisConfigMissing:
        return None


_HISTORY = text("""
    SELECT h.config_hash, avg(r.output_tokens) AS mean_output
      FROM unnest(CAST(:hashes AS text[])) AS h(config_hash)
      CROSS JOIN LATERAL (SELECT output_tokens FROM analysis_runs AS a
                           WHERE a.config_hash = h.config_hash
                           ORDER BY a.created_at DESC LIMIT :recent) AS r
     GROUP BY h.config_hash
""")


def _output_history(tx: Connection, hashes: list[str]) -> dict[str, float]:
    """Mean output tokens of each configuration's latest recorded runs (absent: none)."""
    if not hashes:
        return {}
    rows = tx.execute(_HISTORY, {"hashes": hashes, "recent": RECENT_RUNS})
    return {row.config_hash: float(row.mean_output) for row in rows}


def _plan(settings: Settings, configurations: Sequence[_Configuration]
          ) -> tuple[list[Member], list[int]]:
    members = [Member(group.agent_id, group.signature, index, group.analysed)
               for index, c in enumerate(configurations) for group in c.groups]
    candidates = [Candidate(c.config.model, c.analysed) for c in configurations]
    return members, token_counts.plan_samples(candidates, settings.estimate_count_calls)


def _input_models(settings: Settings, configurations: Sequence[_Configuration],
                  sampled: Sequence[token_counts.SampledSession]
                  ) -> tuple[list[InputModel], str | None]:
    """Each configuration's input model, and why the provider's counts are missing (None
    when they are not)."""
    configs = [c.config for c in configurations]
    max_tokens = max(settings.llm_max_tokens, 1)
    if not configs:
        return [], None
    if not sampled:
        return token_counts.complete_models(configs, {}, max_tokens), (
            "no count_tokens calls allowed (BACKFILL_ESTIMATE_COUNT_CALLS)")
    try:
        counter = token_counts.make_counter(settings)
    except EnvironmentProblem as exc:
        return token_counts.complete_models(configs, {}, max_tokens), str(exc)
    try:
        counted = token_counts.count_models(counter, configs, sampled, max_tokens)
    finally:
        counter.close()
    failure = None if counted else counter.failure
    return token_counts.complete_models(configs, counted, max_tokens), failure


# --------------------------------------------------------------------------- pricing


def _tokens(model: InputModel, sessions: int, chars: int, output: float,
            cached: bool) -> Tokens:
    total = model.fixed * sessions + model.per_char * chars
    if not cached:
        return Tokens(input=round(total), output=round(output * sessions))
    # One write per configuration, then reads while the cache stays warm.
    return Tokens(input=round(total - model.prefix * sessions), output=round(output * sessions),
                  cache_write=round(model.prefix),
                  cache_read=round(model.prefix * (sessions - 1)))


def _price(settings: Settings, configuration: _Configuration, chars: int, model: InputModel,
           mean_output: float | None, mode: Mode) -> _Priced:
    """One configuration's estimate: `chars` characters of transcripts over its sessions."""
    config, sessions = configuration.config, configuration.analysed
    output = settings.estimate_output_tokens if mean_output is None else mean_output
    cached = (settings.prompt_caching
              and model.prefix >= min_cacheable_tokens(settings, config.model))
    tokens = _tokens(model, sessions, chars, output, cached)
    usd = cost_usd(settings, config.model, tokens, mode)
    # Per session: everything but the transcript, then the transcript per character.
    fixed_usd = cost_usd(settings, config.model, _tokens(model, sessions, 0, output, cached),
                         mode) / sessions
    per_mtok = cost_usd(settings, config.model, Tokens(input=PER_MTOK), mode)
    session = SessionEstimate(Decimal(str(fixed_usd)),
                              Decimal(str(per_mtok * model.per_char / PER_MTOK)))
    basis: Basis = ("default" if not model.counted
                    else "history" if mean_output is not None else "counted")
    return _Priced(config.model, sessions, tokens, usd, basis, session)


def _weakest(bases: Sequence[Basis]) -> Basis:
    return min(bases, key=BASES.index, default="counted")


def _largest_session(priced: Sequence[_Priced]) -> SessionEstimate:
    """The largest per-session figures of any configuration: a session's configuration is
    known only when the worker resolves it, so its reservation must cover any of them."""
    return SessionEstimate(max((p.session.base_usd for p in priced), default=Decimal(0)),
                           max((p.session.usd_per_char for p in priced), default=Decimal(0)))


def _mean_usd(priced: Sequence[_Priced]) -> float:
    sessions = sum(p.sessions for p in priced)
    return sum(p.usd for p in priced) / sessions if sessions else 0.0


def _document(priced: Sequence[_Priced], mode: Mode,
              failure: str | None) -> dict[str, Any]:
    per_model: dict[str, list[_Priced]] = {}
    for entry in priced:
        per_model.setdefault(entry.model, []).append(entry)
    breakdown = {model: _model_entry(entries) for model, entries in sorted(per_model.items())}
    total = sum((entry.tokens for entry in priced), Tokens())
    basis = _weakest([entry.basis for entry in priced])
    document: dict[str, Any] = {
        "input_tokens": total.input + total.cache_write + total.cache_read,
        "output_tokens": total.output,
        "usd": round(sum(entry.usd for entry in priced), 6),
        "model_breakdown": breakdown,
        "mode": mode,
        "basis": basis,
    }
    if basis == "default":
        document["basis_reason"] = (f"the provider's token counter was not asked "
                                    f"({failure or 'unavailable'}): characters / 4")
    return document


def _model_entry(entries: Sequence[_Priced]) -> dict[str, Any]:
    tokens = sum((entry.tokens for entry in entries), Tokens())
    return {"sessions": sum(entry.sessions for entry in entries),
            "input_tokens": tokens.input, "cache_write_tokens": tokens.cache_write,
            "cache_read_tokens": tokens.cache_read, "output_tokens": tokens.output,
            "usd": round(sum(entry.usd for entry in entries), 6),
            "basis": _weakest([entry.basis for entry in entries])}
