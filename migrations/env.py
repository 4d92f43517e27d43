"""Alembic environment: the URL comes from the caller (`backfill db upgrade`) or DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from shared.db import normalise_database_url
from shared.models import Base
from shared.settings import Settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return normalise_database_url(
        config.get_main_option("sqlalchemy.url") or Settings().require_database_url()
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
