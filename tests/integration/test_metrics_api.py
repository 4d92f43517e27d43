"""The API's `/metrics`: served without a key, outside the OpenAPI document, counting every
request by route template and status (the guard's refusals included), and never an id, a key
or a path a client typed as a label."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from test_api_support import Tenant, make_tenant

from scheduler.http.app import create_app
from shared.db import Database
from shared.settings import Settings

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def tenant(db: Database) -> Tenant:
    return make_tenant(db, "apimetrics", calls=1, chats=0)


def scrape(client: TestClient) -> Samples:
    answer = client.get("/metrics")  # no key
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def requests(samples: Samples, method: str, route: str, status: str) -> float:
    labels = frozenset({"method": method, "route": route, "status": status}.items())
    return samples.get(("backfill_http_requests_total", labels), 0.0)


def test_requests_are_counted_by_route_template_and_status(client: TestClient,
                                                           tenant: Tenant) -> None:
    missing = "bf_not_a_job_of_anyone"
    cases = [
        ("GET", "/v1/backfills", tenant.headers, "/v1/backfills", "200"),
        ("GET", f"/v1/backfills/{missing}", tenant.headers, "/v1/backfills/{job_id}", "404"),
        ("GET", "/v1/backfills", {}, "unmatched", "401"),  # refused before routing
        ("GET", "/nowhere/at/all", {}, "unmatched", "404"),
        ("BREW", "/v1/backfills", tenant.headers, "/v1/backfills", "405"),
    ]
    before = scrape(client)
    for method, path, headers, _, _ in cases:
        client.request(method, path, headers=headers)
    after = scrape(client)
    for method, _, _, route, status in cases:
        label = "OTHER" if method == "BREW" else method
        assert requests(after, label, route, status) == requests(
            before, label, route, status) + 1, (method, route, status)
    duration = ("backfill_http_request_duration_seconds_count",
                frozenset({"route": "/v1/backfills/{job_id}"}.items()))
    assert after[duration] >= 1
    for _, labels in after:
        for _, value in labels:
            assert missing not in value and tenant.key not in value
            assert tenant.workspace_id not in value and "nowhere" not in value


def test_metrics_are_not_part_of_the_api_document(client: TestClient) -> None:
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]
