"""Which sessions a job takes: one SELECT built in five steps, in this order:

1. the filter rows (`scheduler.jobs.filters.matching_sessions`: workspace and kind always
   enforced);
2. `sample_rate`: a deterministic sample by session id;
3. `limit`: the newest N of what is left;
4. `skip_current`: leave out sessions whose current analysis already came from the
   configuration the worker would use now;
5. `trial_size`: a trial takes N of those, the first N in the order of the sample's hash —
   itself a deterministic sample by session id, so promoting the trial (the same job without
   step 5) takes every session the trial analysed.

`limit` comes before `skip_current` on purpose: running the same job again with
`skip_current` selects the same newest N and leaves out the ones already done, which is what
"resume a half-done effort" means. Applied the other way round, a resume would reach past
the original N into older sessions.

`preview` counts exactly the query `create_job` inserts from, so the two always agree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Select,
    Subquery,
    Text,
    bindparam,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute

from scheduler.jobs.filters import FilterRow, matching_sessions
from scheduler.jobs.options import JobOptions
from shared.analysis import AgentVersionInfo, config_hash, resolve_config
from shared.errors import AnalysisConfigMissing
from shared.models import AnalysisRun, SessionRecord
from shared.pipeline import load_agent_versions
from shared.settings import Settings

# hashtextextended() returns a signed 64-bit hash; masking the sign bit leaves 63 uniform bits.
_HASH_MASK = 2**63 - 1
_HASH_SPACE = 2**63


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
    if options.skip_current:
        groups = _current_config_hashes(tx, settings, workspace_id, kind, candidates)
        query = _without_current(query, candidates, groups) if groups else query
    if options.trial_size is not None:
        query = _trial_sample(query, options.trial_size)
    return query


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
    return session_bucket() < literal(hash_threshold(rate), BigInteger)


def session_bucket(
    session_id: ColumnElement[str] | InstrumentedAttribute[str] = SessionRecord.session_id,
) -> ColumnElement[int]:
    """The session id's place in the hash space [0, 2^63): what `sample_rate` compares, what
    a trial's sample is ordered by, and what estimates sample by."""
    return func.hashtextextended(session_id, literal(0, BigInteger)).op("&")(
        literal(_HASH_MASK, BigInteger)
    )


def hash_threshold(share: float) -> int:
    """The bucket below which `share` of the hash space lies."""
    return math.ceil(Fraction(share) * _HASH_SPACE)


def _trial_sample(query: Select[Any], size: int) -> Select[Any]:
    """Step 5: the `size` sessions of `query` lowest in the sample's hash order (the session
    id breaks a tie), so a trial picks the same sessions whenever it is made, a smaller trial
    picks a subset of a larger one, and with a sample rate it stays inside the sample."""
    taken = query.subquery("job_sessions")
    return (select(taken.c.session_id)
            .order_by(session_bucket(taken.c.session_id), taken.c.session_id).limit(size))


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
ANY_TRANSFER_SIGNATURE = """CASE
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
    transfers = {signature: transfers_of(signature) for _, signature in groups}
    versions = load_agent_versions(tx, workspace_id, agents_involved(groups, transfers))
    resolved = (
        (agent_id, signature,
         _config_hash(kind, agent_id, transfers[signature], versions, settings.default_model))
        for agent_id, signature in groups
    )
    return [_ConfigGroup(a, s, h) for a, s, h in resolved if h is not None]


def transfers_of(signature: str) -> list[dict[str, Any]]:
    """The signature back in the shape `resolve_config` reads (missing keys come back null)."""
    return [
        {"to_agent_id": destination, "post_call_analysis_setting": setting}
        for destination, setting in json.loads(signature)
    ]


def agents_involved(
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
