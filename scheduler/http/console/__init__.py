"""The operator console: server-rendered pages under `/console`, served by `backfill api`.

Operators sign in with an admin key (it sees every workspace); the session is a sealed,
HttpOnly, SameSite=Strict cookie (`sessions`), and every state-changing button is a POST with
the session's CSRF token (`routes`). Pages are Jinja2 templates in
`scheduler/web/templates/console/`; the only script is vendored htmx, which polls fragments of
a running job's page. Failures are pages with a way back (`errors`). What the pages read
beyond the job and session documents is in `reads`; the display arithmetic in `views` and
`charts`; the change report and revert come through `changes`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from scheduler.http.console import errors, routes
from scheduler.http.console.sessions import Sealer, sealer_from_settings
from shared.settings import Settings

PREFIX = "/console"
STATIC_DIR = Path(__file__).resolve().parents[2] / "web" / "static"


def mount(app: FastAPI) -> None:
    """Serve the console under PREFIX of `app`. The console shares the app's state (database,
    settings, sealer), which the app's lifespan fills."""
    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    console.state = app.state
    errors.install(console)
    console.include_router(routes.router)
    console.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(PREFIX, console)
    app.add_api_route(PREFIX, lambda: RedirectResponse(f"{PREFIX}/", status_code=307),
                      include_in_schema=False)


def console_sealer(settings: Settings) -> Sealer | None:
    """The cookie sealer of the deployment's secret, read once at start: a malformed secret
    raises (the API must not start), an absent one is None (sign-in says how to make one)."""
    return sealer_from_settings(settings)
