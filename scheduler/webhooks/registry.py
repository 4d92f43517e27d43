"""A workspace's webhook endpoints: add, list, remove (CLI `backfill webhook …`, HTTP
`/v1/webhooks`).

Adding needs the deployment's key first (without BACKFILL_SECRET_KEY nothing is checked or
stored: `SecretKeyMissing`), then a URL that passes the address rule (`addresses.check_url`;
stored normalised). The endpoint's secret is made here, returned once and stored encrypted, so
a database dump alone does not reveal it. Removing an endpoint gives up its pending deliveries
in the same transaction. Adds and removals are audited with the webhook's id, never its secret
or its URL (the URL may carry a token; logs name the id only).

`workspace_id` scopes a lookup like the job operations do: the HTTP API passes the caller's
(another workspace's webhook is not found), the operator CLI passes None.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from scheduler.jobs import audit
from scheduler.webhooks.addresses import Resolver, check_url, system_resolve
from scheduler.webhooks.secretbox import deployment_box
from scheduler.webhooks.signing import new_secret
from shared.db import Database
from shared.errors import InvalidInput, NotFound
from shared.settings import Settings

# Every endpoint gets every event of its workspace; this bounds the fan-out (and keeps a
# listing one page long).
MAX_WEBHOOKS_PER_WORKSPACE = 20

_LOCK_WORKSPACE = text("SELECT id FROM workspaces WHERE id = :ws FOR NO KEY UPDATE")
_COUNT_ACTIVE = text("""
    SELECT count(*) FROM webhooks WHERE workspace_id = :ws AND removed_at IS NULL
""")
_INSERT = text("""
    INSERT INTO webhooks (id, workspace_id, url, secret_encrypted, created_by)
    VALUES (:id, :ws, :url, :secret, :created_by)
""")
_LIST = text("""
    SELECT w.id, w.workspace_id, w.url, w.created_by, w.created_at,
           count(d.event_id) FILTER (WHERE d.delivered_at IS NULL AND d.gave_up_at IS NULL)
               AS pending,
           count(d.event_id) FILTER (WHERE d.delivered_at IS NOT NULL) AS delivered,
           count(d.event_id) FILTER (WHERE d.gave_up_at IS NOT NULL) AS gave_up
      FROM webhooks AS w LEFT JOIN webhook_deliveries AS d ON d.webhook_id = w.id
     WHERE w.removed_at IS NULL
       AND (CAST(:ws AS text) IS NULL OR w.workspace_id = CAST(:ws AS text))
     GROUP BY w.id
     ORDER BY w.workspace_id, w.created_at, w.id
""")
_REMOVE = text("""
    UPDATE webhooks SET removed_at = clock_timestamp()
     WHERE id = :id AND removed_at IS NULL
       AND (CAST(:ws AS text) IS NULL OR workspace_id = CAST(:ws AS text))
 RETURNING workspace_id
""")
_GIVE_UP_PENDING = text("""
    UPDATE webhook_deliveries
       SET gave_up_at = clock_timestamp(), last_error = 'the webhook was removed'
     WHERE webhook_id = :id AND delivered_at IS NULL AND gave_up_at IS NULL
""")


@dataclass(frozen=True)
class NewWebhook:
    """What `add` shows once: the secret is not shown again."""

    id: str
    url: str
    secret: str

    def as_json(self) -> dict[str, str]:
        return {"id": self.id, "url": self.url, "secret": self.secret}


def new_webhook_id() -> str:
    return "wh_" + secrets.token_hex(10)


def add_webhook(db: Database, settings: Settings, workspace_id: str, url: str, *, actor: str,
                resolve: Resolver = system_resolve) -> NewWebhook:
    """A new endpoint of the workspace; InvalidInput naming the URL's problem otherwise."""
    box = deployment_box(settings.secret_key)
    # Resolved before the transaction: a slow name server holds no lock.
    checked = check_url(url, allow_private=settings.webhook_allow_private, resolve=resolve)
    secret = new_secret()
    webhook_id = new_webhook_id()
    with db.transaction() as tx:
        _lock_room_for_one_more(tx, workspace_id)
        tx.execute(_INSERT, {"id": webhook_id, "ws": workspace_id, "url": checked.url,
                             "secret": box.encrypt(secret), "created_by": actor})
        audit.record(tx, workspace_id=workspace_id, job_id=None, actor=actor,
                     action="webhook_add", details={"webhook_id": webhook_id})
    return NewWebhook(webhook_id, checked.url, secret)


def list_webhooks(tx: Connection, workspace_id: str | None) -> list[dict[str, Any]]:
    """Active endpoints (all workspaces' when None), with how their deliveries stand."""
    return [{
        "id": row.id, "workspace_id": row.workspace_id, "url": row.url,
        "created_by": row.created_by, "created_at": row.created_at.isoformat(),
        "deliveries": {"pending": row.pending, "delivered": row.delivered,
                       "gave_up": row.gave_up},
    } for row in tx.execute(_LIST, {"ws": workspace_id})]


def remove_webhook(db: Database, webhook_id: str, *, actor: str,
                   workspace_id: str | None = None) -> str:
    """Removes the endpoint and gives up its pending deliveries; returns its workspace."""
    with db.transaction() as tx:
        owner = tx.execute(_REMOVE, {"id": webhook_id, "ws": workspace_id}).scalar_one_or_none()
        if owner is None:
            raise NotFound(f"no webhook {webhook_id!r}")
        tx.execute(_GIVE_UP_PENDING, {"id": webhook_id})
        audit.record(tx, workspace_id=owner, job_id=None, actor=actor,
                     action="webhook_remove", details={"webhook_id": webhook_id})
    return str(owner)


def _lock_room_for_one_more(tx: Connection, workspace_id: str) -> None:
    # The workspace row's lock orders concurrent adds, so the count below stays true.
    if tx.execute(_LOCK_WORKSPACE, {"ws": workspace_id}).first() is None:
        raise InvalidInput(f"workspace: no workspace {workspace_id!r}")
    if tx.execute(_COUNT_ACTIVE, {"ws": workspace_id}).scalar_one() >= MAX_WEBHOOKS_PER_WORKSPACE:
        raise InvalidInput(f"workspace {workspace_id} already has {MAX_WEBHOOKS_PER_WORKSPACE} "
                           "webhooks: remove one first")
