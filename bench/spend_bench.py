"""Spend-control figures, on real processes (`backfill scheduler`, `backfill worker` on the
threads pool, the stand-in in this process so its invoice can be read).

    python -m bench.spend_bench        (or `make bench BENCH=spend`)

(a) estimate ÷ billed: `preview` of generated sessions, then the job, then the stand-in's
    invoice priced by the table, for a short-prefix Claude Haiku 4.5 configuration (below its
    4,096-token cache minimum) and a long-prefix Claude Sonnet 4.5 one (cached): once before
    the configuration has runs (basis `counted`, target within 25%) and once after (basis
    `history`, target within 10%);
(b) the cap's overrun: a job capped at a third of its estimate, two worker processes at
    concurrency 32 against a stand-in with 300 ms latency: the invoice ÷ the cap when it
    pauses (target ≤ 1.05), and the most spent + reserved seen ÷ the cap (≤ 1.0).

Postgres from DATABASE_URL when it answers (a scratch database, dropped at the end), else an
embedded one under .run/bench-spend; an embedded Redis of the bench's own. BENCH_QUICK=1 runs
small sizes (a smoke test of the bench itself; not figures to quote).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from scheduler.dev.embedded import start_embedded_postgres, start_embedded_redis, stop_embedded
from scheduler.jobs import estimates, operations, planner
from shared.db import database_reachable, normalise_database_url
from tests.support import spend
from tests.support.spend import SpendRun

QUICK = os.environ.get("BENCH_QUICK") == "1"
RUN_DIR = Path(".run/bench-spend")
LOG_DIR = RUN_DIR / "logs"
ESTIMATE_SESSIONS = 40 if QUICK else 200  # per configuration and run
CAP_SESSIONS = 200 if QUICK else 600
CAP_SHARE = 1 / 3
WORKERS = 2
CONCURRENCY = 32
LATENCY_MS = 300


@dataclass(frozen=True)
class Figure:
    name: str
    measured: float
    target: str
    passed: bool
    detail: str


def postgres_url() -> str:
    given = os.environ.get("DATABASE_URL")
    if given and database_reachable(given):
        return normalise_database_url(given)
    return start_embedded_postgres(RUN_DIR)


# --------------------------------------------------------------------------- (a)


def estimate_figures(run: SpendRun) -> list[Figure]:
    workspace_id = f"ws_bench_estimates_{secrets.token_hex(3)}"
    agent_list = spend.agents(secrets.token_hex(4))
    spend.seed_workspace(run.db, workspace_id, agent_list, {
        agent.agent_id: {"first": ESTIMATE_SESSIONS, "second": ESTIMATE_SESSIONS}
        for agent in agent_list})
    figures = []
    for agent in agent_list:
        for label, bound in (("first", 0.25), ("second", 0.10)):
            rows = spend.filters(agent.agent_id, label)
            preview = estimates.preview_estimate(run.db, run.settings, workspace_id, "call",
                                                 rows)["estimate"]
            billed_from = len(run.stub.billed)
            job_id = planner.create_job(run.db, run.settings, workspace_id, "call",
                                        rows).job_id
            run.wait_for(job_id, ["completed"], timeout_s=900)
            billed = spend.billed_usd(run.settings, run.stub.billed[billed_from:])
            ratio = preview["usd"] / billed
            figures.append(Figure(
                f"(a) estimate ÷ billed, {agent.model}, basis {preview['basis']}", ratio,
                f"{1 - bound:.2f}–{1 + bound:.2f}", abs(ratio - 1) <= bound,
                f"${preview['usd']:.4f} estimated, ${billed:.4f} billed, "
                f"{ESTIMATE_SESSIONS} sessions"))
    return figures


# --------------------------------------------------------------------------- (b)


def cap_figures(run: SpendRun) -> list[Figure]:
    workspace_id = f"ws_bench_cap_{secrets.token_hex(3)}"
    haiku = spend.agents(secrets.token_hex(4))[0]
    spend.seed_workspace(run.db, workspace_id, [haiku], {haiku.agent_id: {"all": CAP_SESSIONS}})
    rows = spend.filters(haiku.agent_id)
    estimate = estimates.preview_estimate(run.db, run.settings, workspace_id, "call", rows)
    cap = round(estimate["estimate"]["usd"] * CAP_SHARE, 6)
    billed_from = len(run.stub.billed)
    job_id = operations.create_job(run.db, run.settings, workspace_id, "call", rows,
                                   actor="os:bench", options={"max_cost_usd": cap}).job_id
    job, held = run.wait_sampling_held(job_id, ["paused", "completed"], timeout_s=900,
                                       every_s=0.01)
    billed = spend.billed_usd(run.settings, run.stub.billed[billed_from:])
    detail = (f"cap ${cap:.4f}, billed ${billed:.4f}, {job['counts']['succeeded']} of "
              f"{CAP_SESSIONS} sessions, state {job['state']} "
              f"({job['pause_reason'] or 'no pause reason'})")
    return [
        Figure("(b) billed ÷ cap, 2 workers × 32 threads", billed / cap, "≤ 1.05",
               billed <= cap * 1.05 and job["state"] == "paused", detail),
        Figure("(b) max spent + reserved ÷ cap", max(held) / cap, "≤ 1.00",
               max(held) <= cap, f"{len(held)} samples while it ran"),
    ]


# --------------------------------------------------------------------------- report


def report(figures: list[Figure]) -> None:
    print(f"\nspend control ({'quick' if QUICK else 'full'} sizes)")
    width = max(len(figure.name) for figure in figures)
    for figure in figures:
        verdict = "ok" if figure.passed else "MISSED"
        print(f"  {figure.name:<{width}}  {figure.measured:6.3f}  target {figure.target:<9} "
              f"{verdict:<6} {figure.detail}")


def main() -> None:
    server = postgres_url()
    broker_url = start_embedded_redis(RUN_DIR)
    try:
        with spend.spend_run(server, broker_url, LOG_DIR) as run:
            run.start_scheduler()
            run.start_worker("bench-spend-estimates", concurrency=8)
            figures = estimate_figures(run)
        with spend.spend_run(server, broker_url, LOG_DIR, latency_ms=LATENCY_MS) as run:
            run.start_scheduler()
            for n in range(WORKERS):
                run.start_worker(f"bench-spend-cap-{n}", concurrency=CONCURRENCY)
            figures += cap_figures(run)
    finally:
        stop_embedded(RUN_DIR)
    report(figures)


if __name__ == "__main__":
    main()
