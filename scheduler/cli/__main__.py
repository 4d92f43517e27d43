"""`python -m scheduler.cli` is `backfill` (the demo and the tests start components this way)."""

from scheduler.cli import app

app()
