"""What a job would cost: `preview`'s estimate of tokens and USD per model.

The sessions are those `create_job` would take now (`selection`); each group of one agent and
transfer signature shares one configuration, resolved as the worker would resolve it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Subquery, Text, func, literal, literal_column, select

from scheduler.jobs.options import parse_options
from scheduler.jobs.planner import require_workspace, validate_request
from scheduler.jobs.selection import (
    ANY_TRANSFER_SIGNATURE,
    agents_involved,
    selection,
    transfers_of,
)
from shared.analysis import AgentVersionInfo, build_request, resolve_config, system_text
from shared.db import Database
from shared.errors import AnalysisConfigMissing
from shared.llm import local_token_estimate
from shared.models import SessionRecord
from shared.pipeline import load_agent_versions
from shared.pricing import Tokens, cost_usd
from shared.settings import Settings
from shared.vocabulary import Mode

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
        require_workspace(tx, workspace_id)
        selected = selection(tx, settings, workspace_id, kind, rows, job_options)
        groups = _estimate_groups(tx, selected.subquery("selected"))
        transfers = {group.signature: transfers_of(group.signature) for group in groups}
        pairs = [(group.agent_id, group.signature) for group in groups]
        versions = load_agent_versions(tx, workspace_id, agents_involved(pairs, transfers))
    per_model: dict[str, _ModelEstimate] = {}
    for group in groups:
        _add_group(settings, kind, group, transfers[group.signature], versions, per_model)
    return {"matched": sum(group.sessions for group in groups),
            "estimate": _estimate_document(settings, per_model, mode)}


def _estimate_groups(tx: Connection, selected: Subquery) -> list[_Group]:
    signature = literal_column(ANY_TRANSFER_SIGNATURE, Text)
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
    # The static prefix the provider caches: the structured-output schema (which repeats
    # every field's description) and the system text; every block of the request is billed.
    schema = json.dumps(request["output_config"]["format"]["schema"])
    prefix = local_token_estimate(len(schema) + len(system_text(config)))
    static = local_token_estimate(len(json.dumps(request["messages"])))
    transcripts = local_token_estimate(group.transcript_chars)
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
