"""`/v1/webhooks`: the caller's workspace's webhook endpoints (`scheduler.webhooks.registry`).

The workspace comes from the key, so another workspace's webhook is a 404. `POST` answers 201
with `{id, url, secret}`: the only time the secret is shown. A URL the address rule refuses is
a 422 whose message starts with `url:`; a server without BACKFILL_SECRET_KEY answers 503 saying
how to set one (the operator's to fix). `DELETE` answers 204 and ends the endpoint's pending
deliveries.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from fastapi import Path as PathParam
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from scheduler.http.routes import (
    COMMON_ERRORS,
    Caller,
    Conf,
    Db,
    error_response_spec,
    known_id,
)
from scheduler.http.schemas import storable
from scheduler.webhooks import registry

router = APIRouter(prefix="/v1", responses=COMMON_ERRORS, tags=["webhooks"])

WebhookId = Annotated[str, PathParam(description="A webhook id (`wh_…`).")]
# The URL rule (its length included) is the registry's: one message for the CLI and HTTP.
Url = Annotated[str, StringConstraints(min_length=1), AfterValidator(storable)]


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"url": "https://hooks.example.com/backfill"}]})

    url: Url = Field(description="`https://`, resolving to public addresses only.")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class NewWebhook(_Response):
    id: str
    url: str = Field(description="The URL as stored (normalised).")
    secret: str = Field(description="Signs every event (`Backfill-Signature`); shown once.")


class Deliveries(_Response):
    pending: int
    delivered: int
    gave_up: int


class Webhook(_Response):
    id: str
    workspace_id: str
    url: str
    created_by: str | None
    created_at: str
    deliveries: Deliveries


class WebhookPage(_Response):
    items: list[Webhook]
    next_cursor: str | None = Field(
        description="Always null: a workspace has at most "
                    f"{registry.MAX_WEBHOOKS_PER_WORKSPACE} webhooks, one page.")


@router.post("/webhooks", status_code=201, response_model=NewWebhook,
             responses={503: error_response_spec("BACKFILL_SECRET_KEY is not set on the server.")})
def add_webhook(body: WebhookRequest, caller: Caller, db: Db, settings: Conf) -> dict[str, str]:
    """Register an endpoint; every completed, paused or cancelled backfill of the workspace is
    POSTed to it, signed with the secret answered here."""
    return registry.add_webhook(db, settings, caller.workspace_id, body.url,
                                actor=caller.actor).as_json()


@router.get("/webhooks", response_model=WebhookPage)
def list_webhooks(caller: Caller, db: Db) -> dict[str, Any]:
    """The workspace's endpoints (without their secrets) and how their deliveries stand."""
    with db.transaction() as tx:
        return {"items": registry.list_webhooks(tx, caller.workspace_id), "next_cursor": None}


@router.delete("/webhooks/{webhook_id}", status_code=204, response_class=Response,
               responses={404: error_response_spec("No such webhook in the key's workspace.")})
def remove_webhook(webhook_id: WebhookId, caller: Caller, db: Db) -> Response:
    """Remove an endpoint; its pending deliveries are given up."""
    registry.remove_webhook(db, known_id(webhook_id), actor=caller.actor,
                            workspace_id=caller.workspace_id)
    return Response(status_code=204)
