"""One error shape for every HTTP error: `{"error": {"type", "message", "filter_index"?}}`.

Bad input is a 4xx with a message a client can act on; never a 5xx. A database that cannot be
reached is a 503, and so is a deployment without the BACKFILL_SECRET_KEY a webhook needs (the
operator's to fix, not the client's); anything else unexpected is a 500 without details (the
server logs it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler.jobs.operations import JobStateConflict
from scheduler.webhooks.secretbox import SecretKeyMissing
from shared.errors import (
    BackfillError,
    EnvironmentProblem,
    InvalidFilter,
    InvalidInput,
    NotFound,
)

log = logging.getLogger("backfill.api")

_TYPE_BY_STATUS = {
    400: "bad_json", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "too_large", 422: "invalid_input", 503: "unavailable",
}


def error_body(error_type: str, message: str, *, filter_index: int | None = None
               ) -> dict[str, Any]:
    detail: dict[str, Any] = {"type": error_type, "message": message}
    if filter_index is not None:
        detail["filter_index"] = filter_index
    return {"error": detail}


def error_response(status: int, message: str, *, error_type: str | None = None,
                   filter_index: int | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    kind = error_type or _TYPE_BY_STATUS.get(status, "error")
    return JSONResponse(error_body(kind, message, filter_index=filter_index),
                        status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(BackfillError, _backfill_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(Exception, _unexpected)


async def _backfill_error(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, EnvironmentProblem):
        log.warning("environment problem: %s", exc)
        return error_response(503, str(exc))
    if isinstance(exc, SecretKeyMissing):
        log.warning("a webhook was refused: BACKFILL_SECRET_KEY is not set")
        return error_response(503, str(exc))
    if isinstance(exc, NotFound):
        return error_response(404, str(exc))
    if isinstance(exc, JobStateConflict):
        return error_response(409, str(exc))
    if isinstance(exc, InvalidFilter):
        return error_response(422, str(exc), error_type="invalid_filter",
                              filter_index=exc.index)
    if isinstance(exc, InvalidInput):
        return error_response(422, str(exc))
    return await _unexpected(_, exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    errors: Sequence[Any] = exc.errors() if isinstance(exc, RequestValidationError) else []
    if any(_is_not_json(error) for error in errors):
        return error_response(400, "the body is not JSON (send Content-Type: application/json)")
    messages = [describe(error) for error in errors[:5]]
    return error_response(422, "; ".join(messages) or "invalid request")


def _is_not_json(error: Any) -> bool:
    # A JSON decode error, or a body FastAPI did not decode because of its content type.
    body_root = tuple(error.get("loc", ())) == ("body",)
    return error.get("type") == "json_invalid" or (
        body_root and isinstance(error.get("input"), bytes | bytearray))


def describe(error: Any) -> str:
    """`filters[1]: …`, `options.limit: …`, `query.limit: …` from a pydantic error."""
    location = list(error.get("loc", ()))
    if location and location[0] == "body":
        location = location[1:]
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{path or 'body'}: {message}"


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, str(exc.detail), headers=headers)


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return error_response(503, "the database is unavailable; retry later")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return await _database_unavailable(_, exc)
    # Starlette re-raises after this answer, so the server logs the traceback once.
    return error_response(500, "internal error", error_type="internal")
