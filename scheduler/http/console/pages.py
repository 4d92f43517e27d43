"""Rendering the console's pages: one Jinja2 environment, the headers every page carries, and
the error pages (a person gets a page with a way back, never JSON or a traceback).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

from jinja2 import Environment
from starlette.requests import Request
from starlette.responses import HTMLResponse

from scheduler.http.console import views
from scheduler.http.console.sessions import ConsoleSession
from scheduler.web import template_environment
from shared.vocabulary import ITEM_STATES

# Scripts only from the console itself (htmx, vendored); inline styles are allowed because the
# shared change-report partial and the progress bars set widths and colours per value.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'")
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages hold customers' data and a CSRF token: never kept by a shared cache or the
    # browser's back-forward store.
    "Cache-Control": "no-store",
    "Vary": "HX-Request, Cookie",
}


@cache
def environment() -> Environment:
    # One environment per process keeps Jinja's compiled templates; the console's filters are
    # added to its own environment, not to the shared report one.
    env = template_environment()
    env.filters.update(
        when=views.when_text, duration=views.duration_text, usd=views.usd_text,
        rate=views.rate_text,
    )
    env.globals.update(ITEM_STATES=ITEM_STATES, ACTION_LABELS=views.ACTION_LABELS)
    return env


def root(request: Request) -> str:
    """The console's path prefix as the browser sees it (behind a proxy too)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def is_fragment_request(request: Request) -> bool:
    """An htmx poll, which wants the fragment, not the whole page."""
    return request.headers.get("hx-request") == "true"


def render(request: Request, template: str, *, session: ConsoleSession | None,
           status: int = 200, headers: dict[str, str] | None = None,
           **context: Any) -> HTMLResponse:
    html = environment().get_template(f"console/{template}").render(
        base=root(request), session=session, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


def error_page(request: Request, status: int, title: str, message: str, *,
               session: ConsoleSession | None = None, back: str | None = None,
               back_label: str = "Back to the jobs") -> HTMLResponse:
    return render(request, "error.html", session=session, status=status, title=title,
                  message=message, back=back or f"{root(request)}/jobs", back_label=back_label,
                  code=status)
