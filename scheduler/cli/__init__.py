"""`backfill` — the operator CLI (Typer): job verbs (`jobs`), change report, promote and revert
(`changes`), process verbs (`services`), API keys (`keys`), webhooks (`webhooks`); shared
options, output and exit codes (`common`); tables and progress bars (`render`); settings and
embedded servers for a machine without any (`runtime`)."""

from scheduler.cli import changes, jobs, keys, services, webhooks
from scheduler.cli.common import app

__all__ = ["app", "changes", "jobs", "keys", "services", "webhooks"]
