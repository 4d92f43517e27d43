"""Bearer API keys, one workspace each. Only a SHA-256 of the key is stored; the key is shown once.

A key is 256 random bits, so a plain (unsalted, fast) hash is enough: nobody can brute-force
the preimage, and a lookup by hash needs no per-key salt. The workspace of a request always
comes from its key, never from the request body.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import text

from scheduler.jobs import audit
from scheduler.jobs.planner import require_workspace
from shared.db import Database
from shared.errors import NotFound

KEY_PREFIX = "bfk_"
# Longer headers are refused before any hashing or SQL: no real key is this long.
MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and the one workspace it may see and change."""

    key_id: str
    workspace_id: str

    @property
    def actor(self) -> str:
        return f"api_key:{self.key_id}"


@dataclass(frozen=True)
class NewKey:
    key_id: str
    workspace_id: str
    key: str  # the secret itself: print it once, never store or log it


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(db: Database, workspace_id: str, actor: str) -> NewKey:
    """A new key for an existing workspace; the creation is audited (by id, not secret)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(8)
    with db.transaction() as tx:
        require_workspace(tx, workspace_id)
        tx.execute(text("""
            INSERT INTO api_keys (id, workspace_id, key_hash, created_by)
            VALUES (:id, :ws, :hash, :actor)
        """), {"id": key_id, "ws": workspace_id, "hash": hash_key(key), "actor": actor})
        audit.record(tx, workspace_id=workspace_id, job_id=None, actor=actor,
                     action="api_key_create", details={"key_id": key_id})
    return NewKey(key_id=key_id, workspace_id=workspace_id, key=key)


def revoke_key(db: Database, key_id: str, actor: str) -> str:
    """Revoke a key by id; returns its workspace. Requests with it are 401 from now on."""
    with db.transaction() as tx:
        workspace_id = tx.execute(text("""
            UPDATE api_keys SET revoked_at = coalesce(revoked_at, clock_timestamp())
             WHERE id = :id RETURNING workspace_id
        """), {"id": key_id}).scalar_one_or_none()
        if workspace_id is None:
            raise NotFound(f"no API key {key_id!r}")
        audit.record(tx, workspace_id=workspace_id, job_id=None, actor=actor,
                     action="api_key_revoke", details={"key_id": key_id})
    return str(workspace_id)


def parse_bearer(header: str | None) -> str | None:
    """The key from an `Authorization: Bearer KEY` header, or None when absent or malformed."""
    if not header:
        return None
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > MAX_KEY_LENGTH:
        return None
    return key


def authenticate(db: Database, header: str | None) -> Principal | None:
    """The principal of a valid, unrevoked key; None for anything else (the caller says 401)."""
    key = parse_bearer(header)
    if key is None:
        return None
    with db.transaction() as tx:
        row = tx.execute(text("""
            SELECT id, workspace_id FROM api_keys WHERE key_hash = :hash AND revoked_at IS NULL
        """), {"hash": hash_key(key)}).one_or_none()
    return None if row is None else Principal(key_id=row.id, workspace_id=row.workspace_id)


