"""Helpers for the HTTP API tests: tenants of our own, keys, held jobs, a live uvicorn server.

Other tests use `ws_acme` from the team examples; these make workspaces with random suffixes
so they never see or disturb them. (This module holds no tests itself.)
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from sqlalchemy import text

from scheduler.dev.processes import free_port
from scheduler.jobs import keys as auth
from scheduler.jobs.importer import import_batch, parse_lines
from shared.db import Database

BASE_TS = 1_762_000_000_000


@dataclass
class Tenant:
    workspace_id: str
    key: str
    key_id: str
    call_ids: list[str] = field(default_factory=list)
    chat_ids: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _agent(workspace: str, agent_id: str, kind: str) -> dict[str, Any]:
    prefix = "post_call" if kind == "voice" else "post_chat"
    return {
        "object": "agent", "agent_id": agent_id, "workspace_id": workspace, "version": 0,
        "is_published": False, "agent_name": "API test", "kind": kind,
        f"{prefix}_analysis_model": "claude-haiku-4-5",
        f"{prefix}_analysis_data": [
            {"type": "enum", "name": "intent", "description": "Why they called.",
             "choices": ["booking", "billing", "other"]},
        ],
    }


def _call(workspace: str, agent_id: str, call_id: str, index: int) -> dict[str, Any]:
    start = BASE_TS + index * 60_000
    return {
        "object": "call", "call_id": call_id, "workspace_id": workspace, "agent_id": agent_id,
        "agent_version": 0, "call_type": "phone_call", "call_status": "ended",
        "direction": "inbound" if index % 2 else "outbound",
        "from_number": f"+1415555{index:04d}", "to_number": "+14155550999",
        "start_timestamp": start, "end_timestamp": start + 30_000, "duration_ms": 30_000,
        "disconnection_reason": "user_hangup",
        "transcript_object": [
            {"role": "agent", "content": "Hello, how can I help?"},
            {"role": "user", "content": f"I would like to book a table for {index % 5 + 1}."},
        ],
        "metadata": {"batch": index % 3}, "retell_llm_dynamic_variables": {},
        "call_analysis": {"call_summary": "old summary", "call_successful": False,
                          "user_sentiment": "Neutral", "in_voicemail": False,
                          "custom_analysis_data": {}},
    }


def _chat(workspace: str, agent_id: str, chat_id: str, index: int) -> dict[str, Any]:
    start = BASE_TS + index * 60_000
    return {
        "object": "chat", "chat_id": chat_id, "workspace_id": workspace, "agent_id": agent_id,
        "agent_version": 0, "chat_status": "ended", "start_timestamp": start,
        "end_timestamp": start + 30_000, "duration_ms": 30_000,
        "transcript_object": [{"role": "user", "content": "Can I talk to a person?"}],
        "metadata": {},
        "chat_analysis": {"chat_summary": "old", "chat_successful": True,
                          "user_sentiment": "Positive", "custom_analysis_data": {}},
    }


def make_tenant(db: Database, label: str, *, calls: int = 3, chats: int = 1) -> Tenant:
    """A fresh workspace with one voice and one chat agent, some calls and chats, and a key."""
    suffix = secrets.token_hex(4)
    workspace = f"ws_{label}_{suffix}"
    voice, chat = f"agent_voice_{suffix}", f"agent_chat_{suffix}"
    call_ids = [f"call_{label}_{suffix}_{i:03d}" for i in range(calls)]
    chat_ids = [f"chat_{label}_{suffix}_{i:03d}" for i in range(chats)]
    objects = [_agent(workspace, voice, "voice"), _agent(workspace, chat, "chat")]
    objects += [_call(workspace, voice, cid, i) for i, cid in enumerate(call_ids)]
    objects += [_chat(workspace, chat, cid, i) for i, cid in enumerate(chat_ids)]
    import_batch(db, parse_lines(json.dumps(o).encode("utf-8") for o in objects))
    new = auth.create_key(db, workspace, "os:pytest")
    return Tenant(workspace, new.key, new.key_id, call_ids, chat_ids)


def held_job(db: Database, tenant: Tenant, *, state: str = "paused",
             failed: tuple[str, ...] = (), pending: tuple[str, ...] = ()) -> str:
    """A job inserted as `paused`, so the running scheduler leaves it alone."""
    job_id = "bf_held_" + secrets.token_hex(6)
    with db.transaction() as tx:
        tx.execute(text("""
            INSERT INTO backfill_jobs (id, workspace_id, kind, filters, state, matched)
            VALUES (:id, :ws, 'call', '[]', :state, :matched)
        """), {"id": job_id, "ws": tenant.workspace_id, "state": state,
               "matched": len(failed) + len(pending)})
        for session_id in failed:
            tx.execute(text("""
                INSERT INTO backfill_items (job_id, session_id, state, error_kind, error, attempts)
                VALUES (:job, :sid, 'failed', 'llm_refusal', 'the model refused', 1)
            """), {"job": job_id, "sid": session_id})
        for session_id in pending:
            tx.execute(text("INSERT INTO backfill_items (job_id, session_id) VALUES (:j, :s)"),
                       {"j": job_id, "s": session_id})
    return job_id


def snapshot(db: Database, workspace_id: str) -> dict[str, list[Any]]:
    """Everything a request could change in a workspace (and the global job count)."""
    with db.transaction() as tx:
        def rows(sql: str) -> list[Any]:
            return [tuple(row) for row in tx.execute(text(sql), {"ws": workspace_id})]

        return {
            "jobs": rows("SELECT id, state, state_reason, finished_at FROM backfill_jobs "
                         "WHERE workspace_id = :ws ORDER BY id"),
            "items": rows("SELECT i.job_id, i.session_id, i.state, i.attempts, i.error_kind "
                          "FROM backfill_items i JOIN backfill_jobs j ON j.id = i.job_id "
                          "WHERE j.workspace_id = :ws ORDER BY 1, 2"),
            "audit": rows("SELECT id FROM audit_events WHERE workspace_id = :ws ORDER BY id"),
            "sessions": rows("SELECT session_id, summary, analysis_run_id FROM sessions "
                             "WHERE workspace_id = :ws ORDER BY 1"),
            "all_jobs": rows("SELECT count(*) FROM backfill_jobs"),
        }


def wait_for_state(client: Any, tenant: Tenant, job_id: str, states: set[str],
                   timeout_s: float = 90.0) -> dict[str, Any]:
    """Poll GET /v1/backfills/{id} (what `watch` does) until the job reaches one of `states`."""
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = client.get(f"/v1/backfills/{job_id}",
                                         headers=tenant.headers).json()
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job stuck: {job}"
        time.sleep(0.2)


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """The app on a real uvicorn server in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        httpx.get(f"{base_url}/healthz", timeout=5)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=20)
