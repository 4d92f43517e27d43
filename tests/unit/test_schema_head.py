"""The start-up schema check compares the database with `SCHEMA_HEAD`: it must name the newest
migration, or a new migration would let old workers run on it (or refuse new ones)."""

from __future__ import annotations

from shared.migrate import SCHEMA_HEAD, alembic_head


def test_schema_head_is_the_newest_migration() -> None:
    assert alembic_head() == SCHEMA_HEAD
