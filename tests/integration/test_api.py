"""The HTTP API over the real app and the real test database: auth, tenancy, validation,
pagination, audit, and the Actions-menu flow end to end with the running pipeline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from test_api_support import Tenant, held_job, make_tenant, snapshot, wait_for_state

from scheduler.http.app import create_app
from scheduler.jobs import keys as auth
from shared.db import Database
from shared.settings import Settings

pytestmark = pytest.mark.integration

MISSING_JOB = "bf_does_not_exist"
MISSING_SESSION = "call_does_not_exist"


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def tenant_a(db: Database) -> Tenant:
    return make_tenant(db, "apia", calls=30, chats=2)


@pytest.fixture(scope="module")
def tenant_b(db: Database) -> Tenant:
    return make_tenant(db, "apib", calls=3, chats=1)


@pytest.fixture(scope="module")
def a_job(db: Database, tenant_a: Tenant) -> str:
    """A paused job of A with a failed and a pending item: every action would apply to it."""
    return held_job(db, tenant_a, failed=(tenant_a.call_ids[0],),
                    pending=(tenant_a.call_ids[1],))


def endpoints(job_id: str, session_id: str) -> list[tuple[str, str, Any]]:
    """Every /v1 endpoint, with a valid body, aimed at the given job and session."""
    return [
        ("POST", "/v1/backfills/preview", {"kind": "call", "filters": []}),
        ("POST", "/v1/backfills", {"kind": "call", "filters": []}),
        ("GET", "/v1/backfills", None),
        ("GET", f"/v1/backfills/{job_id}", None),
        ("POST", f"/v1/backfills/{job_id}/pause", {"reason": "x"}),
        ("POST", f"/v1/backfills/{job_id}/resume", {"reason": "x"}),
        ("POST", f"/v1/backfills/{job_id}/cancel", {"reason": "x"}),
        ("POST", f"/v1/backfills/{job_id}/requeue", {}),
        ("GET", f"/v1/backfills/{job_id}/items?state=failed", None),
        ("GET", f"/v1/backfills/{job_id}/report", None),
        ("POST", f"/v1/backfills/{job_id}/promote", {}),
        ("POST", f"/v1/backfills/{job_id}/revert", {"dry_run": True}),
        ("GET", f"/v1/sessions/{session_id}/analysis", None),
        ("POST", f"/v1/sessions/{session_id}/rerun", {}),
    ]


def call(client: TestClient, method: str, path: str, body: Any,
         headers: dict[str, str] | None = None) -> Any:
    return client.request(method, path, json=body, headers=headers or {})


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("header", [None, "Bearer bfk_wrong", "Bearer ", "Basic dXNlcjpwdw==",
                                    "bfk_no_scheme", "Bearer " + "x" * 500])
def test_every_endpoint_needs_a_valid_key(client: TestClient, db: Database, tenant_a: Tenant,
                                          a_job: str, header: str | None) -> None:
    before = snapshot(db, tenant_a.workspace_id)
    headers = {"Authorization": header} if header is not None else {}
    for job_id, session_id in ((a_job, tenant_a.call_ids[0]), (MISSING_JOB, MISSING_SESSION)):
        for method, path, body in endpoints(job_id, session_id):
            response = call(client, method, path, body, headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "unauthorized"
    assert snapshot(db, tenant_a.workspace_id) == before


def test_key_is_checked_before_the_body(client: TestClient) -> None:
    assert client.post("/v1/backfills", content=b"{not json").status_code == 401
    big = b"x" * (2 * 1024 * 1024)
    assert client.post("/v1/backfills", content=big).status_code == 401


def test_revoked_key_is_refused(client: TestClient, db: Database, tenant_b: Tenant) -> None:
    new = auth.create_key(db, tenant_b.workspace_id, "os:pytest")
    headers = {"Authorization": f"Bearer {new.key}"}
    assert client.get("/v1/backfills", headers=headers).status_code == 200
    auth.revoke_key(db, new.key_id, "os:pytest")
    assert client.get("/v1/backfills", headers=headers).status_code == 401


def test_only_a_hash_of_the_key_is_stored(db: Database, tenant_a: Tenant) -> None:
    with db.transaction() as tx:
        row = tx.execute(text("SELECT * FROM api_keys WHERE id = :id"),
                         {"id": tenant_a.key_id}).one()
    assert tenant_a.key not in [str(value) for value in row]
    assert row.key_hash == auth.hash_key(tenant_a.key)


def test_health_and_openapi_need_no_key(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "postgres": "ok", "broker": "ok"}
    schema = client.get("/openapi.json").json()
    assert "ApiKey" in schema["components"]["securitySchemes"]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            codes = set(operation["responses"])
            if path.startswith("/v1"):
                assert {"401", "422"} <= codes and operation["security"], path
            else:
                assert "security" not in operation


def test_health_reports_a_broker_that_is_down(settings: Settings) -> None:
    down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down)) as test_client:
        response = test_client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "postgres": "ok",
                               "broker": "unavailable"}


# --------------------------------------------------------------------------- tenancy


def test_tenancy_matrix_b_cannot_see_or_change_a(client: TestClient, db: Database,
                                                 tenant_a: Tenant, tenant_b: Tenant,
                                                 a_job: str) -> None:
    """For every endpoint, B's key on A's ids is a 404 (never a 403) and A is unchanged."""
    a_session = tenant_a.call_ids[0]
    for method, path, body in endpoints(a_job, a_session):
        if path in ("/v1/backfills", "/v1/backfills/preview"):
            continue  # the workspace-wide endpoints are checked below
        before = snapshot(db, tenant_a.workspace_id)
        response = call(client, method, path, body, tenant_b.headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["type"] == "not_found"
        assert snapshot(db, tenant_a.workspace_id) == before, (method, path)


def test_tenancy_a_can_read_its_own(client: TestClient, tenant_a: Tenant, a_job: str) -> None:
    """The positive control of the matrix: the same reads with A's key succeed."""
    assert client.get(f"/v1/backfills/{a_job}", headers=tenant_a.headers).status_code == 200
    items = client.get(f"/v1/backfills/{a_job}/items?state=failed", headers=tenant_a.headers)
    assert [item["session_id"] for item in items.json()["items"]] == [tenant_a.call_ids[0]]
    analysis = client.get(f"/v1/sessions/{tenant_a.call_ids[0]}/analysis",
                          headers=tenant_a.headers)
    assert analysis.status_code == 200


def test_tenancy_workspace_wide_endpoints(client: TestClient, db: Database, tenant_a: Tenant,
                                          tenant_b: Tenant, a_job: str) -> None:
    """Listing, preview and create in B never reach A, even when the filters name A's ids."""
    before = snapshot(db, tenant_a.workspace_id)
    listed = client.get("/v1/backfills?limit=500", headers=tenant_b.headers).json()
    assert a_job not in {job["id"] for job in listed["items"]}
    assert {job["workspace_id"] for job in listed["items"]} <= {tenant_b.workspace_id}
    a_calls = [{"field": "call_id", "op": "in", "value": tenant_a.call_ids}]
    preview = client.post("/v1/backfills/preview", json={"kind": "call", "filters": a_calls},
                          headers=tenant_b.headers)
    assert preview.json()["matched"] == 0
    created = client.post("/v1/backfills", json={"kind": "call", "filters": a_calls},
                          headers=tenant_b.headers)
    assert created.status_code == 201
    job = created.json()
    assert (job["workspace_id"], job["counts"]["matched"]) == (tenant_b.workspace_id, 0)
    after = snapshot(db, tenant_a.workspace_id)
    assert {k: v for k, v in after.items() if k != "all_jobs"} == {
        k: v for k, v in before.items() if k != "all_jobs"}


def test_workspace_never_comes_from_the_body(client: TestClient, tenant_a: Tenant,
                                             tenant_b: Tenant) -> None:
    body = {"kind": "call", "filters": [], "workspace_id": tenant_a.workspace_id}
    response = client.post("/v1/backfills", json=body, headers=tenant_b.headers)
    assert response.status_code == 422
    assert "workspace_id" in response.json()["error"]["message"]


# --------------------------------------------------------------------------- bad input


def test_filter_error_is_422_naming_the_row(client: TestClient, db: Database,
                                            tenant_a: Tenant) -> None:
    before = snapshot(db, tenant_a.workspace_id)
    filters = [{"field": "call_status", "op": "in", "value": ["ended"]},
               {"field": "nope", "op": "eq", "value": 1}]
    for path in ("/v1/backfills", "/v1/backfills/preview"):
        response = client.post(path, json={"kind": "call", "filters": filters},
                               headers=tenant_a.headers)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["message"].startswith("filters[1]: ")
        assert (error["type"], error["filter_index"]) == ("invalid_filter", 1)
    assert snapshot(db, tenant_a.workspace_id) == before


@pytest.mark.parametrize(("body", "fragment"), [
    ({"kind": "call", "filters": [{"field": "call_id", "op": "eq", "value": "x"}] * 51},
     "too many rows"),
    ({"kind": "sms", "filters": []}, "kind"),
    ({"kind": "call"}, "filters"),
    ({"kind": "call", "filters": {}}, "filters"),
    ({"kind": "call", "filters": [], "options": {"limit": 0}}, "options.limit"),
    ({"kind": "call", "filters": [], "options": {"sampel_rate": 0.5}}, "options"),
    ({"kind": "call", "filters": [], "reason": "nul \u0000 byte"}, "reason"),
    ({"kind": "call", "filters": [], "reason": "x" * 3000}, "reason"),
    ({"kind": "call", "filters": [{"field": "from_number", "op": "eq", "value": "\ud800"}]},
     "filters[0]"),
    ({"kind": "call", "filters": [], "reason": "lone \udc00 surrogate"}, "reason"),
])
def test_invalid_bodies_are_422(client: TestClient, tenant_a: Tenant, body: Any,
                                fragment: str) -> None:
    # json.dumps escapes the lone surrogate as JSON allows; an HTTP client would refuse it.
    response = client.post("/v1/backfills", content=json.dumps(body).encode(),
                           headers={**tenant_a.headers, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]["message"]


@pytest.mark.parametrize(("content", "content_type"), [
    (b"{not json", "application/json"),
    (b'{"kind": "call", "filters": [NaN]}', "application/json"),
    (b"\xff\xfe{}", "application/json"),
    (b"[" * 100_000, "application/json"),
    (b'{"kind": "call", "filters": []}', "text/plain"),
])
def test_non_json_bodies_are_400(client: TestClient, tenant_a: Tenant, content: bytes,
                                 content_type: str) -> None:
    response = client.post("/v1/backfills", content=content,
                           headers={**tenant_a.headers, "Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "bad_json"


def test_json_without_content_type_is_accepted(client: TestClient, tenant_a: Tenant) -> None:
    response = client.post("/v1/backfills/preview", content=b'{"kind": "chat", "filters": []}',
                           headers=tenant_a.headers)
    body = response.json()
    assert body["matched"] == 2 and body["estimate"]["input_tokens"] > 0


def test_bodies_over_one_mib_are_413(client: TestClient, tenant_a: Tenant) -> None:
    padding = "x" * (1024 * 1024)
    body = json.dumps({"kind": "call", "filters": [], "reason": padding}).encode()
    response = client.post("/v1/backfills", content=body,
                           headers={**tenant_a.headers, "Content-Type": "application/json"})
    assert response.status_code == 413
    chunked = client.post("/v1/backfills", content=iter([body[:600_000], body[600_000:]]),
                          headers={**tenant_a.headers, "Content-Type": "application/json"})
    assert chunked.status_code == 413


def test_bad_parameters(client: TestClient, tenant_a: Tenant, a_job: str) -> None:
    headers = tenant_a.headers
    assert client.get("/v1/backfills?cursor=forged", headers=headers).status_code == 422
    assert client.get("/v1/backfills?limit=0", headers=headers).status_code == 422
    assert client.get(f"/v1/backfills/{a_job}/items?state=nope",
                      headers=headers).status_code == 422
    assert client.get(f"/v1/backfills/{a_job}/items?cursor=%00",
                      headers=headers).status_code == 422
    assert client.get("/v1/backfills/bf%00x", headers=headers).status_code == 404
    assert client.get("/v1/backfills/" + "b" * 500, headers=headers).status_code == 404
    strict = client.post(f"/v1/backfills/{a_job}/requeue", json={"dry_run": "yes"},
                         headers=headers)
    assert strict.status_code == 422
    long_key = client.post("/v1/backfills", json={"kind": "call", "filters": []},
                           headers={**headers, "Idempotency-Key": "k" * 300})
    assert long_key.status_code == 422


def test_state_conflicts_are_409(client: TestClient, db: Database, tenant_a: Tenant) -> None:
    job_id = held_job(db, tenant_a, state="cancelled")
    for action in ("pause", "resume", "cancel", "requeue"):
        response = client.post(f"/v1/backfills/{job_id}/{action}", headers=tenant_a.headers)
        assert response.status_code == 409, (action, response.text)
        assert response.json()["error"]["type"] == "conflict"


# --------------------------------------------------------------------------- create, list


def test_create_answers_the_job_and_replays_by_idempotency_key(
        client: TestClient, tenant_b: Tenant, tenant_a: Tenant) -> None:
    body = {"kind": "chat", "filters": [], "reason": "new prompts"}
    headers = {**tenant_b.headers, "Idempotency-Key": "actions-menu-1"}
    first = client.post("/v1/backfills", json=body, headers=headers)
    assert first.status_code == 201
    job = first.json()
    assert set(job) >= {"id", "workspace_id", "kind", "filters", "state", "counts",
                        "error_kinds", "created_at", "finished_at"}
    assert set(job["counts"]) == {"matched", "pending", "queued", "running", "succeeded",
                                  "failed", "skipped", "cancelled"}
    assert [(e["action"], e["actor"], e["reason"]) for e in job["audit"]] == [
        ("create", f"api_key:{tenant_b.key_id}", "new prompts")]
    again = client.post("/v1/backfills", json=body, headers=headers)
    assert (again.status_code, again.json()["id"]) == (200, job["id"])
    assert len(again.json()["audit"]) == 1  # a replay is not a second create
    other = client.post("/v1/backfills", json=body,
                        headers={**tenant_a.headers, "Idempotency-Key": "actions-menu-1"})
    assert other.status_code == 201 and other.json()["id"] != job["id"]


def test_listings_page_with_cursors(client: TestClient, db: Database) -> None:
    tenant = make_tenant(db, "apipage", calls=7, chats=0)
    jobs = [held_job(db, tenant, pending=tuple(tenant.call_ids)) for _ in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        page = client.get(f"/v1/backfills{query}", headers=tenant.headers).json()
        seen += [job["id"] for job in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(jobs))  # newest first, each exactly once
    items: list[str] = []
    cursor = None
    while True:
        query = f"?limit=3&cursor={cursor}" if cursor else "?limit=3"
        page = client.get(f"/v1/backfills/{jobs[0]}/items{query}",
                          headers=tenant.headers).json()
        items += [item["session_id"] for item in page["items"]]
        assert all(set(item) >= {"session_id", "state", "error_kind", "error", "attempts"}
                   for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert items == sorted(tenant.call_ids)


def test_operations_are_audited(client: TestClient, db: Database, tenant_a: Tenant) -> None:
    job_id = held_job(db, tenant_a, failed=(tenant_a.call_ids[2],),
                      pending=(tenant_a.call_ids[3],))
    headers = tenant_a.headers
    dry = client.post(f"/v1/backfills/{job_id}/requeue", json={"dry_run": True},
                      headers=headers)
    assert dry.json() == {"requeued": 1, "dry_run": True}
    requeued = client.post(f"/v1/backfills/{job_id}/requeue",
                           json={"error_kinds": ["llm_refusal"], "reason": "fixed"},
                           headers=headers)
    assert requeued.json() == {"requeued": 1, "dry_run": False}
    resumed = client.post(f"/v1/backfills/{job_id}/resume", json={"reason": "go"},
                          headers=headers)
    assert resumed.json()["state"] in {"running", "completed"}
    cancelled = client.post(f"/v1/backfills/{job_id}/cancel", headers=headers)
    assert cancelled.status_code in {200, 409}  # the scheduler may have finished it first
    trail = client.get(f"/v1/backfills/{job_id}", headers=headers).json()["audit"]
    actions = [(e["action"], e["reason"]) for e in trail]
    assert actions[:2] == [("requeue", "fixed"), ("resume", "go")]
    assert {e["actor"] for e in trail} == {f"api_key:{tenant_a.key_id}"}
    assert trail[0]["details"]["error_kinds"] == ["llm_refusal"]


# --------------------------------------------------------------------------- the flow


def test_actions_menu_flow_end_to_end(pipeline: Any, client: TestClient, db: Database,
                                      tenant_a: Tenant) -> None:
    """preview → create → watch → requeue failed → pause/resume → cancel → rerun, over HTTP."""
    headers = tenant_a.headers
    filters = [{"field": "call_status", "op": "in", "value": ["ended"]}]
    preview = client.post("/v1/backfills/preview", json={"kind": "call", "filters": filters},
                          headers=headers)
    assert preview.json()["matched"] == 30
    created = client.post("/v1/backfills", json={"kind": "call", "filters": filters},
                          headers={**headers, "Idempotency-Key": "flow-1"})
    assert created.status_code == 201
    job_id = created.json()["id"]
    job = wait_for_state(client, tenant_a, job_id, {"completed"})
    assert (job["counts"]["matched"], job["counts"]["succeeded"]) == (30, 30)

    broken = tenant_a.call_ids[4:6]
    with db.transaction() as tx:  # two items failed for good (say the model refused)
        tx.execute(text("UPDATE backfill_items SET state = 'failed', error_kind = 'llm_refusal',"
                        " error = 'refused' WHERE job_id = :j AND session_id = ANY(:s)"),
                   {"j": job_id, "s": broken})
    failed = client.get(f"/v1/backfills/{job_id}/items?state=failed", headers=headers).json()
    assert [(i["session_id"], i["error_kind"]) for i in failed["items"]] == [
        (sid, "llm_refusal") for sid in broken]
    requeue = client.post(f"/v1/backfills/{job_id}/requeue", json={"reason": "retry"},
                          headers=headers)
    assert requeue.json() == {"requeued": 2, "dry_run": False}
    job = wait_for_state(client, tenant_a, job_id, {"completed"})
    assert (job["counts"]["succeeded"], job["counts"]["failed"]) == (30, 0)
    assert job["audit"][-1]["details"]["from_state"] == "completed"

    paused = create_then(client, tenant_a, "pause", "burning money")
    assert (paused["state"], paused["state_reason"]) == ("paused", "burning money")
    client.post(f"/v1/backfills/{paused['id']}/resume", json={"reason": "ok"}, headers=headers)
    assert wait_for_state(client, tenant_a, paused["id"], {"completed"})["counts"]["failed"] == 0

    cancelled = create_then(client, tenant_a, "cancel", "wrong filters")
    assert cancelled["state"] == "cancelled"
    assert cancelled["counts"]["pending"] == cancelled["counts"]["queued"] == 0
    assert cancelled["counts"]["cancelled"] > 0

    session_id = tenant_a.call_ids[7]
    rerun = client.post(f"/v1/sessions/{session_id}/rerun?wait=true", json={},
                        headers=headers)
    assert rerun.status_code == 200
    document = rerun.json()
    assert document["job"]["state"] == "completed"
    source = document["analysis"]["analysis_source"]
    assert source["job_id"] == document["job"]["id"]
    assert set(document["analysis"]["call_analysis"]["custom_analysis_data"]) == {"intent"}
    current = client.get(f"/v1/sessions/{session_id}/analysis", headers=headers).json()
    assert current["analysis_source"]["job_id"] == document["job"]["id"]


def create_then(client: TestClient, tenant: Tenant, action: str, reason: str,
                attempts: int = 5) -> dict[str, Any]:
    """Create a 30-session job and pause or cancel it at once. The running pipeline may finish
    a job before the second request lands (then 409); that race is retried, not ignored."""
    for _ in range(attempts):
        job_id = client.post("/v1/backfills", json={"kind": "call", "filters": []},
                             headers=tenant.headers).json()["id"]
        response = client.post(f"/v1/backfills/{job_id}/{action}", json={"reason": reason},
                               headers=tenant.headers)
        if response.status_code != 409:
            assert response.status_code == 200, response.text
            document: dict[str, Any] = response.json()
            return document
    raise AssertionError(f"every job completed before {action} reached it")


def test_repeated_query_parameter_is_422(client: TestClient, tenant_a: Tenant) -> None:
    response = client.get("/v1/backfills?cursor=a&cursor=b", headers=tenant_a.headers)
    assert response.status_code == 422
    assert "cursor" in response.json()["error"]["message"]
