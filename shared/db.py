"""Engine and transactions. One engine per process, created on first use after any fork.

Also the one translation of the database's *environment* failures (unreachable server, missing
schema, statement timeout) into `EnvironmentProblem`s that say what is wrong in one line, so no
caller ever shows a user SQL text, parameters or a traceback for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from shared.errors import (
    DatabaseUnreachable,
    EnvironmentProblem,
    SchemaNotReady,
    StatementTimedOut,
)
from shared.settings import Settings

# SQLSTATEs that mean "this database is not (yet) the one the code expects".
_SCHEMA_STATES = {"42P01": "table", "42703": "column"}  # undefined_table, undefined_column
_QUERY_CANCELED = "57014"  # statement_timeout fired (or an operator cancelled the statement)
_NO_SUCH_DATABASE = "3D000"


def normalise_database_url(url: str) -> str:
    """Accept plain `postgresql://` URLs too; we always speak psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(settings: Settings, *, pool_size: int | None = None) -> Engine:
    """Every statement and connect attempt is bounded: thread pools do not enforce time limits."""
    return create_engine(
        normalise_database_url(settings.require_database_url()),
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        # A statement's parameters (an analysis, a transcript) never reach an exception's text,
        # so no traceback in a log can quote them.
        hide_parameters=True,
        connect_args={
            "connect_timeout": settings.db_connect_timeout_s,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}"
            " -c idle_in_transaction_session_timeout=60000",
            "application_name": "backfill",
        },
    )


class Database:
    """An engine; `transaction()` commits on success, rolls back on error."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int | None = None) -> Database:
        return cls(make_engine(settings, pool_size=pool_size))

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in a transaction: every statement here is SQL we write, so the
        ORM session's unit of work would only add CPU to each one (the worker's hot path)."""
        with self.engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


def database_reachable(url: str, timeout_s: int = 3) -> bool:
    engine = create_engine(
        normalise_database_url(url), connect_args={"connect_timeout": timeout_s},
        poolclass=NullPool,
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "not usable", the caller falls back
        return False
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- environment


def environment_problem(exc: BaseException, database_url: str | None) -> EnvironmentProblem | None:
    """The EnvironmentProblem a database error means, or None when it is not the environment's
    fault (a statement we got wrong: a bug, which keeps its traceback)."""
    driver_error = exc.orig if isinstance(exc, DBAPIError) else exc
    if not isinstance(driver_error, psycopg.Error):
        return None
    state = driver_error.sqlstate
    if state in _SCHEMA_STATES:
        return SchemaNotReady()
    if state == _QUERY_CANCELED:
        return StatementTimedOut(
            "a database statement ran past its timeout (BACKFILL_DB_STATEMENT_TIMEOUT_MS): "
            "Postgres is overloaded or a lock is held; retry, or raise the timeout")
    if state == _NO_SUCH_DATABASE or isinstance(driver_error, psycopg.OperationalError):
        return DatabaseUnreachable(
            f"cannot connect to Postgres at {postgres_location(database_url)}: "
            f"{_connection_failure(driver_error)}")
    return None


def postgres_location(database_url: str | None) -> str:
    """HOST:PORT (or the socket directory) of a URL, never its user or password."""
    if not database_url:
        return "(DATABASE_URL is not set)"
    url = make_url(database_url)
    socket_dir = url.query.get("host")
    if url.host is None and socket_dir:
        return f"socket {socket_dir if isinstance(socket_dir, str) else socket_dir[0]}"
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def _connection_failure(error: psycopg.Error) -> str:
    """The driver's reason, first line only, after its "…failed:" preamble (which repeats the
    address): "connection refused", "timeout expired", `database "x" does not exist`."""
    first_line = (str(error).strip().splitlines() or ["connection failed"])[0]
    reason = first_line.rsplit("failed: ", 1)[-1].strip()
    return (reason[:1].lower() + reason[1:]) if reason else "connection failed"
