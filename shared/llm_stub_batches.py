"""The stand-in's Message Batches endpoints (Anthropic shapes), hooked into `llm_stub.route`.

- ``POST /v1/messages/batches`` with ``{"requests": [{"custom_id", "params"}]}`` → the batch
  object, ``processing_status: "in_progress"``;
- ``GET /v1/messages/batches/{id}`` → the batch; it is ``ended`` (with ``results_url``) once
  ``delay_ms`` has passed since creation;
- ``GET /v1/messages/batches/{id}/results`` → JSONL, one ``{custom_id, result}`` per request.

Each request is answered by the same code as ``POST /v1/messages`` (``llm_stub.build_message``
and its fault rules), so a batch-mode job and a live-mode job get identical analyses. A status
fault becomes an ``errored`` result with that status's error type; ``reset``/``hang`` become
``errored`` ``api_error``. Batch-only faults, per session marker (``session_id=<ID>`` in the
prompt, as for live faults): ``expired``, ``canceled``, or ``errored:<error type>``, each at
most ``fail_limit[ID]`` times when a limit is given (so a retry can then succeed). Set them with
``configure(server, …)`` or ``POST /_batches`` ``{"delay_ms", "fail_session_ids",
"fail_limit"}``; ``GET /_batches`` shows them.

Batches live in memory, per server. Nothing is logged: requests hold transcripts.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import llm_stub as stub

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000
BATCH_FAULTS = ("expired", "canceled")
_RESULTS_PATH = re.compile(r"^/v1/messages/batches/([A-Za-z0-9_-]+)(/results)?$")


class JsonLines(dict[str, Any]):
    """An answer whose body is JSON Lines, not one JSON document (the results file)."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        super().__init__()
        self.lines = lines


def encode_payload(payload: Mapping[str, Any]) -> tuple[bytes, str]:
    """The body bytes and content type of an answer."""
    if isinstance(payload, JsonLines):
        body = "".join(json.dumps(line) + "\n" for line in payload.lines)
        return body.encode(), "application/binary"
    return json.dumps(payload).encode(), "application/json"


@dataclass
class _Batch:
    id: str
    created: datetime
    ends_at: float
    results: list[dict[str, Any]]


@dataclass
class BatchState:
    delay_ms: int = 0
    fail_session_ids: dict[str, str] = field(default_factory=dict)
    fail_limit: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    batches: dict[str, _Batch] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def as_json(self) -> dict[str, Any]:
        return {"delay_ms": self.delay_ms, "fail_session_ids": dict(self.fail_session_ids),
                "fail_limit": dict(self.fail_limit)}


_STATES: weakref.WeakKeyDictionary[stub.StubServer, BatchState] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def state_of(server: stub.StubServer) -> BatchState:
    with _STATES_LOCK:
        return _STATES.setdefault(server, BatchState())


def configure(
    server: stub.StubServer, *, delay_ms: int = 0,
    fail_session_ids: Mapping[str, str] | None = None,
    fail_limit: Mapping[str, int] | None = None,
) -> None:
    """Replace the batch settings (and reset the fault counters)."""
    faults = dict(fail_session_ids or {})
    for fault in faults.values():
        _check_fault(fault)
    state = state_of(server)
    with state.lock:
        state.delay_ms = int(delay_ms)
        state.fail_session_ids = faults
        state.fail_limit = {str(k): int(v) for k, v in (fail_limit or {}).items()}
        state.failed = {}


def _check_fault(fault: str) -> None:
    if fault in BATCH_FAULTS or (fault.startswith("errored:") and len(fault) > len("errored:")):
        return
    raise ValueError(f"unknown batch fault {fault!r}: expired, canceled or errored:<type>")


def owns(path: str) -> bool:
    return path == "/_batches" or path.startswith("/v1/messages/batches")


def handle(
    server: stub.StubServer, method: str, path: str, headers: Mapping[str, str], raw: bytes
) -> tuple[int, dict[str, Any]]:
    if path == "/_batches":
        return _admin(server, method, raw)
    stub.check_api_key(headers)
    if (method, path) == ("POST", "/v1/messages/batches"):
        return 200, _create(server, headers, stub.parse_body(raw))
    match = _RESULTS_PATH.match(path)
    if method == "GET" and match:
        batch = _find(server, match.group(1))
        if match.group(2):
            return 200, _results(batch)
        return 200, _batch_json(batch, headers)
    raise stub.ApiError(404, f"no route for {method} {path}")


def _admin(server: stub.StubServer, method: str, raw: bytes) -> tuple[int, dict[str, Any]]:
    if method == "POST":
        body = stub.parse_body(raw)
        unknown = set(body) - {"delay_ms", "fail_session_ids", "fail_limit"}
        if unknown:
            raise stub.ApiError(400, f"unknown batch settings: {', '.join(sorted(unknown))}")
        try:
            configure(server, **body)
        except (TypeError, ValueError) as exc:
            raise stub.ApiError(400, str(exc)) from exc
    return 200, state_of(server).as_json()


def _create(
    server: stub.StubServer, headers: Mapping[str, str], body: Mapping[str, Any]
) -> dict[str, Any]:
    requests = body.get("requests")
    _validate_requests(requests)
    assert isinstance(requests, list)
    state = state_of(server)
    results = [_answer(server, state, request) for request in requests]
    now = datetime.now(UTC)
    batch = _Batch(id="msgbatch_" + secrets.token_hex(12), created=now,
                   ends_at=time.monotonic() + state.delay_ms / 1000, results=results)
    with state.lock:
        state.batches[batch.id] = batch
    return _batch_json(batch, headers)


def _validate_requests(requests: Any) -> None:
    if not isinstance(requests, list) or not requests:
        raise stub.ApiError(400, "requests: must be a non-empty list")
    if len(requests) > MAX_REQUESTS:
        raise stub.ApiError(400, f"requests: at most {MAX_REQUESTS} requests per batch")
    seen: set[str] = set()
    for index, request in enumerate(requests):
        custom_id = request.get("custom_id") if isinstance(request, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise stub.ApiError(400, f"requests.{index}.custom_id: must match {CUSTOM_ID.pattern}")
        if custom_id in seen:
            raise stub.ApiError(400, f"requests.{index}.custom_id: duplicate {custom_id!r}")
        if not isinstance(request.get("params"), dict):
            raise stub.ApiError(400, f"requests.{index}.params: must be an object")
        seen.add(custom_id)


def _answer(server: stub.StubServer, state: BatchState, request: dict[str, Any]) -> dict[str, Any]:
    """One result line, answered as `POST /v1/messages` would answer the params."""
    params, custom_id = request["params"], request["custom_id"]
    batch_fault = _batch_fault(state, params)
    if batch_fault is not None:
        return {"custom_id": custom_id, "result": _fault_result(batch_fault)}
    raw = json.dumps(params).encode()
    try:
        stub.validate_messages_request(params)
        fault = stub.pick_fault(server.faults, params, raw, server.next_request_number())
        if fault is not None and fault.isdigit():
            stub.raise_status_fault(fault)
    except stub.ApiError as error:
        return {"custom_id": custom_id, "result": _errored(stub.ERROR_TYPES.get(
            error.status, "api_error"), error.message)}
    if fault in ("reset", "hang"):
        return {"custom_id": custom_id, "result": _errored("api_error", "internal error")}
    message = stub.build_message(server, params, fault)
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def _batch_fault(state: BatchState, params: Mapping[str, Any]) -> str | None:
    text = stub._messages_text(params.get("messages") or [])
    with state.lock:
        for marker, fault in state.fail_session_ids.items():
            if not re.search(rf"session_id={re.escape(marker)}(?![\w-])", text):
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


def _errored(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "errored",
            "error": {"type": "error", "error": {"type": error_type, "message": message}}}


def _find(server: stub.StubServer, batch_id: str) -> _Batch:
    state = state_of(server)
    with state.lock:
        batch = state.batches.get(batch_id)
    if batch is None:
        raise stub.ApiError(404, f"no batch {batch_id!r}")
    return batch


def _results(batch: _Batch) -> JsonLines:
    if time.monotonic() < batch.ends_at:
        raise stub.ApiError(400, f"batch {batch.id} is still in progress")
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
