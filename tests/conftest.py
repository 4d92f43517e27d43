"""Shared fixtures. Services are real: Postgres and Redis from DATABASE_URL/BROKER_URL when they
answer, else embedded servers under .run/test. Nothing starts unless a test asks for it."""

from __future__ import annotations

import gc
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from scheduler.dev.embedded import start_embedded_postgres, start_embedded_redis
from shared.broker import broker_reachable, redis_client_url
from shared.db import Database, database_reachable, normalise_database_url
from shared.migrate import upgrade_to_head
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]
RUN_DIR = REPO / ".run" / "test"
EXAMPLES = REPO.parent / "shared" / "examples"


def _server_url() -> str:
    given = os.environ.get("DATABASE_URL")
    if given and database_reachable(given):
        return normalise_database_url(given)
    return start_embedded_postgres(RUN_DIR)


def _broker_url() -> str:
    given = os.environ.get("BROKER_URL")
    if given and broker_reachable(redis_client_url(given)):
        return given
    return start_embedded_redis(RUN_DIR)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this test run, migrated to head, dropped at the end."""
    server = make_url(_server_url())
    name = f"backfill_test_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    upgrade_to_head(url)
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def broker_url() -> str:
    return _broker_url()


@pytest.fixture(scope="session")
def queue_name() -> str:
    """A queue of our own, so parallel runs on one Redis never share messages."""
    return f"backfill_test_{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def settings(database_url: str, broker_url: str, queue_name: str) -> Settings:
    return Settings(database_url=database_url, broker_url=broker_url, queue_name=queue_name,
                    dispatch_interval_s=0.2)


@pytest.fixture(scope="session")
def db(settings: Settings) -> Iterator[Database]:
    database = Database.from_settings(settings, pool_size=5)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    if not (EXAMPLES / "sessions.jsonl").exists():
        pytest.skip(f"team examples not found at {EXAMPLES}")
    return EXAMPLES


@pytest.fixture(scope="module", autouse=True)
def _collect_module_garbage() -> Iterator[None]:
    """A client or socket a module forgot to close is finalised here, so its ResourceWarning
    fails that module instead of whichever later test the garbage collector happens to run in."""
    yield
    gc.collect()
