"""Importing into a real Postgres: counts, idempotent re-import, all-or-nothing, volume."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from scheduler.dev.demo_data import generate_demo_dataset, write_jsonl
from scheduler.jobs.importer import ImportSummary, import_batch, parse_import_file
from shared.db import Database
from shared.errors import InvalidImport
from shared.models import Base

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "shared" / "examples" / "sessions.jsonl"
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TABLES = ("workspaces", "agent_versions", "sessions")
ORDER = {"workspaces": "id", "agent_versions": "workspace_id, agent_id, version",
         "sessions": "session_id"}


def _admin_engine() -> Engine:
    url = make_url(os.environ.get("DATABASE_URL") or DEFAULT_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


@pytest.fixture(scope="module")
def db() -> Iterator[Database]:
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"Postgres is not reachable: {exc.orig}")
    name = f"test_importer_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(admin.url.set(database=name))
    try:
        Base.metadata.create_all(engine)
        yield Database(engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture()
def empty_db(db: Database) -> Database:
    with db.transaction() as session:
        session.execute(text("TRUNCATE sessions, agent_versions, workspaces CASCADE"))
    return db


def _dump(db: Database) -> dict[str, list[Any]]:
    """Every column of every row, timestamps included."""
    with db.engine.connect() as conn:
        return {table: [tuple(row) for row in conn.execute(
                    text(f"SELECT * FROM {table} ORDER BY {ORDER[table]}"))]
                for table in TABLES}


def _counts(db: Database) -> dict[str, int]:
    return {table: len(rows) for table, rows in _dump(db).items()}


def _example() -> Path:
    if not EXAMPLE.exists():
        pytest.skip(f"{EXAMPLE} is not present")
    return EXAMPLE


def test_import_example_counts(empty_db: Database) -> None:
    summary = import_batch(empty_db, parse_import_file(_example()))
    assert summary.as_dict() == {
        "workspaces": {"inserted": 2, "updated": 0, "unchanged": 0},
        "agent_versions": {"inserted": 6, "updated": 0, "unchanged": 0},
        "calls": {"inserted": 5, "updated": 0, "unchanged": 0},
        "chats": {"inserted": 1, "updated": 0, "unchanged": 0},
    }
    assert _counts(empty_db) == {"workspaces": 2, "agent_versions": 6, "sessions": 6}
    with empty_db.engine.connect() as conn:
        ids = conn.execute(text(
            "SELECT transfer_agent_ids FROM sessions WHERE session_id = 'call_002'")).scalar()
    assert ids == ["agent_billing"]


def test_reimport_changes_nothing(empty_db: Database) -> None:
    batch = parse_import_file(_example())
    import_batch(empty_db, batch)
    before = _dump(empty_db)
    summary = import_batch(empty_db, parse_import_file(_example()))
    assert not summary.changed
    assert summary.calls.unchanged == 5 and summary.chats.unchanged == 1
    assert summary.agent_versions.unchanged == 6 and summary.workspaces.unchanged == 2
    assert _dump(empty_db) == before


def test_reimport_updates_only_changed_rows_and_keeps_backfilled_analysis(
        empty_db: Database, tmp_path: Path) -> None:
    import_batch(empty_db, parse_import_file(_example()))
    with empty_db.transaction() as session:  # as if a backfill had re-analysed call_001
        session.execute(text(
            "UPDATE sessions SET summary = 'backfilled', analysis_run_id = 7, "
            "analysis_started_at = now() WHERE session_id = 'call_001'"))
    lines = [json.loads(line) for line in _example().read_text("utf-8").splitlines() if line]
    for obj in lines:
        if obj.get("call_id") in ("call_001", "call_002"):
            obj["metadata"] = {"campaign": "changed"}
            obj["call_analysis"]["call_summary"] = "new export summary"
    path = tmp_path / "changed.jsonl"
    write_jsonl(lines, path)
    summary = import_batch(empty_db, parse_import_file(path))
    assert (summary.calls.updated, summary.calls.unchanged) == (2, 3)
    with empty_db.engine.connect() as conn:
        rows: dict[str, str] = dict(conn.execute(text(
            "SELECT session_id, (summary, metadata->>'campaign', analysis_run_id)::text "
            "FROM sessions WHERE session_id IN ('call_001', 'call_002')")).all())
    assert rows == {"call_001": "(backfilled,changed,7)",
                    "call_002": '("new export summary",changed,)'}


def test_session_cannot_move_to_another_workspace(empty_db: Database, tmp_path: Path) -> None:
    import_batch(empty_db, parse_import_file(_example()))
    before = _dump(empty_db)
    moved = {"object": "chat", "chat_id": "call_001", "workspace_id": "ws_evil",
             "agent_id": "a", "chat_status": "ended", "start_timestamp": 1}
    path = tmp_path / "moved.jsonl"
    write_jsonl([moved], path)
    with pytest.raises(InvalidImport) as caught:
        import_batch(empty_db, parse_import_file(path))
    assert caught.value.problems == [
        (1, "chat_id 'call_001' already exists as a call of workspace 'ws_acme'")]
    assert _dump(empty_db) == before


def test_bad_file_imports_nothing(empty_db: Database, tmp_path: Path) -> None:
    good = _example().read_text("utf-8").splitlines()
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*good, '{"object": "call", "call_id": "late"}']) + "\n", "utf-8")
    with pytest.raises(InvalidImport) as caught:
        import_batch(empty_db, parse_import_file(path))
    assert {number for number, _ in caught.value.problems} == {len(good) + 1}
    assert _counts(empty_db) == {"workspaces": 0, "agent_versions": 0, "sessions": 0}


def test_large_demo_import(empty_db: Database, tmp_path: Path) -> None:
    path = tmp_path / "demo.jsonl"
    write_jsonl(generate_demo_dataset(seed=11, sessions=20_000), path)
    started = time.perf_counter()
    batch = parse_import_file(path)
    parsed = time.perf_counter()
    summary: ImportSummary = import_batch(empty_db, batch)
    finished = time.perf_counter()
    print(f"\n20k sessions: parse {parsed - started:.2f}s, import {finished - parsed:.2f}s")
    assert summary.calls.inserted + summary.chats.inserted == 20_000
    assert summary.agent_versions.inserted == 18
    assert _counts(empty_db) == {"workspaces": 2, "agent_versions": 18, "sessions": 20_000}
    again = import_batch(empty_db, batch)
    print(f"20k sessions re-import (unchanged): {time.perf_counter() - finished:.2f}s")
    assert not again.changed and again.calls.unchanged + again.chats.unchanged == 20_000
