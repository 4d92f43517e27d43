"""Input tokens as the provider counts them, for estimates: a model of each configuration's
request, fitted on the provider's own counter (`count_tokens`) over a sample of its sessions.

A request of one configuration costs `fixed` tokens with an empty transcript (instructions,
field definitions, the output schema, framing: the same for every session), of which `prefix`
is the cacheable prefix, plus `per_char` tokens per character of the session's stored
transcript. The provider is asked, within `BACKFILL_ESTIMATE_COUNT_CALLS` calls and
`BACKFILL_ESTIMATE_TIMEOUT_S`, however many sessions match:

- per model, once: a request with neither system text nor schema (what is not the prefix);
- per configuration counted: its empty request (`fixed`; `prefix` = `fixed` minus the above),
  and a sample of its sessions, chosen by the session-id hash `sample_rate` uses (so the same
  preview asks about the same sessions), each count less `fixed` over its characters.

The largest configurations are counted first, and extra samples go where one call covers
the most sessions. A configuration left without calls is the local estimate (characters / 4)
scaled by what the counted ones showed; when the provider cannot be asked at all, every
configuration is the local estimate (`counted` is then False).

The same hash order gives each configuration's transcript characters: the lengths of its first
LENGTH_SAMPLE sessions (all of them when it has fewer), so a preview reads a bounded number of
transcripts however many sessions match.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    Subquery,
    Text,
    and_,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY

from scheduler.jobs.selection import ANY_TRANSFER_SIGNATURE, hash_threshold, session_bucket
from shared.analysis import EffectiveConfig, build_request, output_schema, system_text
from shared.llm import CountUnavailable, api_key, count_tokens, local_token_estimate
from shared.models import SessionRecord
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.ratelimit import RateLimiter

# Transcript lengths read per configuration: the mean of this many stands for all of its
# sessions (reading every transcript would make a preview of a million sessions take minutes).
LENGTH_SAMPLE = 2000
# Oversampling of the hash prefilter: a configuration's sample is drawn from about this many
# times as many sessions as it needs, so the window that ranks them stays small however many
# sessions match (and a sample is short only by a rare, deterministic bad draw).
PREFILTER_FACTOR = 2
COUNT_TOKENS_ENDPOINT = "count_tokens"


@dataclass(frozen=True)
class InputModel:
    """Input tokens of one configuration's request for a session: `fixed` + `per_char` ×
    the characters of the stored transcript; `prefix` of `fixed` is cacheable."""

    fixed: float
    prefix: float
    per_char: float
    counted: bool


def local_model(config: EffectiveConfig, max_tokens: int) -> InputModel:
    """Characters / 4 of each part: the estimate when the provider is not asked."""
    empty = build_request(config, [], max_tokens)
    schema = json.dumps(output_schema(config))
    prefix = local_token_estimate(len(schema) + len(system_text(config)))
    framing = local_token_estimate(len(json.dumps(empty["messages"])))
    return InputModel(fixed=prefix + framing, prefix=prefix,
                      per_char=1 / 4, counted=False)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Candidate:
    """A configuration to estimate: its model and how many sessions it analyses."""

    model: str
    analysed: int


def plan_samples(candidates: Sequence[Candidate], calls: int) -> list[int]:
    """Samples per configuration (0 = not counted) within `calls`: a counted configuration
    costs its empty request and one sample (and its model's base request, once per model);
    the largest are counted first, then each extra call goes where it covers the most
    sessions per sample."""
    samples = [0] * len(candidates)
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].analysed)
    models: set[str] = set()
    for index in order:
        need = 2 + (candidates[index].model not in models)
        if candidates[index].analysed > 0 and calls >= need:
            calls -= need
            samples[index] = 1
            models.add(candidates[index].model)
    while calls > 0:
        open_ = [i for i in order if 0 < samples[i] < candidates[i].analysed]
        if not open_:
            break
        best = max(open_, key=lambda i: candidates[i].analysed / samples[i])
        samples[best] += 1
        calls -= 1
    return samples


# --------------------------------------------------------------------------- the sample


@dataclass(frozen=True)
class Member:
    """Matched sessions of one agent and transfer signature, belonging to configuration
    `config` (an index into the plan)."""

    agent_id: str
    signature: str
    config: int
    analysed: int


@dataclass(frozen=True)
class SampledSession:
    config: int
    chars: int
    transcript: list[dict[str, Any]]


@dataclass
class ConfigSample:
    """What the sample holds of one configuration: the transcript lengths of up to
    LENGTH_SAMPLE of its sessions, and the first of them, with transcripts, to count."""

    lengths: list[int] = field(default_factory=list)
    counted: list[SampledSession] = field(default_factory=list)

    def chars(self, analysed: int) -> int:
        """The configuration's transcript characters: exact when the sample holds every
        session, else the sample's mean for each (the sample is uniform by hash)."""
        if not self.lengths or len(self.lengths) >= analysed:
            return sum(self.lengths)
        return round(sum(self.lengths) / len(self.lengths) * analysed)


def will_run() -> ColumnElement[bool]:
    """Sessions the worker analyses (the others end skipped and cost nothing)."""
    return (func.coalesce(SessionRecord.status, "") != "not_connected") & (
        SessionRecord.transcript != literal("[]").cast(SessionRecord.transcript.type))


def _array(name: str, values: list[Any], kind: Any) -> ColumnElement[Any]:
    return bindparam(name, values, type_=ARRAY(kind))


def _highest_buckets(members: Sequence[Member]) -> list[int]:
    """Per member, the highest bucket its configuration's sample is drawn below: about
    PREFILTER_FACTOR × LENGTH_SAMPLE of the configuration's sessions (inclusive, so the
    whole space fits a bigint)."""
    totals: dict[int, int] = {}
    for member in members:
        totals[member.config] = totals.get(member.config, 0) + member.analysed
    return [hash_threshold(min(1.0, PREFILTER_FACTOR * LENGTH_SAMPLE
                               / max(totals[m.config], 1))) - 1 for m in members]


def sample_sessions(tx: Connection, selected: Subquery, members: Sequence[Member],
                    takes: Sequence[int]) -> dict[int, ConfigSample]:
    """The first sessions of each configuration by session-id hash: their transcript
    lengths (up to LENGTH_SAMPLE), and the first `takes[config]` to count. Reading them is
    bounded however many sessions match: the hash prefilter leaves a few thousand rows per
    configuration to rank, and only those are read in full."""
    if not members:
        return {}
    highest = _highest_buckets(members)
    per_agent: dict[str, int] = {}
    for member, bucket_limit in zip(members, highest, strict=True):
        per_agent[member.agent_id] = max(per_agent.get(member.agent_id, -1), bucket_limit)
    agents = func.unnest(_array("agents", list(per_agent), Text),
                         _array("agent_highest", list(per_agent.values()), BigInteger)
                         ).table_valued("agent_id", "highest").render_derived("agents")
    table = func.unnest(
        _array("member_agents", [m.agent_id for m in members], Text),
        _array("signatures", [m.signature for m in members], Text),
        _array("configs", [m.config for m in members], Integer),
        _array("takes", [takes[m.config] for m in members], Integer),
        _array("highest", highest, BigInteger),
    ).table_valued("agent_id", "signature", "config", "take", "highest").render_derived(
        "members")
    bucket = session_bucket()
    # The cheap per-agent prefilter first, so only its rows get a transfer signature.
    candidates = (
        select(SessionRecord.session_id, SessionRecord.agent_id, SessionRecord.transcript,
               literal_column(ANY_TRANSFER_SIGNATURE, Text).label("signature"),
               bucket.label("bucket"))
        .join(selected, selected.c.session_id == SessionRecord.session_id)
        .join(agents, agents.c.agent_id == SessionRecord.agent_id)
        .where(will_run(), bucket <= agents.c.highest)
    ).subquery("candidates")
    ranked = (
        select(table.c.config, table.c.take, candidates.c.transcript,
               func.length(candidates.c.transcript.cast(Text)).label("chars"),
               func.row_number().over(partition_by=table.c.config,
                                      order_by=(candidates.c.bucket, candidates.c.session_id))
               .label("rank"))
        .join(table, and_(table.c.agent_id == candidates.c.agent_id,
                          table.c.signature == candidates.c.signature))
        .where(candidates.c.bucket <= table.c.highest)
    ).subquery("ranked")
    rows = tx.execute(
        select(ranked.c.config, ranked.c.chars,
               case((ranked.c.rank <= ranked.c.take, ranked.c.transcript)).label("transcript"))
        .where(ranked.c.rank <= LENGTH_SAMPLE))
    samples: dict[int, ConfigSample] = {}
    for row in rows:
        sample = samples.setdefault(int(row.config), ConfigSample())
        sample.lengths.append(int(row.chars))
        if row.transcript is not None:
            sample.counted.append(SampledSession(int(row.config), int(row.chars),
                                                 list(row.transcript)))
    return samples


# --------------------------------------------------------------------------- the counter


@dataclass
class Counter:
    """The provider's token counter within one deadline, through the count_tokens bucket of
    the global rate limiter (when a limit is configured)."""

    settings: Settings
    deadline: float
    limiter: RateLimiter | None = None
    calls: int = field(default=0, init=False)
    # Why the provider's counts are incomplete, when they are.
    failure: str | None = field(default=None, init=False)

    def count(self, request: Mapping[str, Any]) -> int:
        self._wait_for_capacity(str(request["model"]))
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CountUnavailable("the estimate's time ran out")
        self.calls += 1
        return count_tokens(self.settings, request, min(left, self.settings.llm_timeout_s))

    def _wait_for_capacity(self, model: str) -> None:
        if self.limiter is None:
            return
        import redis

        from shared.ratelimit import Cost

        while True:
            try:
                wait_s = self.limiter.try_take(model, Cost(requests=1))
            except redis.RedisError as exc:
                raise CountUnavailable(f"global rate limit unavailable: {type(exc).__name__}"
                                       ) from None
            if wait_s <= 0:
                return
            if time.monotonic() + wait_s > self.deadline:
                raise CountUnavailable("no count_tokens capacity within the estimate's time")
            time.sleep(wait_s)

    def close(self) -> None:
        if self.limiter is not None:
            self.limiter.close()


def make_counter(settings: Settings) -> Counter:
    """A counter for one estimate; the rate limiter only when a count_tokens limit is set
    (Redis, and the broker module, are not loaded otherwise)."""
    deadline = time.monotonic() + settings.estimate_timeout_s
    if not settings.rl_count_tokens_per_min:
        return Counter(settings, deadline)
    import redis

    from shared.broker import redis_client_url
    from shared.ratelimit import Limits, RateLimiter

    limits = Limits(requests=settings.rl_count_tokens_per_min, period_s=settings.rl_period_s,
                    burst_share=settings.rl_burst_share, safety_share=settings.rl_safety_share,
                    share=settings.rl_share)
    connection = redis.Redis.from_url(redis_client_url(settings.require_broker_url()),
                                      socket_timeout=5, socket_connect_timeout=5)
    limiter = RateLimiter(connection, api_key(settings), limits, endpoint=COUNT_TOKENS_ENDPOINT)
    return Counter(settings, deadline, limiter)


# --------------------------------------------------------------------------- fitting


def _without_prefix(request: dict[str, Any]) -> dict[str, Any]:
    """The request with neither system text nor output schema: what is not the prefix."""
    return {key: value for key, value in request.items()
            if key not in ("system", "output_config")}


@dataclass
class _Counts:
    fixed: int
    base: int
    tokens: int = 0  # transcript tokens of the samples (count less fixed)
    chars: int = 0

    def model(self) -> InputModel:
        per_char = self.tokens / self.chars if self.chars > 0 else 1 / 4
        return InputModel(fixed=self.fixed, prefix=max(self.fixed - self.base, 0),
                          per_char=max(per_char, 0.0), counted=True)


def count_models(counter: Counter, configs: Sequence[EffectiveConfig],
                 sampled: Sequence[SampledSession], max_tokens: int) -> dict[int, InputModel]:
    """Input models of the configurations the sample covers (indices ordered largest
    first), from the provider's counts; counting stops at the first call that fails (the
    rest are left to `complete_models`)."""
    by_config: dict[int, list[SampledSession]] = {}
    for session in sampled:
        by_config.setdefault(session.config, []).append(session)
    bases: dict[str, int] = {}
    fitted: dict[int, InputModel] = {}
    # Configurations come largest first: when the time runs out, the small ones go uncounted.
    for index in sorted(by_config):
        config = configs[index]
        empty = build_request(config, [], max_tokens)
        try:
            counts = _Counts(fixed=counter.count(empty), base=bases.get(config.model, -1))
            if counts.base < 0:
                counts.base = bases[config.model] = counter.count(_without_prefix(empty))
            for session in by_config[index]:
                request = build_request(config, session.transcript, max_tokens)
                counts.tokens += counter.count(request) - counts.fixed
                counts.chars += session.chars
        except CountUnavailable as exc:
            counter.failure = str(exc)
            break
        fitted[index] = counts.model()
    return fitted


def complete_models(configs: Sequence[EffectiveConfig], counted: Mapping[int, InputModel],
                    max_tokens: int) -> list[InputModel]:
    """Every configuration's model: counted ones as counted; the others the local estimate,
    scaled by how far the local estimate was from the counts where both exist."""
    local = [local_model(config, max_tokens) for config in configs]
    if not counted:
        return local
    fixed_ratio = (sum(m.fixed for m in counted.values())
                   / max(sum(local[i].fixed for i in counted), 1e-9))
    prefix_ratio = (sum(m.prefix for m in counted.values())
                    / max(sum(local[i].prefix for i in counted), 1e-9))
    per_char = sum(m.per_char for m in counted.values()) / len(counted)
    return [counted.get(i) or InputModel(fixed=model.fixed * fixed_ratio,
                                         prefix=model.prefix * prefix_ratio,
                                         per_char=per_char, counted=True)
            for i, model in enumerate(local)]
