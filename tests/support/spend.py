"""Spend control on real processes: generated sessions for two configurations, a run of its own
(scratch database, queue, in-process stand-in, scheduler and workers), and the stand-in's bill
priced by the product's table. Shared by the spend tests and `bench/spend_bench.py`.

The two configurations are the two cases the estimate must get right:
- **short-prefix Haiku**: a handful of fields, a static prefix well below Claude Haiku 4.5's
  4,096-token cache minimum, so nothing is ever cached;
- **long-prefix Sonnet**: many long field descriptions, a prefix far above Claude Sonnet 4.5's
  1,024-token minimum: one cache write, then reads.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from chaos.cluster import scratch_database
from scheduler.dev import processes
from scheduler.dev.llm_stub import BilledAnswer, StubServer, enable_rate_limit, make_server
from scheduler.jobs import documents
from shared.db import Database
from shared.pricing import Tokens, cost_usd
from shared.settings import Settings
from shared.state import budget

HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-5"

# --------------------------------------------------------------------------- configurations


def short_fields(marker: str) -> list[dict[str, Any]]:
    """Fourteen fields with one-line descriptions (a typical configuration, whose answers
    are about the default 250 output tokens): a prefix of under two thousand tokens."""
    return [
        {"type": "system-presets", "name": "call_summary",
         "description": f"[{marker}] Summarise the call in one sentence."},
        {"type": "enum", "name": "intent", "description": "Why the caller called.",
         "choices": ["order", "refund", "delivery", "booking", "other"]},
        {"type": "boolean", "name": "resolved", "description": "Was the issue resolved?"},
        {"type": "boolean", "name": "escalated", "description": "Was a manager involved?"},
        {"type": "number", "name": "order_number", "description": "The order number given."},
        {"type": "number", "name": "refund_amount", "description": "Dollars to refund."},
        {"type": "string", "name": "callback_time", "description": "When to call back.",
         "examples": ["tomorrow at 9", "Friday afternoon"]},
        *({"type": "string", "name": name, "description": description}
          for name, description in (
              ("product", "The product discussed."),
              ("problem", "What went wrong with the order."),
              ("address", "The delivery address, if given."),
              ("previous_contact", "When the caller contacted us before."),
              ("requested_remedy", "What the caller asked for."),
              ("agent_promise", "What the agent promised to do."),
              ("follow_up", "Any follow-up the caller expects."))),
    ]


_LONG_TEXT = ("Read the whole conversation carefully and note every detail that bears on this "
              "question, including corrections the caller makes later on, and prefer the "
              "caller's own words over the agent's paraphrase. ")


def long_fields(marker: str) -> list[dict[str, Any]]:
    """Twelve fields with paragraph-long descriptions: a prefix of several thousand tokens
    (the descriptions are in both the system text and the output schema)."""
    return [{"type": "string", "name": f"detail_{n}",
             "description": f"[{marker}] Detail {n}. {_LONG_TEXT * 3}"} for n in range(12)]


@dataclass(frozen=True)
class Agent:
    agent_id: str
    model: str
    fields: list[dict[str, Any]]


def agents(marker: str) -> list[Agent]:
    """The two configurations, unique to `marker` so no stand-in has cached them."""
    return [Agent("short_haiku", HAIKU, short_fields(marker)),
            Agent("long_sonnet", SONNET, long_fields(marker))]


# --------------------------------------------------------------------------- sessions

_ISSUES = ("arrived broken", "is two weeks late", "was charged twice", "is the wrong size",
           "never arrived", "stopped working after a day")
_PRODUCTS = ("kettle", "desk lamp", "pair of running shoes", "phone case", "coffee grinder")
_USER_LINES = (
    "Hi, I'm calling about order {order}, the {product} {issue}.",
    "I already called on {day} and nobody got back to me, which is frustrating.",
    "Could you send a replacement, or otherwise refund me the {amount} dollars?",
    "My address is still the same, 12 Harbour Street, apartment {n}.",
    "Please call me back {when}, I'm at work until then.",
    "Thanks, that would be great, I really appreciate it.",
    "No, I don't want store credit, I'd like the money back on my card.",
)
_AGENT_LINES = (
    "I'm sorry to hear that. Let me pull up order {order} for you.",
    "I can see the order here; it shipped on {day} from our warehouse.",
    "I've arranged a replacement {product}; it should arrive within three working days.",
    "I've issued a refund of {amount} dollars; it takes up to five days to show up.",
    "Is there anything else I can help you with today?",
)
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
_WHENS = ("tomorrow at 9", "after 5 pm", "on Friday afternoon", "next week")


def transcript(rng: random.Random) -> list[dict[str, str]]:
    """A support call of 2 to 40 turns (lengths vary widely, as real ones do)."""
    facts = {"order": rng.randint(10_000, 99_999), "product": rng.choice(_PRODUCTS),
             "issue": rng.choice(_ISSUES), "day": rng.choice(_DAYS),
             "amount": rng.randint(15, 400), "n": rng.randint(1, 60), "when": rng.choice(_WHENS)}
    turns = []
    for index in range(rng.choice((2, 4, 6, 10, 16, 24, 40))):
        role, lines = ("user", _USER_LINES) if index % 2 == 0 else ("agent", _AGENT_LINES)
        sentences = rng.randint(1, 3)
        content = " ".join(rng.choice(lines).format(**facts) for _ in range(sentences))
        turns.append({"role": role, "content": content})
    return turns


def seed_workspace(db: Database, workspace_id: str, agent_list: Sequence[Agent],
                   sessions: Mapping[str, Mapping[str, int]], seed: int = 12) -> None:
    """The workspace, one draft version per agent, and `sessions[agent_id][label]` calls of
    each agent per label (the label is the session's `metadata.set`)."""
    rng = random.Random(seed)
    with db.transaction() as tx:
        tx.execute(text("INSERT INTO workspaces (id) VALUES (:ws)"), {"ws": workspace_id})
        for agent in agent_list:
            tx.execute(text("""
                INSERT INTO agent_versions (workspace_id, agent_id, version, is_published, kind,
                                            analysis_model, analysis_data)
                VALUES (:ws, :agent, 0, false, 'voice', :model, CAST(:fields AS jsonb))
            """), {"ws": workspace_id, "agent": agent.agent_id, "model": agent.model,
                   "fields": json.dumps(agent.fields)})
        rows = [{"sid": f"{workspace_id}_{agent_id}_{label}_{n:04d}", "ws": workspace_id,
                 "agent": agent_id, "meta": json.dumps({"set": label}),
                 "t": json.dumps(transcript(rng))}
                for agent_id, labels in sessions.items()
                for label, count in labels.items() for n in range(count)]
        tx.execute(text("""
            INSERT INTO sessions (session_id, kind, workspace_id, agent_id, agent_version,
                                  status, transcript, metadata)
            VALUES (:sid, 'call', :ws, :agent, 0, 'ended', CAST(:t AS jsonb),
                    CAST(:meta AS jsonb))
        """), rows)


def filters(agent_id: str, label: str | None = None) -> list[dict[str, Any]]:
    """The sessions of one agent (of one label)."""
    rows: list[dict[str, Any]] = [{"field": "agent", "op": "in",
                                   "value": [{"agent_id": agent_id}]}]
    if label is not None:
        rows.append({"field": "metadata", "key": "set", "op": "eq", "value": label})
    return rows


# --------------------------------------------------------------------------- the bill


def billed_usd(settings: Settings, answers: Sequence[BilledAnswer]) -> float:
    """The stand-in's invoice for these answers, priced by the product's table."""
    return sum(cost_usd(settings, answer.model, billed_tokens(answer),
                        "batch" if answer.batch else "live") for answer in answers)


def billed_tokens(answer: BilledAnswer) -> Tokens:
    usage = answer.usage
    return Tokens(input=usage["input_tokens"], output=usage["output_tokens"],
                  cache_read=usage["cache_read_input_tokens"],
                  cache_write=usage["cache_creation_input_tokens"])


# --------------------------------------------------------------------------- a run


@dataclass
class SpendRun:
    """A scheduler and workers on a database, queue and stand-in of their own."""

    settings: Settings
    env: dict[str, str]
    db: Database
    stub: StubServer
    log_dir: Path
    workers: list[Any] = field(default_factory=list)
    scheduler: Any = None

    @property
    def stub_url(self) -> str:
        return f"http://127.0.0.1:{self.stub.server_address[1]}"

    def start_worker(self, name: str, concurrency: int) -> Any:
        log_path = self.log_dir / f"{name}.log"
        log_path.unlink(missing_ok=True)
        worker = processes.start(
            processes.backfill_command("worker", "--concurrency", str(concurrency), "--",
                                       "--hostname", f"{name}@%h"), log_path, self.env)
        try:
            processes.wait_for_log(log_path, "ready.", worker)
        except BaseException:
            processes.stop(worker)
            raise
        self.workers.append(worker)
        return worker

    def start_scheduler(self) -> None:
        log_path = self.log_dir / "scheduler-spend.log"
        log_path.unlink(missing_ok=True)
        self.scheduler = processes.start(processes.backfill_command("scheduler"), log_path,
                                         self.env)
        processes.wait_for_log(log_path, "scheduler running", self.scheduler)

    def job(self, job_id: str) -> dict[str, Any]:
        with self.db.transaction() as tx:
            return documents.job_json(tx, self.settings, job_id)

    def wait_for(self, job_id: str, states: Sequence[str], timeout_s: float,
                 every: Any = None) -> dict[str, Any]:
        """The job once it is in one of `states`; `every(job)` sees each poll."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if every is not None:
                every(job)
            if job["state"] in states:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not {'/'.join(states)} within {timeout_s:.0f}s: "
                             f"{self.job(job_id)['counts']}")

    def wait_sampling_held(self, job_id: str, states: Sequence[str], timeout_s: float,
                           every_s: float) -> tuple[dict[str, Any], list[float]]:
        """`wait_for`, and what the job held (spent + reserved, as `budget.spend_of` reads
        it) sampled every `every_s` while it ran: the cap's invariant is on every sample."""
        held: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with self.db.transaction() as tx:
                    state = budget.spend_of(tx, [job_id])[job_id]
                held.append(float(state.spent_usd + state.reserved_usd))
                stop.wait(every_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            job = self.wait_for(job_id, states, timeout_s)
        finally:
            stop.set()
            sampler.join(5)
        return job, held

    def stop(self) -> None:
        for process in [self.scheduler, *self.workers]:
            if process is not None:
                processes.stop(process)
        self.workers.clear()
        self.scheduler = None


def run_env(settings: Settings, stub_url: str, extra: Mapping[str, str]) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.require_database_url(),
        "BROKER_URL": settings.require_broker_url(),
        "BACKFILL_QUEUE": settings.queue_name,
        "ANTHROPIC_BASE_URL": stub_url,
        "ANTHROPIC_API_KEY": "",  # never send a real key to the stand-in
        "BACKFILL_LLM": "stub",
        "BACKFILL_DISPATCH_INTERVAL_S": "0.2",
        "BACKFILL_RETRY_BASE_S": "0.2",
        "BACKFILL_RETRY_CAP_S": "2",
        **extra,
    }


@contextmanager
def spend_run(database_url: str, broker_url: str, log_dir: Path, *, latency_ms: int = 0,
              rpm_limit: int = 0, rl_window_s: float = 60.0,
              env: Mapping[str, str] | None = None) -> Iterator[SpendRun]:
    """A run of its own; its settings are the processes' settings (the test's own calls of
    preview and create use them, so they count tokens with the same stand-in)."""
    stub = make_server("127.0.0.1", 0, latency_ms)
    if rpm_limit:
        enable_rate_limit(stub, rpm_limit, rl_window_s)
    thread = threading.Thread(target=stub.serve_forever, daemon=True)
    thread.start()
    stub_url = f"http://127.0.0.1:{stub.server_address[1]}"
    try:
        with scratch_database(database_url, "backfill_spend") as url:
            base = Settings(database_url=url, broker_url=broker_url,
                            queue_name=f"backfill_spend_{secrets.token_hex(4)}")
            process_env = run_env(base, stub_url, env or {})
            settings = settings_from_env(process_env)
            db = Database.from_settings(settings, pool_size=4)
            run = SpendRun(settings, process_env, db, stub, log_dir)
            try:
                yield run
            finally:
                run.stop()
                db.dispose()
    finally:
        stub.shutdown()
        stub.server_close()
        thread.join(5)


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The Settings a process started with `env` (over this process's environment) reads."""
    by_variable = {(info.alias or name).lower(): name
                   for name, info in Settings.model_fields.items()}
    values = {by_variable[key.lower()]: value for key, value in env.items()
              if key.lower() in by_variable}
    return Settings(**values)
