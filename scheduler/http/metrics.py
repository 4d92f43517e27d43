"""The API's own numbers: every request counted by route template and status, and timed
(`backfill_http_requests_total`, `backfill_http_request_duration_seconds`), served with the
process's other metrics at `GET /metrics`, without a key (like `/healthz`: the guard protects
`/v1` only; no label holds an id or a key).

Labels stay bounded whatever a client sends: the route is the matched template
(`/v1/backfills/{job_id}`), or `unmatched` (unknown paths, and requests the guard refused
before routing); a method outside HTTP's usual ones is `OTHER`.
"""

from __future__ import annotations

import time

from fastapi import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class RequestMetrics:
    """Outermost ASGI middleware: it sees every answer, the guard's refusals included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = _route_template(scope)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_REQUEST_DURATION.labels(route).observe(time.perf_counter() - started)


def _route_template(scope: Scope) -> str:
    # The router records the route it matched in the (shared) scope.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


def metrics_endpoint() -> Response:
    """Prometheus text format of this process's metrics."""
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
