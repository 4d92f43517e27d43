"""Bearer API keys. Only a SHA-256 of the key is stored; the key is shown once.

A key is 256 random bits, so a plain (unsalted, fast) hash is enough: nobody can brute-force
the preimage, and a lookup by hash needs no per-key salt. A workspace key belongs to one
workspace, and the workspace of an API request always comes from its key, never from the
request body. An admin key belongs to no workspace: it opens the operator console, which sees
every workspace, and never the `/v1` API, whose every call needs the caller's workspace.
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
class Admin:
    """An operator signed in to the console with an admin key: sees and acts on every
    workspace; audited as the key."""

    key_id: str

    @property
    def actor(self) -> str:
        return f"api_key:{self.key_id}"


@dataclass(frozen=True)
class NewKey:
    key_id: str
    workspace_id: str | None  # None for an admin key
    key: str  # the secret itself: print it once, never store or log it

    @property
    def admin(self) -> bool:
        return self.workspace_id is None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def create_key(db: Database, workspace_id: str, actor: str) -> NewKey:
    """A new key for an existing workspace; the creation is audited (by id, not secret)."""
    return _create(db, workspace_id, actor)


def create_admin_key(db: Database, actor: str) -> NewKey:
    """A new admin key (the operator console); audited under no workspace."""
    return _create(db, None, actor)


_INSERT_KEY = text("""
    INSERT INTO api_keys (id, workspace_id, admin, key_hash, created_by)
    VALUES (:id, :ws, :admin, :hash, :actor)
""")


def _create(db: Database, workspace_id: str | None, actor: str) -> NewKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(8)
    with db.transaction() as tx:
        if workspace_id is not None:
            require_workspace(tx, workspace_id)
        tx.execute(_INSERT_KEY, {"id": key_id, "ws": workspace_id, "hash": hash_key(key),
                                 "admin": workspace_id is None, "actor": actor})
        audit.record(tx, workspace_id=workspace_id, job_id=None, actor=actor,
                     action="api_key_create",
                     details={"key_id": key_id, "admin": workspace_id is None})
    return NewKey(key_id=key_id, workspace_id=workspace_id, key=key)


def revoke_key(db: Database, key_id: str, actor: str) -> str | None:
    """Revoke a key by id; returns its workspace (None for an admin key). Requests with it are
    refused from now on, and a console session opened with it ends."""
    with db.transaction() as tx:
        row = tx.execute(text("""
            UPDATE api_keys SET revoked_at = coalesce(revoked_at, clock_timestamp())
             WHERE id = :id RETURNING workspace_id
        """), {"id": key_id}).one_or_none()
        if row is None:
            raise NotFound(f"no API key {key_id!r}")
        audit.record(tx, workspace_id=row.workspace_id, job_id=None, actor=actor,
                     action="api_key_revoke", details={"key_id": key_id})
    return None if row.workspace_id is None else str(row.workspace_id)


def parse_bearer(header: str | None) -> str | None:
    """The key from an `Authorization: Bearer KEY` header, or None when absent or malformed."""
    if not header:
        return None
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > MAX_KEY_LENGTH:
        return None
    return key


_BY_HASH = text("""
    SELECT id, workspace_id, admin FROM api_keys WHERE key_hash = :hash AND revoked_at IS NULL
""")


def identify(db: Database, key: str) -> Principal | Admin | None:
    """Whose key this is: a workspace's, an admin's, or nobody's (unknown or revoked)."""
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    with db.transaction() as tx:
        row = tx.execute(_BY_HASH, {"hash": hash_key(key)}).one_or_none()
    if row is None:
        return None
    if row.admin:
        return Admin(key_id=row.id)
    return Principal(key_id=row.id, workspace_id=row.workspace_id)


def authenticate(db: Database, header: str | None) -> Principal | None:
    """The principal of a valid, unrevoked workspace key; None for anything else, an admin
    key included (the caller says 401)."""
    key = parse_bearer(header)
    found = None if key is None else identify(db, key)
    return found if isinstance(found, Principal) else None


def admin_key_active(db: Database, key_id: str) -> bool:
    """Whether an admin key is still unrevoked: a console session lives only as long as its
    key does."""
    with db.transaction() as tx:
        return tx.execute(text("""
            SELECT 1 FROM api_keys WHERE id = :id AND admin AND revoked_at IS NULL
        """), {"id": key_id}).first() is not None
