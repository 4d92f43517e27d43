"""The scheduler side: everything but the worker's task.

- `jobs/`  the job model — filters, options, selection, planning, estimates, import, operator
           operations, API keys, audit, read models;
- `run/`   the control loop — dispatcher, reconciler, Message Batches cycle, leader lock;
- `http/`  the HTTP API for the Actions menu (FastAPI);
- `cli/`   the operator CLI `backfill` (Typer);
- `dev/`   development and test tools (LLM stand-in, demo, embedded servers): never imported
           by a runtime path of the worker, the control loop or the HTTP API.
"""
