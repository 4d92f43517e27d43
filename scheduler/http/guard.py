"""The gate in front of every `/v1` request, as plain ASGI middleware.

Order matters and is the contract: the bearer key is checked first (a missing or wrong key is
401 even for ids that do not exist, and before any body is read), then the body is bounded
(over 1 MiB: 413) and must be JSON (else 400). FastAPI reads and decodes bodies before it runs
dependencies, so a dependency could not give the key precedence; this middleware can.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.http.errors import error_response
from scheduler.jobs import keys
from shared.db import Database

MAX_BODY_BYTES = 1024 * 1024
PRINCIPAL = "principal"  # key of the authenticated Principal in the request's scope state


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        refusal = await self._authenticate(scope) or _repeated_query_parameter(scope)
        body = b""
        if refusal is None:
            refusal, body = await self._read_body(scope, receive)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if body and _header(scope, b"content-type") is None:
            # A JSON body without a content type is still JSON: say so, so that the framework
            # decodes it rather than refusing raw bytes.
            scope["headers"] = [*scope.get("headers", ()), (b"content-type", b"application/json")]
        await self.app(scope, _replay(body, receive), send)

    async def _authenticate(self, scope: Scope) -> Responder | None:
        db: Database = scope["app"].state.db
        try:
            principal = await run_in_threadpool(keys.authenticate, db,
                                                _header(scope, b"authorization"))
        except OperationalError:
            return error_response(503, "the database is unavailable; retry later")
        if principal is None:
            return error_response(401, "a valid API key is required (Authorization: Bearer …)",
                                  headers={"WWW-Authenticate": "Bearer"})
        scope.setdefault("state", {})[PRINCIPAL] = principal
        return None

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[Responder | None, bytes]:
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return _too_large(self.max_body) if declared.isdigit() else _bad_length(), b""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _gone, b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:  # chunked bodies declare no length: count as they come
                return _too_large(self.max_body), b""
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        return (None if not body or is_json(body) else _not_json()), body


Responder = Callable[[Scope, Receive, Send], Awaitable[None]]


def _protected(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def is_json(body: bytes) -> bool:
    """Strict RFC 8259: UTF-8, no NaN/Infinity. Nesting deep enough to exhaust the parser's
    recursion is refused too, rather than left to fail later."""
    try:
        json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return False
    return True


def _repeated_query_parameter(scope: Scope) -> Responder | None:
    """Every query parameter is a single value; the framework would silently keep the last
    of several, so a repeated one is refused instead of half-honoured."""
    query = scope.get("query_string", b"").decode("latin-1")
    names = Counter(name for name, _ in parse_qsl(query, keep_blank_values=True))
    repeated = sorted(name for name, count in names.items() if count > 1)
    if not repeated:
        return None
    return error_response(422, f"query parameter {repeated[0]!r} is given more than once")


def _too_large(limit: int) -> Responder:
    return error_response(413, f"the body is larger than {limit} bytes")


def _bad_length() -> Responder:
    return error_response(400, "Content-Length is not a number", error_type="bad_request")


def _not_json() -> Responder:
    return error_response(400, "the body is not valid JSON")


async def _gone(scope: Scope, receive: Receive, send: Send) -> None:
    """The client left while sending its body: nobody is there to answer."""


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the body we already read to the app, then pass later messages (disconnect) on."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
