"""The Celery app object and task names, shared by the scheduler (sends) and workers (run)."""

from __future__ import annotations

from celery import Celery

from shared.settings import Settings

ANALYZE_SESSION = "backfill.analyze_session"


def make_celery(settings: Settings) -> Celery:
    """Configured for long I/O-bound tasks where Postgres, not the broker, holds the state."""
    app = Celery("backfill", broker=settings.require_broker_url(), set_as_current=True)
    app.conf.update(
        task_default_queue=settings.queue_name,
        task_routes={ANALYZE_SESSION: {"queue": settings.queue_name}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        # Task events so Flower can list tasks; arguments are ids only.
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_transport_options={
            # Must exceed the longest task including its retry countdown, else redelivery.
            "visibility_timeout": settings.visibility_timeout_s,
            "socket_timeout": 10,
            "socket_connect_timeout": 10,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=10,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
    )
    return app
