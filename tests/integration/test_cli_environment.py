"""The environment's failures reach the user as one line naming what is wrong and what to do,
with exit code 3 — never a traceback, SQL text or parameters — and the read verbs start
without the LLM SDK, the web framework or Flower."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from scheduler.dev import processes
from scheduler.dev.processes import free_port
from shared.migrate import SCHEMA_HEAD, alembic_config
from shared.settings import Settings

pytestmark = pytest.mark.integration

HEAVY = ("anthropic", "fastapi", "uvicorn", "flower", "starlette")
# Runs a verb in-process and reports, at exit, which heavy packages it imported.
PROBE = """
import atexit, json, sys
heavy = {heavy!r}
atexit.register(lambda: print("IMPORTED " + json.dumps(
    sorted({{m.split('.')[0] for m in sys.modules}} & set(heavy))), file=sys.stderr))
from scheduler.cli import app
app(sys.argv[1:], prog_name="backfill")
"""


def backfill(env: dict[str, str], *args: str,
             timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(processes.backfill_command(*args), env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout_s)


def assert_one_clean_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 3, and stderr is one `error:` line holding the needles, with no trace of SQL."""
    assert result.returncode == 3, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], result.stderr
    for leak in ("Traceback", "SELECT", "sqlalchemy", "psycopg", "[SQL"):
        assert leak not in result.stderr, result.stderr


@pytest.fixture()
def empty_database(database_url: str) -> Iterator[str]:
    """A database of its own, with no schema at all."""
    server = make_url(database_url)
    name = f"backfill_empty_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture()
def old_schema(empty_database: str) -> str:
    """A database one migration behind head."""
    from alembic import command

    command.upgrade(alembic_config(empty_database), "0001")
    return empty_database


def env_for(settings: Settings, database_url: str | None = None, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url or settings.require_database_url(),
            "BROKER_URL": settings.require_broker_url(), "BACKFILL_QUEUE": settings.queue_name,
            **extra}


def test_a_database_without_the_schema_says_run_db_upgrade(settings: Settings,
                                                           empty_database: str) -> None:
    env = env_for(settings, empty_database)
    for verb in (["list", "--json"], ["show", "bf_nope"], ["session", "call_1", "--json"]):
        assert_one_clean_line(backfill(env, *verb), "no backfill schema", "backfill db upgrade")


def test_an_unreachable_postgres_names_where_and_why(settings: Settings) -> None:
    port = free_port()
    env = env_for(settings, f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
                  BACKFILL_DB_CONNECT_TIMEOUT_S="2")
    for verb in (["list", "--json"], ["show", "bf_x", "--json"], ["failed", "bf_x"]):
        assert_one_clean_line(backfill(env, *verb),
                              f"cannot connect to Postgres at 127.0.0.1:{port}",
                              "connection refused")


@pytest.mark.parametrize("component", ["worker", "scheduler", "api"])
def test_components_refuse_a_schema_behind_head(settings: Settings, old_schema: str,
                                                component: str) -> None:
    result = backfill(env_for(settings, old_schema), component, timeout_s=60)
    assert_one_clean_line(result, "revision 0001", SCHEMA_HEAD, "backfill db upgrade")


def test_the_celery_entry_point_refuses_a_schema_behind_head(settings: Settings,
                                                             old_schema: str) -> None:
    """`celery -A worker.app worker`, not only `backfill worker`, stops on an old schema."""
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "threads",
            "--concurrency", "1", "--queues", settings.queue_name, "--without-gossip",
            "--without-mingle"]
    result = subprocess.run(argv, env={**os.environ, **env_for(settings, old_schema)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "error: the database schema is at revision 0001" in result.stderr


@pytest.mark.parametrize("component", ["worker", "scheduler"])
def test_components_refuse_an_unreachable_broker(settings: Settings, component: str) -> None:
    port = free_port()
    result = backfill(env_for(settings, BROKER_URL=f"redis://127.0.0.1:{port}/0"), component,
                      timeout_s=60)
    assert_one_clean_line(result, f"cannot connect to the broker at 127.0.0.1:{port}")


def test_a_statement_timeout_is_one_line(settings: Settings, database_url: str) -> None:
    """A lock held elsewhere makes the listing wait past its statement timeout."""
    engine = create_engine(database_url, poolclass=NullPool)
    locked, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with engine.begin() as connection:
            connection.execute(text("LOCK TABLE backfill_jobs IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert locked.wait(10)
        result = backfill(env_for(settings, BACKFILL_DB_STATEMENT_TIMEOUT_MS="300"),
                          "list", "--json")
    finally:
        release.set()
        holder.join()
        engine.dispose()
    assert_one_clean_line(result, "ran past its timeout", "BACKFILL_DB_STATEMENT_TIMEOUT_MS")


def imported_heavy(result: subprocess.CompletedProcess[str]) -> list[Any]:
    marker = [line for line in result.stderr.splitlines() if line.startswith("IMPORTED ")]
    assert marker, result.stderr
    return list(json.loads(marker[-1].removeprefix("IMPORTED ")))


@pytest.mark.parametrize("verb", [
    ["--help"], ["list", "--json"], ["show", "bf_missing", "--json"],
    ["session", "call_missing", "--json"], ["failed", "bf_missing"],
    ["preview", "--workspace", "ws_missing", "--kind", "call", "--filters", "[]", "--json"],
    ["report", "bf_missing", "--json"],
])
def test_read_verbs_import_neither_the_sdk_nor_the_web_stack(settings: Settings,
                                                             verb: list[str]) -> None:
    probe = PROBE.format(heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", probe, *verb],
                            env={**os.environ, **env_for(settings)}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode in (0, 1, 2), result.stderr  # missing objects are fine here
    assert imported_heavy(result) == []
