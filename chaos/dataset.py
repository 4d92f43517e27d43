"""The data every run starts from: the demo dataset, plus a few sessions planted to fail.

The chaos job takes every call of one demo workspace. Three of its sessions are planted to fail
permanently, so the runs also show that failures happen only where they should, with their
kind: one whose transcript carries a marker the stand-in answers with a refusal, one it answers
with a 400, and one whose agent has no analysis configuration at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from scheduler.dev.demo_data import generate_demo_dataset
from scheduler.jobs.importer import import_batch, parse_lines
from shared.db import Database
from shared.migrate import upgrade_to_head
from shared.settings import Settings

WORKSPACE = "ws_demo_dental"
KIND = "call"
GHOST_SESSION = "chaos_ghost_call"
PERMANENT_KINDS = frozenset({"llm_bad_request", "llm_refusal", "config_missing"})
# Stand-in fault per planted marker, and the error kind it must end with.
PLANTED_FAULTS = (("refusal", "llm_refusal"), ("400", "llm_bad_request"))


@dataclass(frozen=True)
class Dataset:
    database: str
    matched: int
    expected_failures: Mapping[str, str]  # session id -> error kind
    stub_rules: Mapping[str, str]  # session id -> stand-in fault


def demo_objects(calls: int) -> Iterator[dict[str, Any]]:
    """Agents, then demo sessions up to the `calls`-th call of WORKSPACE.

    The generator draws sessions one after another from one seeded RNG, so a longer dataset
    starts with the shorter one: cutting it keeps every run's data identical.
    """
    seen = 0
    for obj in generate_demo_dataset(sessions=calls * 3 + 50):
        yield obj
        if obj.get("object") == KIND and obj.get("workspace_id") == WORKSPACE:
            seen += 1
            if seen >= calls:
                return


def build(database_url: str, name: str, calls: int) -> Dataset:
    """Migrate, import and plant the failures into an empty database."""
    upgrade_to_head(database_url)
    db = Database.from_settings(Settings(database_url=database_url), pool_size=2)
    try:
        lines = (json.dumps(obj, ensure_ascii=False).encode() for obj in demo_objects(calls))
        import_batch(db, parse_lines(lines))
        with db.transaction() as tx:
            markers = _plant_markers(tx)
            _plant_ghost(tx)
            matched = int(tx.execute(text(
                "SELECT count(*) FROM sessions WHERE workspace_id = :ws AND kind = :kind"),
                {"ws": WORKSPACE, "kind": KIND}).scalar_one())
    finally:
        db.dispose()
    expected = {sid: kind for sid, (_, kind) in zip(markers, PLANTED_FAULTS, strict=True)}
    rules = {sid: fault for sid, (fault, _) in zip(markers, PLANTED_FAULTS, strict=True)}
    return Dataset(name, matched, expected | {GHOST_SESSION: "config_missing"}, rules)


def _plant_markers(tx: Any) -> list[str]:
    """Append `session_id=<id>` to a few answered calls: the stand-in's per-session rules."""
    ids = list(tx.execute(text("""
        SELECT session_id FROM sessions
         WHERE workspace_id = :ws AND kind = :kind AND status = 'ended'
           AND jsonb_array_length(transcript) > 0
         ORDER BY session_id LIMIT :n
    """), {"ws": WORKSPACE, "kind": KIND, "n": len(PLANTED_FAULTS)}).scalars())
    tx.execute(text("""
        UPDATE sessions
           SET transcript = transcript || jsonb_build_array(
                   jsonb_build_object('role', 'user', 'content', 'session_id=' || session_id))
         WHERE session_id = ANY(:ids)
    """), {"ids": ids})
    return ids


def _plant_ghost(tx: Any) -> None:
    """A call whose agent has no versions: `config_missing`, failed at once."""
    tx.execute(text("""
        INSERT INTO sessions (session_id, kind, workspace_id, agent_id, agent_version, status,
                              transcript)
        VALUES (:sid, :kind, :ws, 'chaos_ghost_agent', 0, 'ended',
                '[{"role": "user", "content": "hello, is anybody there?"}]')
    """), {"sid": GHOST_SESSION, "kind": KIND, "ws": WORKSPACE})
