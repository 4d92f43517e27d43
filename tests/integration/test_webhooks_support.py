"""Helpers for the logs, metrics and webhook tests (this module holds no tests itself).

- `Stack`: the system's own processes (worker, scheduler, API) on a database and queue of the
  test's own, so no process of the session's pipeline dispatches, runs or delivers its work;
  each process logs to a file of its own (JSON: a file is not a terminal);
- `seed_workspace`: a workspace whose calls succeed, are skipped (not connected) or fail at
  once (the stand-in answers 400 to a transcript holding `session_id=m400`);
- `Receiver`: a webhook endpoint on 127.0.0.1 answering from a script (status, or a delay
  longer than the sender's timeout), recording every request;
- `scrape`: one process's `/metrics`, parsed.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from scheduler.dev import processes
from scheduler.dev.llm_stub import FaultConfig, StubServer, make_server
from scheduler.dev.processes import wait_for_log
from scheduler.jobs.importer import import_batch, parse_lines
from scheduler.webhooks.secretbox import new_secret_key
from shared.db import Database

LOG_DIR = Path(__file__).resolve().parents[2] / ".run" / "test" / "logs"
FAIL_MARKER = "m400"
STUB_FAULTS = FaultConfig(fail_session_ids={FAIL_MARKER: 400})
AGENT_FIELDS = [
    {"type": "enum", "name": "intent", "description": "Why did the caller call?",
     "choices": ["booking", "billing", "other"]},
    {"type": "string", "name": "requested_day", "description": "Which day did they ask for?"},
]


# --------------------------------------------------------------------------- the stand-in


def start_faulty_stub() -> tuple[StubServer, str]:
    server = make_server("127.0.0.1", 0, faults=STUB_FAULTS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# --------------------------------------------------------------------------- data


@dataclass
class Seeded:
    workspace_id: str
    succeeding: list[str]
    skipped: list[str]
    failing: list[str]
    transcripts: list[str]

    @property
    def all_ids(self) -> list[str]:
        return [*self.succeeding, *self.skipped, *self.failing]


def seed_workspace(db: Database, *, succeeding: int, skipped: int = 0,
                   failing: int = 0) -> Seeded:
    """A workspace with one voice agent (a draft) and its calls; transcripts say distinctive
    things, so a test can look for them in every log line."""
    suffix = secrets.token_hex(4)
    ws, agent = f"ws_obs_{suffix}", f"agent_obs_{suffix}"
    seeded = Seeded(ws, [], [], [], [])
    objects: list[dict[str, Any]] = [{
        "object": "agent", "agent_id": agent, "workspace_id": ws, "version": 0,
        "is_published": False, "agent_name": "Observed", "kind": "voice",
        "post_call_analysis_model": "claude-haiku-4-5", "post_call_analysis_data": AGENT_FIELDS,
    }]
    plan = ([("succeeding", "ended")] * succeeding + [("skipped", "not_connected")] * skipped
            + [("failing", "ended")] * failing)
    for index, (group, status) in enumerate(plan):
        call_id = f"call_obs_{suffix}_{index:03d}"
        getattr(seeded, group).append(call_id)
        said = (f"My name is Harriet Quellmalz{index}, I would like to book a table for "
                f"{index % 4 + 2} on Thursday, card ending 4{index:03d}.")
        if group == "failing":
            said += f" session_id={FAIL_MARKER}"
        seeded.transcripts.append(said)
        objects.append(_call(ws, agent, call_id, index, status, said))
    import_batch(db, parse_lines(json.dumps(o).encode("utf-8") for o in objects))
    return seeded


def _call(ws: str, agent: str, call_id: str, index: int, status: str, said: str
          ) -> dict[str, Any]:
    start = 1_762_000_000_000 + index * 60_000
    return {
        "object": "call", "call_id": call_id, "workspace_id": ws, "agent_id": agent,
        "agent_version": 0, "call_type": "phone_call", "call_status": status,
        "direction": "inbound", "from_number": f"+1415555{index:04d}",
        "to_number": "+14155550999", "start_timestamp": start,
        "end_timestamp": start + 30_000, "duration_ms": 30_000,
        "disconnection_reason": "user_hangup",
        "transcript_object": [{"role": "agent", "content": "Hello, how can I help?"},
                              {"role": "user", "content": said}],
        "call_analysis": {"call_summary": "old summary", "call_successful": False,
                          "user_sentiment": "Neutral", "custom_analysis_data": {}},
    }


def job_document(db: Database, job_id: str) -> dict[str, Any]:
    from scheduler.jobs import documents
    from shared.settings import Settings

    with db.transaction() as tx:
        return documents.job_json(tx, Settings(), job_id)


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def wait_for_job(db: Database, job_id: str, state: str = "completed",
                 timeout_s: float = 120.0) -> None:
    def reached() -> bool:
        with db.transaction() as tx:
            return tx.execute(text("SELECT state FROM backfill_jobs WHERE id = :id"),
                              {"id": job_id}).scalar_one() == state
    wait_until(reached, timeout_s, f"job {job_id} to be {state}")


# --------------------------------------------------------------------------- processes


@dataclass
class Stack:
    """The system's processes on one database and queue; every process is stopped at exit."""

    database_url: str
    broker_url: str
    stub_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    queue: str = field(default_factory=lambda: f"backfill_obs_{secrets.token_hex(4)}")
    secret_key: str = field(default_factory=new_secret_key)
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url, "BROKER_URL": self.broker_url,
            "BACKFILL_QUEUE": self.queue, "ANTHROPIC_BASE_URL": self.stub_url,
            "BACKFILL_LLM": "stub", "BACKFILL_DISPATCH_INTERVAL_S": "0.2",
            "BACKFILL_SECRET_KEY": self.secret_key, "BACKFILL_WEBHOOK_ALLOW_PRIVATE": "true",
            **self.extra_env,
        }

    def start(self, name: str, args: list[str], marker: str) -> subprocess.Popen[bytes]:
        log_path = LOG_DIR / f"{name}-{self.queue}.log"
        log_path.unlink(missing_ok=True)
        process = processes.start(processes.backfill_command(*args), log_path, self.env)
        self.running[name], self.logs[name] = process, log_path
        try:
            wait_for_log(log_path, marker, process, timeout_s=90)
        except BaseException:
            self.stop(name)
            raise
        return process

    def worker(self, name: str = "worker", *extra: str) -> None:
        self.start(name, ["worker", "--concurrency", "4", *extra, "--", "--hostname",
                          f"{name}-{self.queue}@%h"], "ready.")

    def scheduler(self, name: str = "scheduler", *extra: str) -> None:
        self.start(name, ["scheduler", *extra], "scheduler running")

    def api(self, port: int, name: str = "api") -> None:
        self.start(name, ["api", "--port", str(port)], "Uvicorn running")

    def stop(self, name: str) -> None:
        process = self.running.pop(name, None)
        if process is not None:
            processes.stop(process)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


# --------------------------------------------------------------------------- metrics


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode("utf-8")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (sample, series), value in samples.items()
               if sample == name and wanted <= series)


# --------------------------------------------------------------------------- webhooks


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook endpoint. `script` answers requests in order (an int status, or "hang": no
    answer for `hang_s`); after it, `then` (200)."""

    script: list[int | str] = field(default_factory=list)
    then: int | str = 200
    hang_s: float = 4.0
    requests: list[Received] = field(default_factory=list)
    path: str = field(default_factory=lambda: f"/hook-{secrets.token_hex(6)}")
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                action = receiver._next(headers, body)
                if action == "hang":  # the sender has given up by the time this answers
                    time.sleep(receiver.hang_s)
                    self.close_connection = True
                    return
                self.send_response(int(action))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _next(self, headers: dict[str, str], body: bytes) -> int | str:
        self.requests.append(Received(headers, body, time.monotonic()))
        return self.script.pop(0) if self.script else self.then


def open_scratch(database_url: str) -> Iterator[str]:
    """A database of the test's own (see `chaos.cluster.scratch_database`)."""
    from chaos.cluster import scratch_database

    with scratch_database(database_url, prefix="backfill_obs") as url:
        yield url
