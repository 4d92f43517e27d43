"""Estimates against the bill: `preview` on generated sessions, then the job, then the
stand-in's own invoice priced by the table, for a short-prefix Haiku configuration (below its
cache minimum: never cached) and a long-prefix Sonnet one (cached).

Before any run of a configuration the estimate counts input with the provider's counter and
takes the default output (basis `counted`, within 25%); once runs exist their output is the
history (basis `history`, within 10%). A run of its own: a scratch database, its own stand-in
(whose invoice then holds only these jobs), scheduler and worker.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from scheduler.jobs import estimates, planner
from shared.pricing import min_cacheable_tokens
from tests.integration.conftest import LOG_DIR
from tests.support import spend
from tests.support.spend import SpendRun

pytestmark = pytest.mark.integration

SESSIONS = 40  # per agent and label: more than the 20 count_tokens calls a preview may make
LABELS = ("first", "second")


@dataclass
class Measured:
    """One configuration's preview and job, twice: before and after its runs existed."""

    previews: dict[str, dict[str, Any]]
    jobs: dict[str, dict[str, Any]]
    billed_usd: dict[str, float]
    count_calls: dict[str, int]
    messages: dict[str, int]


@pytest.fixture(scope="module")
def run(database_url: str, broker_url: str) -> Iterator[SpendRun]:
    with spend.spend_run(database_url, broker_url, LOG_DIR) as spend_run:
        spend_run.start_scheduler()
        spend_run.start_worker("worker-estimates", concurrency=8)
        yield spend_run


@pytest.fixture(scope="module")
def workspace(run: SpendRun) -> str:
    workspace_id = f"ws_estimates_{secrets.token_hex(3)}"
    spend.seed_workspace(run.db, workspace_id, spend.agents(secrets.token_hex(4)), {
        agent.agent_id: dict.fromkeys(LABELS, SESSIONS) for agent in spend.agents("")})
    return workspace_id


def measure(run: SpendRun, workspace_id: str, agent_id: str) -> Measured:
    measured = Measured({}, {}, {}, {}, {})
    for label in LABELS:
        rows = spend.filters(agent_id, label)
        counted, messages = run.stub.count_tokens_requests, run.stub.request_count
        measured.previews[label] = estimates.preview_estimate(
            run.db, run.settings, workspace_id, "call", rows)
        measured.count_calls[label] = run.stub.count_tokens_requests - counted
        measured.messages[label] = run.stub.request_count - messages
        billed_before = len(run.stub.billed)
        created = planner.create_job(run.db, run.settings, workspace_id, "call", rows)
        measured.jobs[label] = run.wait_for(created.job_id, ["completed"], timeout_s=120)
        measured.billed_usd[label] = spend.billed_usd(run.settings,
                                                      run.stub.billed[billed_before:])
    return measured


@pytest.fixture(scope="module")
def haiku(run: SpendRun, workspace: str) -> Measured:
    return measure(run, workspace, "short_haiku")


@pytest.fixture(scope="module")
def sonnet(run: SpendRun, workspace: str) -> Measured:
    return measure(run, workspace, "long_sonnet")


def ratio(measured: Measured, label: str) -> float:
    return float(measured.previews[label]["estimate"]["usd"]) / measured.billed_usd[label]


@pytest.mark.parametrize("configuration", ["haiku", "sonnet"])
def test_before_history_the_estimate_is_within_25_percent(
    configuration: str, request: pytest.FixtureRequest
) -> None:
    measured: Measured = request.getfixturevalue(configuration)
    assert measured.previews["first"]["estimate"]["basis"] == "counted"
    assert 0.75 <= ratio(measured, "first") <= 1.25, ratio(measured, "first")


@pytest.mark.parametrize("configuration", ["haiku", "sonnet"])
def test_with_history_the_estimate_is_within_10_percent(
    configuration: str, request: pytest.FixtureRequest
) -> None:
    measured: Measured = request.getfixturevalue(configuration)
    assert measured.previews["second"]["estimate"]["basis"] == "history"
    assert 0.9 <= ratio(measured, "second") <= 1.1, ratio(measured, "second")


@pytest.mark.parametrize("configuration", ["haiku", "sonnet"])
def test_usage_cost_is_the_stand_ins_bill_priced_by_the_table(
    configuration: str, request: pytest.FixtureRequest
) -> None:
    measured: Measured = request.getfixturevalue(configuration)
    for label in LABELS:
        job = measured.jobs[label]
        assert job["counts"]["succeeded"] == SESSIONS
        assert job["usage"]["cost_usd"] == pytest.approx(measured.billed_usd[label], abs=2e-6)
        # Every billed answer was charged to the job's spend as well.
        assert job["spend"]["spent_usd"] == pytest.approx(measured.billed_usd[label], abs=2e-6)


def test_below_the_cache_minimum_nothing_is_assumed_cached(haiku: Measured,
                                                           run: SpendRun) -> None:
    breakdown = haiku.previews["first"]["estimate"]["model_breakdown"][spend.HAIKU]
    assert breakdown["cache_write_tokens"] == breakdown["cache_read_tokens"] == 0
    usage = haiku.jobs["first"]["usage"]
    assert usage["cache_write_tokens"] == usage["cache_read_tokens"] == 0
    # The prefix was marked for caching; the provider's rule left it uncached.
    per_session = breakdown["input_tokens"] / SESSIONS
    assert per_session < min_cacheable_tokens(run.settings, spend.HAIKU)


def test_above_the_cache_minimum_one_write_then_reads(sonnet: Measured) -> None:
    breakdown = sonnet.previews["first"]["estimate"]["model_breakdown"][spend.SONNET]
    usage = sonnet.jobs["first"]["usage"]
    assert breakdown["cache_write_tokens"] > 0 and breakdown["cache_read_tokens"] > 0
    assert usage["cache_write_tokens"] == breakdown["cache_write_tokens"]
    assert usage["cache_read_tokens"] == pytest.approx(breakdown["cache_read_tokens"], rel=0.02)


@pytest.mark.parametrize("configuration", ["haiku", "sonnet"])
def test_preview_makes_a_bounded_number_of_count_calls_and_no_messages(
    configuration: str, request: pytest.FixtureRequest, run: SpendRun
) -> None:
    measured: Measured = request.getfixturevalue(configuration)
    for label in LABELS:
        assert 3 <= measured.count_calls[label] <= run.settings.estimate_count_calls
        assert measured.messages[label] == 0


def test_an_unreachable_counter_falls_back_to_the_local_estimate_and_says_so(
    run: SpendRun, workspace: str
) -> None:
    from scheduler.dev.processes import free_port

    unreachable = run.settings.model_copy(update={
        "anthropic_base_url": f"http://127.0.0.1:{free_port()}"})
    document = estimates.preview_estimate(run.db, unreachable, workspace, "call",
                                          spend.filters("short_haiku"))
    estimate = document["estimate"]
    assert document["matched"] == 2 * SESSIONS
    assert estimate["basis"] == "default"
    assert "token counter" in estimate["basis_reason"]
    assert estimate["usd"] > 0


def test_no_count_calls_allowed_is_the_local_estimate(run: SpendRun, workspace: str) -> None:
    local_only = run.settings.model_copy(update={"estimate_count_calls": 0})
    counted = run.stub.count_tokens_requests
    document = estimates.preview_estimate(run.db, local_only, workspace, "call",
                                          spend.filters("long_sonnet"))
    assert document["estimate"]["basis"] == "default"
    assert run.stub.count_tokens_requests == counted


def test_a_batch_estimate_is_half_the_live_one(run: SpendRun, workspace: str) -> None:
    rows = spend.filters("long_sonnet", "first")
    live = estimates.preview_estimate(run.db, run.settings, workspace, "call", rows)
    batch = estimates.preview_estimate(run.db, run.settings, workspace, "call", rows,
                                       mode="batch")
    assert batch["estimate"]["usd"] == pytest.approx(live["estimate"]["usd"] / 2, rel=1e-3)


def test_count_tokens_takes_from_its_own_bucket(run: SpendRun, workspace: str,
                                                broker_url: str) -> None:
    """With a count_tokens limit, each call takes from a bucket keyed like the Messages
    buckets with the endpoint as suffix; a limit of 2 calls lets the rest go uncounted."""
    import redis

    from shared.broker import redis_client_url
    from shared.llm import api_key
    from shared.ratelimit import bucket_key

    # A key of its own: the bucket of no other run (the stand-in takes any key).
    limited = run.settings.model_copy(update={
        "anthropic_api_key": f"test-{secrets.token_hex(6)}", "rl_count_tokens_per_min": 2,
        "rl_burst_share": 1.0, "estimate_timeout_s": 2.0})
    counted = run.stub.count_tokens_requests
    document = estimates.preview_estimate(run.db, limited, workspace, "call",
                                          spend.filters("short_haiku"))
    assert run.stub.count_tokens_requests - counted == 2
    assert document["estimate"]["basis"] == "default"  # 2 calls cannot count a configuration
    key = bucket_key(api_key(limited), spend.HAIKU) + ":count_tokens"
    client = redis.Redis.from_url(redis_client_url(broker_url))
    try:
        assert client.exists(key)
    finally:
        client.close()
