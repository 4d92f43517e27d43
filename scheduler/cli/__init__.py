"""`backfill` — the operator CLI (Typer): job verbs (`jobs`), process verbs (`services`), API
keys (`keys`), webhooks (`webhooks`); shared options, output and exit codes (`common`); tables
and progress bars (`render`); settings and embedded servers for a machine without any
(`runtime`)."""

from scheduler.cli import jobs, keys, services, webhooks
from scheduler.cli.common import app

__all__ = ["app", "jobs", "keys", "services", "webhooks"]
