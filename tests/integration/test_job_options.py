"""Job options against real Postgres: sample_rate, limit, skip_current, preview = create.

Each test works in a workspace of its own. A scheduler from other tests may run in the same
pytest session and dispatch any `running` job, so the jobs created here are cancelled at
once and their sessions have no transcript (a dispatched item is only skipped).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from typing import Any

import pytest
from sqlalchemy import text

from scheduler.dev import processes
from scheduler.jobs import planner
from scheduler.jobs.options import parse_options
from shared.analysis import AgentVersionInfo, config_hash, resolve_config
from shared.db import Database
from shared.errors import InvalidInput
from shared.settings import Settings

pytestmark = pytest.mark.integration

T0 = 1_760_000_000_000  # epoch ms
FRONT_FIELDS = [{"type": "boolean", "name": "booked", "description": "Was a visit booked?"}]
BILLING_FIELDS = [{"type": "number", "name": "amount", "description": "Disputed amount."}]


def new_workspace(db: Database, prefix: str) -> str:
    workspace = f"ws_{prefix}_{secrets.token_hex(4)}"
    with db.transaction() as tx:
        tx.execute(text("INSERT INTO workspaces (id) VALUES (:ws)"), {"ws": workspace})
    return workspace


def add_calls(db: Database, workspace: str, count: int, *, status: str = "ended") -> None:
    """`count` calls `<ws>_<n>`, one second apart, newest last; no transcript."""
    with db.transaction() as tx:
        tx.execute(text("""
            INSERT INTO sessions (session_id, kind, workspace_id, agent_id, agent_version,
                                  status, start_timestamp)
            SELECT :ws || '_' || g, 'call', :ws, 'agent_front', 0, :status, :t0 + g * 1000
              FROM generate_series(1, :n) AS g
        """), {"ws": workspace, "n": count, "status": status, "t0": T0})


def add_call(db: Database, workspace: str, session_id: str, *, agent: str = "agent_front",
             start: int | None = T0, transfers: list[dict[str, Any]] | None = None) -> None:
    with db.transaction() as tx:
        tx.execute(text("""
            INSERT INTO sessions (session_id, kind, workspace_id, agent_id, agent_version,
                                  status, start_timestamp, agent_transfers, transfer_agent_ids)
            VALUES (:sid, 'call', :ws, :agent, 0, 'ended', :start, CAST(:transfers AS jsonb),
                    CAST(:to_ids AS text[]))
        """), {"sid": session_id, "ws": workspace, "agent": agent, "start": start,
               "transfers": json.dumps(transfers or []),
               "to_ids": [t["to_agent_id"] for t in transfers or []]})


def create_quietly(db: Database, settings: Settings, workspace: str,
                   filters: list[dict[str, Any]], options: object) -> str:
    created = planner.create_job(db, settings, workspace, "call", filters, options=options)
    with db.transaction() as tx:
        tx.execute(text("UPDATE backfill_jobs SET state = 'cancelled' WHERE id = :id"),
                   {"id": created.job_id})
    return created.job_id


def job_items(db: Database, job_id: str) -> set[str]:
    with db.transaction() as tx:
        rows = tx.execute(text("SELECT session_id FROM backfill_items WHERE job_id = :id"),
                          {"id": job_id})
        return {row.session_id for row in rows}


def job_row(db: Database, job_id: str) -> Any:
    with db.transaction() as tx:
        return tx.execute(text("SELECT matched, options FROM backfill_jobs WHERE id = :id"),
                          {"id": job_id}).one()


def count(db: Database, settings: Settings, workspace: str, options: object,
          filters: list[dict[str, Any]] | None = None) -> int:
    return planner.preview(db, settings, workspace, "call", filters or [], options=options)


# --------------------------------------------------------------------------- sample_rate


def test_sample_rate_is_about_rate_times_n_and_stable(db: Database, settings: Settings) -> None:
    workspace = new_workspace(db, "sample")
    add_calls(db, workspace, 10_000)
    first = count(db, settings, workspace, {"sample_rate": 0.3})
    assert 2_700 <= first <= 3_300
    assert count(db, settings, workspace, {"sample_rate": 0.3}) == first
    # Same hash, smaller threshold: a smaller sample is contained in a larger one.
    assert count(db, settings, workspace, {"sample_rate": 0.1}) < first
    assert count(db, settings, workspace, {"sample_rate": 1}) == 10_000


def test_sample_rate_picks_the_same_sessions_twice(db: Database, settings: Settings) -> None:
    # A fixed workspace, hence fixed session ids: the sample depends on the ids alone, and over
    # random ids the size of a 30% sample of 2,000 spreads wider than 500-700 now and then.
    workspace = "ws_sample_same"
    with db.transaction() as tx:
        tx.execute(text("INSERT INTO workspaces (id) VALUES (:ws)"), {"ws": workspace})
    add_calls(db, workspace, 2_000)
    first = create_quietly(db, settings, workspace, [], {"sample_rate": 0.3})
    second = create_quietly(db, settings, workspace, [], {"sample_rate": 0.3})
    picked = job_items(db, first)
    assert picked == job_items(db, second)
    assert 500 <= len(picked) <= 700
    assert job_row(db, first).matched == len(picked)
    smaller = create_quietly(db, settings, workspace, [], {"sample_rate": 0.1})
    assert job_items(db, smaller) < picked


# --------------------------------------------------------------------------- limit


def test_limit_picks_the_newest_sessions(db: Database, settings: Settings) -> None:
    workspace = new_workspace(db, "limit")
    add_calls(db, workspace, 50)
    add_call(db, workspace, f"{workspace}_undated", start=None)  # never before a dated one
    job_id = create_quietly(db, settings, workspace, [], {"limit": 5})
    assert job_items(db, job_id) == {f"{workspace}_{n}" for n in range(46, 51)}
    assert job_row(db, job_id).matched == 5


def test_limit_ties_break_on_session_id_and_apply_after_filters(
    db: Database, settings: Settings
) -> None:
    workspace = new_workspace(db, "limit_ties")
    for name in ("c", "a", "b"):
        add_call(db, workspace, f"{workspace}_{name}", start=T0 + 5)
    add_call(db, workspace, f"{workspace}_old", start=T0)
    job_id = create_quietly(db, settings, workspace, [], {"limit": 2})
    assert job_items(db, job_id) == {f"{workspace}_a", f"{workspace}_b"}
    before_newest = [{"field": "start_timestamp", "op": "lt", "value": T0 + 5}]
    assert count(db, settings, workspace, {"limit": 2}, before_newest) == 1


def test_limit_above_the_match_count_takes_all(db: Database, settings: Settings) -> None:
    workspace = new_workspace(db, "limit_all")
    add_calls(db, workspace, 7)
    assert count(db, settings, workspace, {"limit": 1_000}) == 7


# --------------------------------------------------------------------------- skip_current


def add_agent(db: Database, workspace: str, agent: str, model: str,
              fields: list[dict[str, Any]]) -> AgentVersionInfo:
    with db.transaction() as tx:
        tx.execute(text("""
            INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, kind,
                                        analysis_model, analysis_data)
            VALUES (:ws, :agent, 0, false, 'voice', :model, CAST(:fields AS jsonb))
        """), {"ws": workspace, "agent": agent, "model": model, "fields": json.dumps(fields)})
    return AgentVersionInfo(agent_id=agent, version=0, is_published=False, kind="voice",
                            model=model, fields=fields)


def set_current_run(db: Database, workspace: str, session_id: str, run_hash: str) -> None:
    """Simulate a finished analysis: an analysis_runs row the session points at."""
    with db.transaction() as tx:
        run_id = tx.execute(text("""
            INSERT INTO analysis_runs (session_id, workspace_id, agent_id, agent_version,
                                       used_draft, model, config_hash, result, started_at)
            VALUES (:sid, :ws, 'agent_front', 0, true, 'claude-haiku-4-5', :hash, '{}', now())
            RETURNING id
        """), {"sid": session_id, "ws": workspace, "hash": run_hash}).scalar_one()
        tx.execute(text("UPDATE sessions SET analysis_run_id = :run WHERE session_id = :sid"),
                   {"run": run_id, "sid": session_id})


@pytest.fixture
def current_workspace(db: Database, settings: Settings) -> tuple[str, dict[str, str]]:
    """Sessions whose current analysis came from the current config, another one, or none."""
    workspace = new_workspace(db, "skip")
    versions = {
        "agent_front": [add_agent(db, workspace, "agent_front", "claude-haiku-4-5",
                                  FRONT_FIELDS)],
        "agent_billing": [add_agent(db, workspace, "agent_billing", "claude-sonnet-4-5",
                                    BILLING_FIELDS)],
    }

    def current_hash(transfers: list[dict[str, Any]]) -> str:
        cfg = resolve_config("call", "agent_front", transfers, versions, settings.default_model)
        return config_hash(cfg)

    transfer = [{"from_agent_id": "agent_front", "to_agent_id": "agent_billing",
                 "post_call_analysis_setting": "both_agents", "at_ms": 41_000}]
    later_transfer = [{**transfer[0], "at_ms": 99_000}]  # same signature, another time
    plain_hash, transfer_hash = current_hash([]), current_hash(transfer)
    assert plain_hash != transfer_hash
    sessions = {
        "same": ([], plain_hash, T0 + 1),
        "other_hash": ([], "0" * 64, T0 + 2),
        "never_analysed": ([], None, T0 + 3),
        "transfer_same": (transfer, transfer_hash, T0 + 4),
        "transfer_same_later": (later_transfer, transfer_hash, T0 + 5),
        # Its current analysis used the plain config; now the transfer's config applies.
        "transfer_plain_hash": (transfer, plain_hash, T0 + 6),
    }
    ids = {}
    for name, (transfers, run_hash, start) in sessions.items():
        ids[name] = f"{workspace}_{name}"
        add_call(db, workspace, ids[name], start=start, transfers=transfers)
        if run_hash is not None:
            set_current_run(db, workspace, ids[name], run_hash)
    return workspace, ids


def test_skip_current_leaves_out_sessions_analysed_with_the_current_config(
    db: Database, settings: Settings, current_workspace: tuple[str, dict[str, str]]
) -> None:
    workspace, ids = current_workspace
    kept = {ids["other_hash"], ids["never_analysed"], ids["transfer_plain_hash"]}
    assert count(db, settings, workspace, {"skip_current": True}) == len(kept)
    assert count(db, settings, workspace, {"skip_current": False}) == len(ids)
    job_id = create_quietly(db, settings, workspace, [], {"skip_current": True})
    assert job_items(db, job_id) == kept
    row = job_row(db, job_id)
    assert row.matched == len(kept)
    assert row.options == {"sample_rate": 1.0, "limit": None, "skip_current": True}


def test_skip_current_applies_after_limit(
    db: Database, settings: Settings, current_workspace: tuple[str, dict[str, str]]
) -> None:
    # The newest three are transfer_plain_hash (kept), transfer_same_later and transfer_same.
    workspace, ids = current_workspace
    job_id = create_quietly(db, settings, workspace, [], {"limit": 3, "skip_current": True})
    assert job_items(db, job_id) == {ids["transfer_plain_hash"]}


def test_skip_current_follows_the_latest_draft(
    db: Database, settings: Settings, current_workspace: tuple[str, dict[str, str]]
) -> None:
    workspace, ids = current_workspace
    with db.transaction() as tx:  # a new draft: nothing is current any more
        tx.execute(text("""
            INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, kind,
                                        analysis_model, analysis_data)
            VALUES (:ws, 'agent_front', 1, false, 'voice', 'claude-haiku-4-5', '[]')
        """), {"ws": workspace})
    # The draft changes the plain configuration and the both_agents merge (it holds the
    # front desk's fields), so every session is kept.
    assert count(db, settings, workspace, {"skip_current": True}) == len(ids)


def test_skip_current_keeps_sessions_whose_config_cannot_be_resolved(
    db: Database, settings: Settings
) -> None:
    workspace = new_workspace(db, "skip_missing")
    add_call(db, workspace, f"{workspace}_orphan", agent="agent_gone")
    set_current_run(db, workspace, f"{workspace}_orphan", "f" * 64)
    assert count(db, settings, workspace, {"skip_current": True}) == 1


# --------------------------------------------------------------------------- preview = create


@pytest.mark.parametrize("options", [
    {}, {"sample_rate": 0.5}, {"limit": 123}, {"sample_rate": 0.4, "limit": 200},
    {"sample_rate": 0.7, "limit": 50, "skip_current": True},
])
def test_preview_equals_the_jobs_matched_count(
    db: Database, settings: Settings, options: dict[str, Any]
) -> None:
    workspace = new_workspace(db, "preview")
    add_calls(db, workspace, 600)
    add_calls(db, new_workspace(db, "preview_other"), 50)  # another workspace never counts
    filters = [{"field": "start_timestamp", "op": "ge", "value": T0 + 100_000}]
    expected = count(db, settings, workspace, options, filters)
    job_id = create_quietly(db, settings, workspace, filters, options)
    assert job_row(db, job_id).matched == expected == len(job_items(db, job_id))
    assert job_row(db, job_id).options == parse_options(options).as_json()


def test_bad_options_create_nothing(db: Database, settings: Settings) -> None:
    workspace = new_workspace(db, "bad")
    add_calls(db, workspace, 3)
    with pytest.raises(InvalidInput, match=r"^options\.limit: "):
        planner.create_job(db, settings, workspace, "call", [], options={"limit": 0})
    with db.transaction() as tx:
        jobs = tx.execute(text("SELECT count(*) FROM backfill_jobs WHERE workspace_id = :ws"),
                          {"ws": workspace}).scalar_one()
    assert jobs == 0


# --------------------------------------------------------------------------- CLI


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": settings.require_database_url()}
    return subprocess.run(processes.backfill_command(*args), env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_preview_with_options_prints_the_count(db: Database, settings: Settings) -> None:
    workspace = new_workspace(db, "cli")
    add_calls(db, workspace, 20)
    result = cli(settings, "preview", "--workspace", workspace, "--kind", "call",
                 "--filters", "[]", "--limit", "4", "--sample-rate", "1", "--skip-current",
                 "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["matched"] == 4  # with the cost estimate beside it


@pytest.mark.parametrize(("args", "message"), [
    (("--sample-rate", "0"), "error: options.sample_rate: must be a number with 0 < r ≤ 1"),
    (("--sample-rate", "1.5"), "error: options.sample_rate: must be a number with 0 < r ≤ 1"),
    (("--limit", "0"), "error: options.limit: must be an integer with 1 ≤ n ≤ 10,000,000"),
])
def test_cli_refuses_bad_options_with_exit_2(
    db: Database, settings: Settings, args: tuple[str, ...], message: str
) -> None:
    workspace = new_workspace(db, "cli_bad")
    for verb in ("preview", "create"):
        result = cli(settings, verb, "--workspace", workspace, "--kind", "call",
                     "--filters", "[]", *args)
        assert result.returncode == 2, (verb, result.stdout, result.stderr)
        assert message in result.stderr
    with db.transaction() as tx:
        jobs = tx.execute(text("SELECT count(*) FROM backfill_jobs WHERE workspace_id = :ws"),
                          {"ws": workspace}).scalar_one()
    assert jobs == 0
