"""Every failure of a console request as a page a person can act on: what went wrong, and a
link back. Nothing here leaks a traceback, SQL or another workspace's data; an unexpected
error is logged by the server and shown as a plain 500 page.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler.http.console import pages
from scheduler.http.console.forms import FormTooLarge
from scheduler.http.errors import describe
from scheduler.jobs.operations import JobStateConflict
from shared.errors import EnvironmentProblem, InvalidInput, NotFound

log = logging.getLogger("backfill.console")


class SignInRequired(Exception):
    """No valid session: the cookie is missing, altered or expired, or its key was revoked."""


class CsrfRefused(Exception):
    """A form came without this session's CSRF token (stale page, or another site)."""

    def __init__(self, back: str) -> None:
        super().__init__("the form's security token does not match this session")
        self.back = back


def _back(request: Request) -> tuple[str, str]:
    """Where a person goes from a failed request: the page of the job or session it was about."""
    base = pages.root(request)
    job_id = request.path_params.get("job_id")
    if job_id:
        return f"{base}/jobs/{job_id}", "Back to the job"
    return f"{base}/jobs", "Back to the jobs"


async def _sign_in_required(request: Request, _: Exception) -> Response:
    base = pages.root(request)
    sign_in = f"{base}/sign-in"
    if pages.is_fragment_request(request):
        # An htmx poll of an expired session: navigate the whole page, not the fragment.
        return Response(status_code=200, headers={"HX-Redirect": sign_in})
    if request.method in {"GET", "HEAD"}:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{sign_in}?{urlencode({'next': target})}", status_code=303,
                                headers=pages.PAGE_HEADERS)
    return pages.error_page(request, 403, "Your session has ended",
                            "Sign in again; nothing was changed.", back=sign_in,
                            back_label="Sign in")


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    back = exc.back if isinstance(exc, CsrfRefused) else pages.root(request)
    return pages.error_page(request, 403, "This form has expired",
                            "Its security token does not match your session, so nothing was "
                            "changed. Go back, reload the page and try again.",
                            back=back, back_label="Go back")


async def _not_found(request: Request, exc: Exception) -> Response:
    return pages.error_page(request, 404, "Not found", str(exc))


async def _conflict(request: Request, exc: Exception) -> Response:
    back, label = _back(request)
    return pages.error_page(request, 409, "Not possible now", str(exc), back=back,
                            back_label=label)


async def _invalid(request: Request, exc: Exception) -> Response:
    back, label = _back(request)
    status = 413 if isinstance(exc, FormTooLarge) else 422
    return pages.error_page(request, status, "That request was refused", str(exc), back=back,
                            back_label=label)


async def _invalid_query(request: Request, exc: Exception) -> Response:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    back, label = _back(request)
    message = "; ".join(describe(error) for error in errors[:5]) or "invalid request"
    return pages.error_page(request, 422, "That request was refused", message, back=back,
                            back_label=label)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    title = "Not found" if exc.status_code == 404 else "That request was refused"
    message = "There is no such page in the console." if exc.status_code == 404 \
        else str(exc.detail)
    return pages.error_page(request, exc.status_code, title, message)


async def _unavailable(request: Request, exc: Exception) -> Response:
    log.warning("console: environment problem: %s", type(exc).__name__)
    return pages.error_page(request, 503, "The database is unavailable",
                            "The console cannot read or change jobs right now; retry in a "
                            "moment.", back=request.url.path, back_label="Retry")


async def _unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return await _unavailable(request, exc)
    log.error("console: unexpected error", exc_info=exc)
    return pages.error_page(request, 500, "Something went wrong",
                            "The server logged the error; nothing more is shown here.")


def install(app: FastAPI) -> None:
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(JobStateConflict, _conflict)
    app.add_exception_handler(InvalidInput, _invalid)
    app.add_exception_handler(RequestValidationError, _invalid_query)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _unavailable)
    app.add_exception_handler(EnvironmentProblem, _unavailable)
    app.add_exception_handler(Exception, _unexpected)
