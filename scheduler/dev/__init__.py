"""Development and test tools: the LLM stand-in, demo data, embedded servers.

Nothing here is ever imported by a runtime path of the worker, the scheduler loop or the HTTP
API; only tests, demos, benchmarks, the chaos driver and development-only CLI verbs (such as
``backfill llm-stub``, which imports the stand-in inside the verb) use it.
"""
