"""The Message Batches endpoints (Anthropic shapes).

- ``POST /v1/messages/batches`` with ``{"requests": [{"custom_id", "params"}]}`` → the batch
  object, ``processing_status: "in_progress"``;
- ``GET /v1/messages/batches/{id}`` → the batch; it is ``ended`` (with ``results_url``) once
  ``delay_ms`` has passed since creation;
- ``GET /v1/messages/batches/{id}/results`` → JSONL, one ``{custom_id, result}`` per request.

Each request is answered by the same code as ``POST /v1/messages`` (``messages.build_message``
and its fault rules), so a batch-mode job and a live-mode job get identical analyses. A status
fault becomes an ``errored`` result with that status's error type; ``reset``/``hang`` become
``errored`` ``api_error``. Batch-only faults, per session marker (``session_id=<ID>`` in the
prompt, as for live faults): ``expired``, ``canceled``, or ``errored:<error type>``, each at
most ``fail_limit[ID]`` times when a limit is given (so a retry can then succeed). Set them with
``configure(server, …)`` or ``POST /_batches`` ``{"delay_ms", "fail_session_ids",
"fail_limit"}``; ``GET /_batches`` shows them.

Batches live in memory, in the server's ``batch_state``. Nothing is logged: requests hold
transcripts.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from scheduler.dev.llm_stub.faults import (
    CONNECTION_BEHAVIOURS,
    names_session,
    pick_fault,
    raise_status_fault,
)
from scheduler.dev.llm_stub.messages import MessagesServer, build_message
from scheduler.dev.llm_stub.wire import (
    Answer,
    ApiError,
    JsonLines,
    check_api_key,
    error_type,
    parse_body,
    validate_messages_request,
)

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000
BATCH_FAULTS = ("expired", "canceled")
_RESULTS_PATH = re.compile(r"^/v1/messages/batches/([A-Za-z0-9_-]+)(/results)?$")


@dataclass
class _Batch:
    id: str
    created: datetime
    ends_at: float
    results: list[dict[str, Any]]


@dataclass
class BatchState:
    """The batch settings, the batch-fault counters and the batches of one server."""

    delay_ms: int = 0
    fail_session_ids: dict[str, str] = field(default_factory=dict)
    fail_limit: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    batches: dict[str, _Batch] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def as_json(self) -> dict[str, Any]:
        return {"delay_ms": self.delay_ms, "fail_session_ids": dict(self.fail_session_ids),
                "fail_limit": dict(self.fail_limit)}


class BatchServer(MessagesServer, Protocol):
    """A Messages server that also keeps batches."""

    batch_state: BatchState


def configure(
    server: BatchServer, *, delay_ms: int = 0,
    fail_session_ids: Mapping[str, str] | None = None,
    fail_limit: Mapping[str, int] | None = None,
) -> None:
    """Replace the batch settings (and reset the fault counters)."""
    faults = dict(fail_session_ids or {})
    for fault in faults.values():
        _check_fault(fault)
    state = server.batch_state
    with state.lock:
        state.delay_ms = int(delay_ms)
        state.fail_session_ids = faults
        state.fail_limit = {str(k): int(v) for k, v in (fail_limit or {}).items()}
        state.failed = {}


def _check_fault(fault: str) -> None:
    if fault in BATCH_FAULTS or (fault.startswith("errored:") and len(fault) > len("errored:")):
        return
    raise ValueError(f"unknown batch fault {fault!r}: expired, canceled or errored:<type>")


def owns_path(path: str) -> bool:
    return path == "/_batches" or path.startswith("/v1/messages/batches")


def handle_batches(
    server: BatchServer, method: str, path: str, headers: Mapping[str, str], raw: bytes
) -> Answer:
    if path == "/_batches":
        return _admin(server, method, raw)
    check_api_key(headers)
    if (method, path) == ("POST", "/v1/messages/batches"):
        return 200, _create(server, headers, parse_body(raw))
    match = _RESULTS_PATH.match(path)
    if method == "GET" and match:
        batch = _find(server.batch_state, match.group(1))
        if match.group(2):
            return 200, _results(batch)
        return 200, _batch_json(batch, headers)
    raise ApiError(404, f"no route for {method} {path}")


def _admin(server: BatchServer, method: str, raw: bytes) -> Answer:
    if method == "POST":
        body = parse_body(raw)
        unknown = set(body) - {"delay_ms", "fail_session_ids", "fail_limit"}
        if unknown:
            raise ApiError(400, f"unknown batch settings: {', '.join(sorted(unknown))}")
        try:
            configure(server, **body)
        except (TypeError, ValueError) as exc:
            raise ApiError(400, str(exc)) from exc
    return 200, server.batch_state.as_json()


def _create(
    server: BatchServer, headers: Mapping[str, str], body: Mapping[str, Any]
) -> dict[str, Any]:
    requests = _validated_requests(body.get("requests"))
    state = server.batch_state
    results = [_answer(server, request) for request in requests]
    now = datetime.now(UTC)
    batch = _Batch(id="msgbatch_" + secrets.token_hex(12), created=now,
                   ends_at=time.monotonic() + state.delay_ms / 1000, results=results)
    with state.lock:
        state.batches[batch.id] = batch
    return _batch_json(batch, headers)


def _validated_requests(requests: Any) -> list[dict[str, Any]]:
    if not isinstance(requests, list) or not requests:
        raise ApiError(400, "requests: must be a non-empty list")
    if len(requests) > MAX_REQUESTS:
        raise ApiError(400, f"requests: at most {MAX_REQUESTS} requests per batch")
    seen: set[str] = set()
    for index, request in enumerate(requests):
        custom_id = request.get("custom_id") if isinstance(request, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise ApiError(400, f"requests.{index}.custom_id: must match {CUSTOM_ID.pattern}")
        if custom_id in seen:
            raise ApiError(400, f"requests.{index}.custom_id: duplicate {custom_id!r}")
        if not isinstance(request.get("params"), dict):
            raise ApiError(400, f"requests.{index}.params: must be an object")
        seen.add(custom_id)
    return requests


def _answer(server: BatchServer, request: dict[str, Any]) -> dict[str, Any]:
    """One result line, answered as `POST /v1/messages` would answer the params."""
    params, custom_id = request["params"], request["custom_id"]
    batch_fault = _batch_fault(server.batch_state, params)
    if batch_fault is not None:
        return {"custom_id": custom_id, "result": _fault_result(batch_fault)}
    raw = json.dumps(params).encode()
    try:
        validate_messages_request(params)
        fault = pick_fault(server.faults, params, raw, server.next_request_number())
        if fault is not None:
            raise_status_fault(fault)
    except ApiError as error:
        return {"custom_id": custom_id, "result": _errored(error_type(error.status),
                                                           error.message)}
    if fault in CONNECTION_BEHAVIOURS:
        return {"custom_id": custom_id, "result": _errored("api_error", "internal error")}
    message = build_message(server, params, fault, batch=True)
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def _batch_fault(state: BatchState, params: Mapping[str, Any]) -> str | None:
    with state.lock:
        for marker, fault in state.fail_session_ids.items():
            if not names_session(params, marker):
                continue
            limit = state.fail_limit.get(marker)
            if limit is not None and state.failed.get(marker, 0) >= limit:
                return None
            state.failed[marker] = state.failed.get(marker, 0) + 1
            return fault
    return None


def _fault_result(fault: str) -> dict[str, Any]:
    if fault in BATCH_FAULTS:
        return {"type": fault}
    return _errored(fault.split(":", 1)[1], "injected batch fault")


def _errored(error_type_name: str, message: str) -> dict[str, Any]:
    return {"type": "errored",
            "error": {"type": "error", "error": {"type": error_type_name, "message": message}}}


def _find(state: BatchState, batch_id: str) -> _Batch:
    with state.lock:
        batch = state.batches.get(batch_id)
    if batch is None:
        raise ApiError(404, f"no batch {batch_id!r}")
    return batch


def _results(batch: _Batch) -> JsonLines:
    if time.monotonic() < batch.ends_at:
        raise ApiError(400, f"batch {batch.id} is still in progress")
    return JsonLines(batch.results)


def _batch_json(batch: _Batch, headers: Mapping[str, str]) -> dict[str, Any]:
    ended = time.monotonic() >= batch.ends_at
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if ended:
        for line in batch.results:
            counts[line["result"]["type"]] += 1
    else:
        counts["processing"] = len(batch.results)
    host = headers.get("host") or "127.0.0.1"
    return {
        "id": batch.id, "type": "message_batch",
        "processing_status": "ended" if ended else "in_progress",
        "request_counts": counts,
        "created_at": _iso(batch.created),
        "expires_at": _iso(batch.created + timedelta(hours=24)),
        "ended_at": _iso(datetime.now(UTC)) if ended else None,
        "archived_at": None, "cancel_initiated_at": None,
        # Absolute, as the real API gives it; the SDK fetches it as is.
        "results_url": f"http://{host}/v1/messages/batches/{batch.id}/results" if ended else None,
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
