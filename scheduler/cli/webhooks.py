"""Webhook verbs: `backfill webhook add|list|remove` (`scheduler.webhooks.registry`).

`add` prints the endpoint's secret once; without BACKFILL_SECRET_KEY it is refused (exit 2)
with a message saying how to make one (`backfill secret-key`). A URL the address rule refuses
exits 2 with `error: url: …`; so does an id that matches no webhook: it is a bad argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from scheduler.cli.common import JsonFlag, Workspace, app, emit, guarded
from scheduler.cli.runtime import open_database, resolve_settings
from shared.errors import InvalidInput, NotFound

T = TypeVar("T")

webhook_app = typer.Typer(help="Webhook endpoints told when a backfill completes, pauses or "
                               "is cancelled.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")


@webhook_app.command("add")
def webhook_add(
    workspace: Workspace,
    url: Annotated[str, typer.Option("--url", help="https:// URL resolving to public "
                                                   "addresses.")],
    as_json: JsonFlag = False,
) -> None:
    """Register an endpoint of a workspace; prints its signing secret once."""
    from scheduler.jobs import audit
    from scheduler.webhooks import registry

    settings = resolve_settings()
    db = open_database(settings)
    new = guarded(lambda: registry.add_webhook(db, settings, workspace, url,
                                               actor=audit.os_actor()))
    if as_json:
        emit(new.as_json())
        return
    typer.echo(f"id      {new.id}\nurl     {new.url}\nsecret  {new.secret}")
    typer.echo("the secret signs every event (Backfill-Signature header) and is shown once: "
               "store it now", err=True)


@webhook_app.command("list")
def webhook_list(
    workspace: Annotated[str | None, typer.Option("--workspace", "-w")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Active endpoints (of one workspace, or all) and how their deliveries stand."""
    from scheduler.webhooks import registry

    with open_database(resolve_settings()).transaction() as tx:
        webhooks = registry.list_webhooks(tx, workspace)
    if as_json:
        emit(webhooks)
        return
    for webhook in webhooks:
        typer.echo(_line(webhook))
    if not webhooks:
        typer.echo("no webhooks", err=True)


@webhook_app.command("remove")
def webhook_remove(
    webhook_id: Annotated[str, typer.Argument(help="The webhook id (wh_…).")],
) -> None:
    """Remove an endpoint; its pending deliveries are given up."""
    from scheduler.jobs import audit
    from scheduler.webhooks import registry

    db = open_database(resolve_settings())
    workspace = guarded(lambda: _as_bad_argument(lambda: registry.remove_webhook(
        db, webhook_id, actor=audit.os_actor())))
    typer.echo(f"{webhook_id} of workspace {workspace}: removed")


def _as_bad_argument(action: Callable[[], T]) -> T:
    # An id given on the command line that matches nothing is a bad argument (exit 2).
    try:
        return action()
    except NotFound as exc:
        raise InvalidInput(str(exc)) from None


def _line(webhook: dict[str, Any]) -> str:
    deliveries = webhook["deliveries"]
    return (f"{webhook['id']}  {webhook['workspace_id']}  {webhook['url']}  "
            f"pending {deliveries['pending']}, delivered {deliveries['delivered']}, "
            f"gave up {deliveries['gave_up']}")
