"""The chaos suite: real processes under real faults, and proof that nothing is lost or doubled.

`python -m chaos [--sessions N] [--short]` (or `make chaos`) runs, for each fault in its own
run, a backfill of a few thousand sessions on the suite's own embedded Postgres and Redis (so a
restart or a FLUSHALL never touches anybody else's servers), with the LLM stand-in, two worker
processes and a scheduler as real subprocesses. Mid-job it applies the fault, waits for the
job to end, checks the outcome in SQL and prints one table row per run:

- every matched session ends terminal;
- exactly one successful `analysis_runs` row per (job, session) that succeeded, and the
  session's current analysis is that run;
- failures only where a permanent error was planted (a refusal, a 400, an agent without
  configuration), each with its error kind.

`lost` counts items left unfinished plus sessions that should have succeeded and have no
current analysis from the job; `duplicated` counts extra successful runs. Both must be 0.
"""
