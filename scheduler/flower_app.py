"""The Celery app Flower loads: `celery -A scheduler.flower_app flower` (`backfill flower`).

Celery's `-A` needs a module attribute, so this module builds the app when imported; only the
Flower process imports it. Flower watches task events (ids only) and asks workers for their
status through the broker; it never touches Postgres.
"""

from __future__ import annotations

from shared.broker import make_celery
from shared.settings import get_settings

app = make_celery(get_settings())
