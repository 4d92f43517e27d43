"""Engine and transactions. One engine per process, created on first use after any fork."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import make_url

from shared.settings import Settings


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
