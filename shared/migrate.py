"""The schema: Alembic migrations to head (`backfill db upgrade`), and the start-up check that
the database is at the revision this code was written for.

`SCHEMA_HEAD` names the newest migration; a unit test holds it against Alembic's own head, so a
new migration cannot forget it. The check reads one row and does not import Alembic, so the
worker, the scheduler and the API can afford it at every start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import Connection, text

from shared.db import Database, environment_problem
from shared.errors import SchemaNotReady

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SCHEMA_HEAD: Final = "0006"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a URL must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


def check_models_match(database_url: str) -> None:
    """Raises if the models and the migrations disagree (`alembic check`)."""
    from alembic import command

    command.check(alembic_config(database_url))


def alembic_head() -> str:
    """The head revision as Alembic computes it from the migration scripts."""
    from alembic.script import ScriptDirectory

    config = alembic_config("postgresql://unused")
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RuntimeError("the migrations have no head")
    return head


def schema_revision(connection: Connection) -> str | None:
    """The revision the database is at; None when it has no schema of ours."""
    exists = connection.execute(text("SELECT to_regclass('alembic_version')")).scalar()
    if exists is None:
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def require_schema_at_head(db: Database, database_url: str | None) -> None:
    """A worker, scheduler or API refuses to run on a schema it was not written for: behind
    head its statements would fail on every session; ahead, a newer release owns it."""
    try:
        with db.transaction() as connection:
            revision = schema_revision(connection)
    except Exception as exc:
        problem = environment_problem(exc, database_url)
        if problem is None:
            raise
        raise problem from None
    if revision is None:
        raise SchemaNotReady()
    if revision != SCHEMA_HEAD:
        raise SchemaNotReady(
            f"the database schema is at revision {revision}, this release needs {SCHEMA_HEAD}: "
            "run `backfill db upgrade` (with this release)")
