"""The worker: the Celery task `backfill.analyze_session` (thin), its per-process context, the
LLM call policy (global rate limit, prompt caching) and the lease heartbeat. The analysis
itself is `shared.pipeline`, which the scheduler's batch cycle runs too."""
