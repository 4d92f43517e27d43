"""Development and test tools: the LLM stand-in, the demo and its data, embedded Postgres and
Redis, and starting the system's own processes. Never imported by a runtime path of the
worker, the control loop or the HTTP API (a test holds them to it)."""
