"""What every CLI verb needs: settings (with embedded services filled in when no URL is given),
a small database pool, and the `--filters` argument."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from shared.db import Database
from shared.errors import InvalidInput
from shared.settings import Settings, get_settings


def resolve_settings(*, need_broker: bool = False) -> Settings:
    """Use DATABASE_URL/BROKER_URL when set; otherwise start or reuse the embedded servers.

    The URLs go into the environment so that child processes (workers, scheduler) inherit them.
    """
    settings = get_settings()
    if settings.database_url and (settings.broker_url or not need_broker):
        return settings
    # Only a machine without servers pays for importing the embedded ones.
    from scheduler.dev.embedded import start_embedded_postgres, start_embedded_redis

    run_dir = Path(settings.backfill_run_dir)
    if not settings.database_url:
        os.environ["DATABASE_URL"] = start_embedded_postgres(run_dir)
        print(f"using embedded Postgres under {run_dir}/", file=sys.stderr)
    if need_broker and not settings.broker_url:
        os.environ["BROKER_URL"] = start_embedded_redis(run_dir)
        print(f"using embedded Redis under {run_dir}/", file=sys.stderr)
    get_settings.cache_clear()
    return get_settings()


def open_database(settings: Settings) -> Database:
    return Database.from_settings(settings, pool_size=2)


def load_filters_argument(value: str) -> Any:
    """`--filters` takes inline JSON or `@path` to a JSON file."""
    source = "filters"
    if value.startswith("@"):
        path = Path(value[1:])
        source = str(path)
        try:
            value = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"filters: cannot read {path}: {exc.strerror}") from exc
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
