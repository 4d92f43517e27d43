"""API-key verbs: create (printed once; only its hash is stored) and revoke."""

from __future__ import annotations

from typing import Annotated

import typer

from scheduler.cli.common import JsonFlag, api_key_app, emit, guarded
from scheduler.cli.runtime import open_database, resolve_settings
from shared.errors import InvalidInput

KeyWorkspace = Annotated[str | None, typer.Option(
    "--workspace", "-w", help="The workspace the key belongs to.")]
AdminFlag = Annotated[bool, typer.Option(
    "--admin", help="An admin key for the operator console: every workspace, no API access.")]


@api_key_app.command("create")
def api_key_create(workspace: KeyWorkspace = None, admin: AdminFlag = False,
                   as_json: JsonFlag = False) -> None:
    """A new key for one workspace (--workspace W) or for the console (--admin), printed
    once: only its hash is stored."""
    from scheduler.jobs import audit, keys

    guarded(lambda: _one_owner(workspace, admin))
    db = open_database(resolve_settings())
    actor = audit.os_actor()
    new = guarded(lambda: keys.create_admin_key(db, actor) if workspace is None
                  else keys.create_key(db, workspace, actor))
    if as_json:
        # A workspace key's document is as it always was; an admin key's says what it is.
        emit({"key": new.key, "key_id": new.key_id, "workspace_id": new.workspace_id}
             | ({"admin": True} if new.admin else {}))
        return
    typer.echo(new.key)
    owner = "the operator console (admin)" if new.admin else f"workspace {workspace}"
    typer.echo(f"key id {new.key_id} for {owner}: shown once, store it now", err=True)


def _one_owner(workspace: str | None, admin: bool) -> None:
    if admin == (workspace is not None):
        raise InvalidInput("give exactly one of --workspace W (a workspace key) and --admin "
                           "(an operator console key)")


@api_key_app.command("revoke")
def api_key_revoke(key_id: Annotated[str, typer.Argument(help="The key id (key_…).")]) -> None:
    """Revoke a key by its id; requests with it answer 401 from now on."""
    from scheduler.jobs import audit, keys

    db = open_database(resolve_settings())
    workspace = guarded(lambda: keys.revoke_key(db, key_id, audit.os_actor()))
    owner = "(admin key)" if workspace is None else f"of workspace {workspace}"
    typer.echo(f"{key_id} {owner}: revoked")
