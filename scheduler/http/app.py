"""The HTTP API for the Actions menu and integrations (`backfill api`): FastAPI on uvicorn.

One `Database` per app, built in the lifespan from settings, so importing this module opens
no connection. The request guard authenticates every `/v1` request before routing (`guard`);
errors have one shape (`errors`); the endpoints are `routes`, `changes` (change reports,
promote, revert) and `webhooks`; `/metrics` and the request counters are `metrics`; the
operator console is `console`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from scheduler.http import changes, console, errors, routes, webhooks
from scheduler.http.guard import RequestGuard
from scheduler.http.metrics import RequestMetrics, metrics_endpoint
from scheduler.http.schemas import Health
from shared.broker import broker_reachable, redis_client_url
from shared.db import Database
from shared.migrate import require_schema_at_head
from shared.settings import Settings, get_settings

API_POOL_SIZE = 10


# ------------------------------------------------------------------------------ health


def healthz(request: Request) -> JSONResponse:
    """Postgres answers a query and the broker answers PING. No key needed."""
    settings: Settings = request.app.state.settings
    postgres = _postgres_ok(request.app.state.db)
    broker = bool(settings.broker_url) and broker_reachable(
        redis_client_url(settings.broker_url or ""), timeout_s=2.0)
    document = {
        "status": "ok" if postgres and broker else "unavailable",
        "postgres": "ok" if postgres else "unavailable",
        "broker": "ok" if broker else "unavailable",
    }
    return JSONResponse(document, status_code=200 if postgres and broker else 503)


def _postgres_ok(db: Database) -> bool:
    try:
        with db.transaction() as tx:
            tx.execute(text("SELECT 1"))
    except Exception:  # any failure means "not healthy"; the body says which service
        return False
    return True


# ------------------------------------------------------------------------------ app


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app. Settings are read when the app starts, not when it is built."""

    # A malformed BACKFILL_SECRET_KEY stops `backfill api` here, before it serves (one line,
    # exit 3); an app built without settings finds out in its lifespan.
    sealer = console.console_sealer(settings) if settings is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or get_settings()
        app.state.settings = resolved
        app.state.console_sealer = sealer or console.console_sealer(resolved)
        app.state.db = Database.from_settings(resolved, pool_size=API_POOL_SIZE)
        try:
            require_schema_at_head(app.state.db, resolved.database_url)
            yield
        finally:
            app.state.db.dispose()

    app = FastAPI(
        title="Post-call analysis backfill",
        version="1",
        summary="Re-run post-call/post-chat analysis over session history.",
        description="Every `/v1` endpoint needs `Authorization: Bearer <API key>`; the key "
                    "decides the workspace. Errors answer `{\"error\": {\"type\", "
                    "\"message\"}}`.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(RequestGuard)
    app.add_middleware(RequestMetrics)  # added last, so outermost: it counts the guard's answers
    app.include_router(routes.v1)
    app.include_router(changes.v1)
    app.include_router(webhooks.router)
    app.add_api_route("/healthz", healthz, methods=["GET"], response_model=Health,
                      responses={503: {"model": Health, "description": "A service is down."}},
                      tags=["health"])
    # For Prometheus, not for clients: no key, and not in the OpenAPI document.
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    console.mount(app)
    return app
