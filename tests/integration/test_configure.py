"""The configuration an attempt resolves, read in one statement and cached per process.

`pipeline.load_session` reads the session, its agents' versions and the job's recording facts
in one round trip; `pipeline.configure` builds the configuration once per distinct set of
versions. These tests hold both to the reference path (`load_agent_versions` +
`analysis.resolve_config`, which the scheduler's estimates use), and prove that an edited
draft is seen by the very next session of a process that has already cached the old one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from shared import analysis, pipeline
from shared.db import Database
from shared.settings import Settings
from tests.integration.test_job_options import (
    BILLING_FIELDS,
    FRONT_FIELDS,
    add_agent,
    add_call,
    create_quietly,
    new_workspace,
)

pytestmark = pytest.mark.integration

TRANSFER = [{"from_agent_id": "agent_front", "to_agent_id": "agent_billing",
             "post_call_analysis_setting": "both_agents", "at_ms": 41_000}]


def reference_config(db: Database, settings: Settings, workspace: str,
                     transfers: list[dict[str, Any]]) -> analysis.EffectiveConfig:
    """The configuration as resolved before the one-statement read existed."""
    with db.transaction() as tx:
        versions = pipeline.load_agent_versions(
            tx, workspace, ["agent_front", *[t["to_agent_id"] for t in transfers]])
    return analysis.resolve_config("call", "agent_front", transfers, versions,
                                   settings.default_model)


def configured(db: Database, settings: Settings, job_id: str,
               session_id: str) -> pipeline.Configured:
    with db.transaction() as tx:
        session = pipeline.load_session(tx, job_id, session_id)
    assert session is not None
    return pipeline.configure(settings, session)


@pytest.fixture
def transferred(db: Database, settings: Settings) -> tuple[str, str]:
    """A workspace with a front desk that transfers to billing, one such call, and a job."""
    workspace = new_workspace(db, "configure")
    add_agent(db, workspace, "agent_front", "claude-haiku-4-5", FRONT_FIELDS)
    add_agent(db, workspace, "agent_billing", "claude-sonnet-4-5", BILLING_FIELDS)
    add_call(db, workspace, f"{workspace}_t", transfers=TRANSFER)
    add_call(db, workspace, f"{workspace}_plain")
    return workspace, create_quietly(db, settings, workspace, [], None)


def test_one_statement_read_resolves_what_the_reference_path_resolves(
    db: Database, settings: Settings, transferred: tuple[str, str]
) -> None:
    workspace, job_id = transferred
    with_transfer = configured(db, settings, job_id, f"{workspace}_t")
    plain = configured(db, settings, job_id, f"{workspace}_plain")

    assert with_transfer.config == reference_config(db, settings, workspace, TRANSFER)
    assert plain.config == reference_config(db, settings, workspace, [])
    # Both agents' fields, the billing agent's model: the transfer was followed.
    assert {f.name for f in with_transfer.config.custom_fields} == {"booked", "amount"}
    assert with_transfer.config_hash == analysis.config_hash(with_transfer.config)
    assert with_transfer.config_hash != plain.config_hash


def test_the_same_versions_reuse_one_configuration_and_an_edited_draft_is_seen_at_once(
    db: Database, settings: Settings, transferred: tuple[str, str]
) -> None:
    workspace, job_id = transferred
    first = configured(db, settings, job_id, f"{workspace}_t")
    assert configured(db, settings, job_id, f"{workspace}_t") is first  # built once

    edited = [*BILLING_FIELDS, {"type": "string", "name": "reason", "description": "Why?"}]
    with db.transaction() as tx:
        tx.execute(text("""
            UPDATE agent_versions SET analysis_data = CAST(:fields AS jsonb)
             WHERE workspace_id = :ws AND agent_id = 'agent_billing'
        """), {"ws": workspace, "fields": json.dumps(edited)})

    after = configured(db, settings, job_id, f"{workspace}_t")
    assert after.config_hash != first.config_hash
    assert {f.name for f in after.config.custom_fields} == {"booked", "amount", "reason"}
    assert after.config == reference_config(db, settings, workspace, TRANSFER)


def test_a_request_is_the_configuration_s_static_part_with_this_transcript(
    db: Database, settings: Settings, transferred: tuple[str, str]
) -> None:
    workspace, job_id = transferred
    built = configured(db, settings, job_id, f"{workspace}_t")
    transcript = [{"role": "user", "content": "My invoice shows 42 dollars twice."}]

    request = analysis.with_transcript(built.static_request, transcript)

    assert request == analysis.build_request(built.config, transcript, settings.llm_max_tokens)
    other = analysis.with_transcript(built.static_request, [{"role": "user", "content": "Hi"}])
    assert other["messages"] != request["messages"]
    assert len(built.static_request["messages"][0]["content"]) == 1  # never extended in place


def test_a_session_outside_the_job_s_workspace_reads_as_deleted(
    db: Database, settings: Settings, transferred: tuple[str, str]
) -> None:
    workspace, _ = transferred
    other_workspace = new_workspace(db, "configure_other")
    add_agent(db, other_workspace, "agent_front", "claude-haiku-4-5", FRONT_FIELDS)
    other_job = create_quietly(db, settings, other_workspace, [], None)
    with db.transaction() as tx:
        assert pipeline.load_session(tx, other_job, f"{workspace}_t") is None
