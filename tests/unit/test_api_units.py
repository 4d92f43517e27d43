"""The HTTP API's pieces without services: the request guard, error messages, keys, cursors,
OpenAPI document, the Flower credentials check and the progress bar's rate column."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from rich.progress import Progress
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from scheduler.cli.render import RateColumn
from scheduler.cli.services import flower_auth_problem
from scheduler.http import guard, schemas
from scheduler.http.app import create_app
from scheduler.http.errors import describe
from scheduler.jobs import audit, documents, keys
from shared.errors import InvalidInput
from shared.vocabulary import ITEM_STATES, JOB_STATES

GOOD_KEY = "bfk_good"


async def echo(request: Request) -> JSONResponse:
    principal = request.scope["state"][guard.PRINCIPAL]
    return JSONResponse({"body": (await request.body()).decode(),
                         "content_type": request.headers.get("content-type"),
                         "workspace": principal.workspace_id})


async def open_route(_: Request) -> JSONResponse:
    return JSONResponse({"open": True})


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    def fake_authenticate(_: Any, header: str | None) -> keys.Principal | None:
        ok = keys.parse_bearer(header) == GOOD_KEY
        return keys.Principal("key_1", "ws_1") if ok else None

    monkeypatch.setattr(guard.keys, "authenticate", fake_authenticate)
    app = Starlette(routes=[Route("/v1/echo", echo, methods=["POST"]),
                            Route("/open", open_route, methods=["POST"])])
    app.state.db = object()
    app.add_middleware(guard.RequestGuard, max_body=100)
    with TestClient(app) as client:
        yield client


KEY = {"Authorization": f"Bearer {GOOD_KEY}"}


def test_guard_checks_the_key_before_anything_else(guarded: TestClient) -> None:
    for content in (b"{bad json", b"x" * 1000, b"{}"):
        response = guarded.post("/v1/echo", content=content)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "unauthorized"


def test_guard_passes_a_good_request_with_its_principal(guarded: TestClient) -> None:
    response = guarded.post("/v1/echo", content=b'{"a": 1}', headers=KEY)
    assert response.json() == {"body": '{"a": 1}', "content_type": "application/json",
                               "workspace": "ws_1"}


def test_guard_bounds_the_body(guarded: TestClient) -> None:
    assert guarded.post("/v1/echo", content=b"1" * 101, headers=KEY).status_code == 413
    chunks = iter([b"[" + b"1," * 30, b"1," * 30, b"1]"])
    assert guarded.post("/v1/echo", content=chunks, headers=KEY).status_code == 413
    assert guarded.post("/v1/echo", content=b"1" * 100, headers=KEY).status_code == 200


@pytest.mark.parametrize("content", [b"{", b"NaN", b'{"x": Infinity}', b"\xff", b"[" * 90])
def test_guard_refuses_bodies_that_are_not_json(guarded: TestClient, content: bytes) -> None:
    response = guarded.post("/v1/echo", content=content, headers=KEY)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "bad_json"


def test_guard_leaves_other_paths_alone(guarded: TestClient) -> None:
    assert guarded.post("/open", content=b"not json at all").json() == {"open": True}


def test_deep_nesting_is_not_json() -> None:
    assert not guard.is_json(b"[" * 100_000 + b"]" * 100_000)
    assert guard.is_json(b'{"kind": "call", "filters": []}')


@pytest.mark.parametrize(("header", "key"), [
    (None, None), ("", None), ("Bearer", None), ("Bearer ", None), ("Basic abc", None),
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Bearer " + "k" * 201, None),
])
def test_parse_bearer(header: str | None, key: str | None) -> None:
    assert keys.parse_bearer(header) == key


def test_key_hash_is_sha256_hex() -> None:
    assert len(keys.hash_key("bfk_x")) == 64
    assert keys.hash_key("bfk_x") == keys.hash_key("bfk_x") != keys.hash_key("bfk_y")
    assert keys.Principal("key_1", "ws").actor == "api_key:key_1"


@pytest.mark.parametrize(("error", "message"), [
    ({"loc": ("body", "filters", 1, "field"), "msg": "Field required"},
     "filters[1].field: Field required"),
    ({"loc": ("body", "options", "limit"), "msg": "bad"}, "options.limit: bad"),
    ({"loc": ("body",), "msg": "Field required"}, "body: Field required"),
    ({"loc": ("query", "limit"), "msg": "too small"}, "query.limit: too small"),
    ({"loc": ("body", "reason"), "msg": "Value error, must not contain a NUL character"},
     "reason: must not contain a NUL character"),
])
def test_validation_messages_name_the_place(error: dict[str, Any], message: str) -> None:
    assert describe(error) == message


def test_openapi_lists_exactly_the_states_of_the_vocabulary() -> None:
    components = create_app().openapi()["components"]["schemas"]
    assert components["Job"]["properties"]["state"]["enum"] == list(JOB_STATES)
    assert components["Item"]["properties"]["state"]["enum"] == list(ITEM_STATES)


def test_storable_refuses_nul_and_lone_surrogates() -> None:
    assert schemas.storable("ok é") == "ok é"
    for bad in ("a\x00b", "\ud800"):
        with pytest.raises(ValueError):
            schemas.storable(bad)


def test_cursors_round_trip_and_refuse_forgeries() -> None:
    cursor = documents.encode_cursor(["2026-01-01T00:00:00.123456+00:00", "bf_1"])
    created_at, job_id = documents.decode_job_cursor(cursor)
    assert (created_at.isoformat(), job_id) == ("2026-01-01T00:00:00.123456+00:00", "bf_1")
    assert documents.decode_item_cursor(documents.encode_cursor(["call_9"])) == "call_9"
    encode = documents.encode_cursor
    forged = ["", "!!!", "é", encode(["x"]), encode(["nope", "bf"]),
              encode(["2026-01-01T00:00:00", "bf"]), encode(["a\x00", "b"])]
    for bad in forged:
        with pytest.raises(InvalidInput, match="cursor"):
            documents.decode_job_cursor(bad)


def test_openapi_documents_auth_and_one_error_shape() -> None:
    schema = create_app().openapi()  # builds no Database: nothing connects
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if not path.startswith("/v1"):
                continue
            assert operation["security"] == [{"ApiKey": []}]
            for code in ("400", "401", "413", "422"):
                content = operation["responses"][code]["content"]["application/json"]
                assert content["schema"] == error_ref, (path, code)
    filters = schema["components"]["schemas"]["CreateRequest"]["properties"]["filters"]
    assert filters["maxItems"] == 50 and "call_status" in filters["items"]["properties"][
        "field"]["enum"]
    json.dumps(schema)  # serialisable as served


@pytest.mark.parametrize(("value", "ok"), [
    (None, False), ("", False), ("user", False), (":pw", False), ("user:", False),
    ("user:pw", True), ("a:1,b:2", True), ("a:1,b", False), ("user:pa:ss", True),
])
def test_flower_credentials_check(value: str | None, ok: bool) -> None:
    assert (flower_auth_problem(value) is None) is ok


def test_rate_column_shows_sessions_per_second() -> None:
    progress = Progress(RateColumn(), auto_refresh=False)
    task_id = progress.add_task("job", total=100)
    column = RateColumn()
    assert column.render(progress.tasks[0]).plain == "–/s"
    progress.update(task_id, completed=10)
    progress.update(task_id, completed=20)
    assert column.render(progress.tasks[task_id]).plain.endswith("/s")
    assert column.render(progress.tasks[task_id]).plain != "–/s"


def test_audit_details_lists_are_bounded() -> None:
    details = audit.bounded_details({"session_ids": [str(i) for i in range(250)], "n": 1})
    assert len(details["session_ids"]) == audit.MAX_LISTED
    assert (details["session_ids_total"], details["n"]) == (250, 1)
    assert audit.os_actor().startswith("os:")
