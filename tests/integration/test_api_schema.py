"""schemathesis against the live API (real uvicorn, real Postgres, the running pipeline): for
every operation, schema-valid and schema-invalid requests never get a 5xx, and every response
conforms to the OpenAPI document the app serves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import checks
from test_api_support import Tenant, held_job, live_server, make_tenant

from scheduler.http.app import create_app
from scheduler.webhooks.secretbox import new_secret_key
from shared.db import Database
from shared.settings import Settings

pytestmark = pytest.mark.integration

EXAMPLES_PER_RUN = 25
CHECKS: list[CheckFunction] = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
    checks.ignored_auth,
    checks.missing_required_header,
    checks.unsupported_method,
]
# Not positive_data_acceptance: the schema documents each filter row's shape, not which op
# goes with which field (that table is the planner's), so a schema-valid row may be a 422.


@pytest.fixture(scope="module")
def base_url(settings: Settings, pipeline: Any) -> Iterator[str]:
    # The pipeline runs the jobs the fuzzer creates, so a `rerun?wait=true` returns promptly.
    # With the deployment's key, so webhooks can be added (without it: 503, by design).
    keyed = settings.model_copy(update={"secret_key": SecretStr(new_secret_key())})
    with live_server(create_app(keyed)) as url:
        yield url


@pytest.fixture(scope="module")
def fuzz_tenant(db: Database) -> Tenant:
    return make_tenant(db, "apifuzz", calls=3, chats=1)


def _modes(operation: Any) -> list[GenerationMode]:
    # /healthz takes no input at all, so there is no invalid request to make.
    if operation.path == "/healthz":
        return [GenerationMode.POSITIVE]
    return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def _fixed_paths(operation: Any, tenant: Tenant, job_id: str) -> list[dict[str, str] | None]:
    """Random ids (mostly 404s), and the ids of real objects so the handlers run for real."""
    path = operation.path
    if "{job_id}" in path:
        return [None, {"job_id": job_id}]
    if "{session_id}" in path:
        return [None, {"session_id": tenant.call_ids[0]}, {"session_id": tenant.chat_ids[0]}]
    return [None]


def _run(operation: Any, mode: GenerationMode, fixed: dict[str, str] | None, base_url: str,
         headers: dict[str, str], seen: list[int]) -> None:
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)

    @hypothesis_settings(max_examples=EXAMPLES_PER_RUN, deadline=None, database=None,
                         phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def exercise(case: Any) -> None:
        # The key is the caller's: a fuzzed Authorization header would only test the 401 path.
        case.headers = {**(case.headers or {}), **headers}
        response = case.call(base_url=base_url, timeout=120)
        seen.append(response.status_code)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        case.validate_response(response, checks=CHECKS, headers=headers)

    exercise()


def test_schemathesis_no_5xx_and_responses_conform(base_url: str, db: Database,
                                                   fuzz_tenant: Tenant) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    job_id = held_job(db, fuzz_tenant, failed=(fuzz_tenant.call_ids[0],),
                      pending=(fuzz_tenant.call_ids[1],))
    statuses: list[int] = []
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results  # the schema is valid
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == 18  # seventeen /v1 operations and /healthz
    for operation in operations:
        for mode in _modes(operation):
            for fixed in _fixed_paths(operation, fuzz_tenant, job_id):
                _run(operation, mode, fixed, base_url, fuzz_tenant.headers, statuses)
    # The fuzzer reached the handlers (not only the 4xx of validation).
    assert {200, 201, 404, 422} <= set(statuses)
