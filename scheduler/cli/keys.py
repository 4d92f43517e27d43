"""API-key verbs: create (printed once; only its hash is stored) and revoke."""

from __future__ import annotations

from typing import Annotated

import typer

from scheduler.cli.common import JsonFlag, Workspace, api_key_app, emit, guarded
from scheduler.cli.runtime import open_database, resolve_settings


@api_key_app.command("create")
def api_key_create(workspace: Workspace, as_json: JsonFlag = False) -> None:
    """A new key for one workspace, printed once: only its hash is stored."""
    from scheduler.jobs import audit, keys

    db = open_database(resolve_settings())
    new = guarded(lambda: keys.create_key(db, workspace, audit.os_actor()))
    if as_json:
        emit({"key": new.key, "key_id": new.key_id, "workspace_id": new.workspace_id})
        return
    typer.echo(new.key)
    typer.echo(f"key id {new.key_id} for workspace {workspace}: shown once, store it now",
               err=True)


@api_key_app.command("revoke")
def api_key_revoke(key_id: Annotated[str, typer.Argument(help="The key id (key_…).")]) -> None:
    """Revoke a key by its id; requests with it answer 401 from now on."""
    from scheduler.jobs import audit, keys

    db = open_database(resolve_settings())
    workspace = guarded(lambda: keys.revoke_key(db, key_id, audit.os_actor()))
    typer.echo(f"{key_id} of workspace {workspace}: revoked")
