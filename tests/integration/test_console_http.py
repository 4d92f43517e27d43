"""The console over HTTP on the real app and test database: admin keys, the session cookie,
CSRF on every POST, error pages, workspace filters, audit, htmx fragments, the throughput
buckets, and the deployment secret's rules (none: sign-in refused; malformed: no start)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import safe_support
from console_support import console_settings, csrf_token, running_job
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import text
from test_api_support import Tenant, held_job, make_tenant

from scheduler.dev import processes
from scheduler.http.app import create_app
from scheduler.http.console import reads
from scheduler.http.console.sessions import (
    SESSION_COOKIE,
    new_session,
    sealer_from_settings,
)
from scheduler.jobs import keys, operations
from scheduler.webhooks.secretbox import MalformedSecretKey
from shared.db import Database
from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secret_settings(settings: Settings) -> Settings:
    return console_settings(settings)


@pytest.fixture(scope="module")
def app(secret_settings: Settings) -> Any:
    return create_app(secret_settings)


@pytest.fixture()
def client(app: Any) -> Iterator[TestClient]:
    """A fresh browser: no cookies."""
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def admin(db: Database) -> keys.NewKey:
    return keys.create_admin_key(db, "os:pytest")


@pytest.fixture(scope="module")
def tenant_a(db: Database) -> Tenant:
    return make_tenant(db, "cha", calls=6)


@pytest.fixture(scope="module")
def tenant_b(db: Database) -> Tenant:
    return make_tenant(db, "chb", calls=2)


def sign_in(client: TestClient, key: str, next_page: str = "") -> Any:
    page = client.get("/console/sign-in")
    return client.post("/console/sign-in", data={
        "csrf_token": csrf_token(page.text), "key": key, "next": next_page})


@pytest.fixture()
def signed(client: TestClient, admin: keys.NewKey) -> TestClient:
    assert sign_in(client, admin.key).status_code == 303
    return client


def page_token(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return csrf_token(page.text)


def job_state(db: Database, job_id: str) -> str:
    with db.transaction() as tx:
        return str(tx.execute(text("SELECT state FROM backfill_jobs WHERE id = :id"),
                              {"id": job_id}).scalar_one())


def set_cookie_headers(response: Any) -> list[str]:
    return [value for name, value in response.headers.multi_items() if name == "set-cookie"]


# --------------------------------------------------------------------------- admin keys


def test_admin_keys_from_the_cli(settings: Settings) -> None:
    env = {**os.environ, "DATABASE_URL": settings.require_database_url(),
           "BROKER_URL": settings.require_broker_url()}

    def backfill(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(processes.backfill_command(*args), env=env, capture_output=True,
                              text=True, timeout=120)

    made = backfill("api-key", "create", "--admin", "--json")
    assert made.returncode == 0, made.stderr
    document = json.loads(made.stdout)
    assert document["admin"] is True and document["workspace_id"] is None
    assert document["key"].startswith("bfk_") and document["key_id"].startswith("key_")
    for bad in (("--admin", "--workspace", "ws_x"), ()):
        refused = backfill("api-key", "create", *bad)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("error: give exactly one of --workspace W")
    revoked = backfill("api-key", "revoke", document["key_id"])
    assert revoked.returncode == 0 and "(admin key): revoked" in revoked.stdout


def test_an_admin_key_opens_no_v1_endpoint(client: TestClient, admin: keys.NewKey) -> None:
    response = client.get("/v1/backfills", headers={"Authorization": f"Bearer {admin.key}"})
    assert response.status_code == 401


def test_the_schema_ties_admin_to_having_no_workspace(db: Database, tenant_a: Tenant) -> None:
    with pytest.raises(Exception, match="admin_has_no_workspace"), db.transaction() as tx:
        tx.execute(text("UPDATE api_keys SET admin = true WHERE id = :id"),
                   {"id": tenant_a.key_id})


# --------------------------------------------------------------------------- sign-in


def test_sign_in_sets_a_strict_http_only_session_cookie(client: TestClient, db: Database,
                                                        admin: keys.NewKey) -> None:
    response = sign_in(client, admin.key)
    assert response.status_code == 303 and response.headers["location"] == "/console/jobs"
    session = next(h for h in set_cookie_headers(response) if h.startswith(SESSION_COOKIE))
    attributes = {part.strip().split("=")[0].lower() for part in session.split(";")}
    assert {"httponly", "max-age", "path"} <= attributes and "secure" not in attributes
    assert "samesite=strict" in session.lower() and "path=/console" in session.lower()
    assert "max-age=28800" in session.lower()
    value = session.split(";")[0].split("=", 1)[1]
    assert admin.key not in value and admin.key_id not in value  # sealed, not readable
    assert client.get("/console/jobs").status_code == 200
    with db.transaction() as tx:
        actors = tx.execute(text("SELECT actor FROM audit_events WHERE action = "
                                 "'console_sign_in' AND workspace_id IS NULL")).scalars().all()
    assert f"api_key:{admin.key_id}" in actors


def test_the_cookie_is_secure_over_https(app: Any, admin: keys.NewKey) -> None:
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        response = sign_in(client, admin.key)
    session = next(h for h in set_cookie_headers(response) if h.startswith(SESSION_COOKIE))
    assert "secure" in session.lower()


@pytest.mark.parametrize("which", ["unknown", "workspace", "revoked"])
def test_sign_in_refuses_every_key_but_a_live_admin_key(client: TestClient, db: Database,
                                                        tenant_a: Tenant, which: str) -> None:
    key = {"unknown": "bfk_" + "x" * 43, "workspace": tenant_a.key}.get(which)
    if key is None:
        revoked = keys.create_admin_key(db, "os:pytest")
        keys.revoke_key(db, revoked.key_id, "os:pytest")
        key = revoked.key
    response = sign_in(client, key)
    assert response.status_code == (403 if which == "workspace" else 401)
    assert not [h for h in set_cookie_headers(response) if h.startswith(f"{SESSION_COOKIE}=")]
    message = "workspace key" if which == "workspace" else "unknown or revoked"
    assert message in response.text
    assert client.get("/console/jobs").status_code == 303


def test_sign_in_needs_the_form_token_of_its_own_cookie(client: TestClient,
                                                        admin: keys.NewKey) -> None:
    client.get("/console/sign-in")
    for token in ("", "forged"):
        response = client.post("/console/sign-in", data={"csrf_token": token, "key": admin.key})
        assert response.status_code == 403 and 'data-error-page="403"' in response.text
        assert 'href="/console/sign-in"' in response.text  # the way back
    page = client.get("/console/sign-in")
    client.cookies.clear()  # a token copied from the page, posted without its cookie
    response = client.post("/console/sign-in", data={
        "csrf_token": csrf_token(page.text), "key": admin.key})
    assert response.status_code == 403


@pytest.mark.parametrize("target", ["https://elsewhere.example/", "//elsewhere.example/",
                                    "/v1/backfills", "/console\\..\\x"])
def test_sign_in_goes_back_only_to_console_pages(client: TestClient, admin: keys.NewKey,
                                                 target: str) -> None:
    response = sign_in(client, admin.key, target)
    assert response.headers["location"] == "/console/jobs"


def test_sign_in_returns_to_the_page_asked_for(client: TestClient, admin: keys.NewKey,
                                               tenant_a: Tenant, db: Database) -> None:
    job_id = held_job(db, tenant_a, state="paused", pending=(tenant_a.call_ids[0],))
    asked = client.get(f"/console/jobs/{job_id}")
    assert asked.status_code == 303
    sign_in_url = asked.headers["location"]
    page = client.get(sign_in_url)
    assert f'value="/console/jobs/{job_id}"' in page.text
    response = client.post("/console/sign-in", data={
        "csrf_token": csrf_token(page.text), "key": admin.key, "next": f"/console/jobs/{job_id}"})
    assert response.headers["location"] == f"/console/jobs/{job_id}"


def test_sign_out_ends_the_session(signed: TestClient) -> None:
    response = signed.post("/console/sign-out",
                           data={"csrf_token": page_token(signed, "/console/jobs")})
    assert response.status_code == 303
    assert response.headers["location"] == "/console/sign-in?status=signed-out"
    assert "You are signed out" in signed.get(response.headers["location"]).text
    assert signed.get("/console/jobs").status_code == 303


def test_a_revoked_key_ends_its_session(client: TestClient, db: Database) -> None:
    key = keys.create_admin_key(db, "os:pytest")
    sign_in(client, key.key)
    assert client.get("/console/jobs").status_code == 200
    keys.revoke_key(db, key.key_id, "os:pytest")
    response = client.get("/console/jobs")
    assert response.status_code == 303 and "/console/sign-in" in response.headers["location"]


def test_forged_altered_and_expired_cookies_do_not_open(client: TestClient,
                                                        secret_settings: Settings,
                                                        admin: keys.NewKey) -> None:
    sealer = sealer_from_settings(secret_settings)
    assert sealer is not None
    genuine = sealer.seal_session(new_session(admin.key_id))
    other = sealer_from_settings(console_settings(secret_settings))
    assert other is not None
    # An old session: sealed nine hours ago (sessions last eight).
    nine_hours_ago = int(time.time()) - 9 * 3600
    payload = json.dumps({"p": "session", "k": admin.key_id, "c": "x"}).encode()
    expired = sealer._fernet.encrypt_at_time(payload, nine_hours_ago).decode()  # noqa: SLF001
    for cookie in (genuine[:-4] + "AAAA", other.seal_session(new_session(admin.key_id)),
                   sealer.seal_sign_in("token"), expired, "not-a-token"):
        client.cookies.set(SESSION_COOKIE, cookie, path="/console")
        assert client.get("/console/jobs").status_code == 303, cookie
    client.cookies.set(SESSION_COOKIE, genuine, path="/console")
    assert client.get("/console/jobs").status_code == 200


# --------------------------------------------------------------------------- the secret


def test_without_a_secret_key_sign_in_is_refused_and_says_how(settings: Settings,
                                                              admin: keys.NewKey) -> None:
    bare = settings.model_copy(update={"secret_key": None})
    with TestClient(create_app(bare), follow_redirects=False) as client:
        page = client.get("/console/sign-in")
        assert page.status_code == 503
        assert "BACKFILL_SECRET_KEY" in page.text and "backfill secret-key" in page.text
        assert 'name="key"' not in page.text
        posted = client.post("/console/sign-in", data={"key": admin.key})
        assert posted.status_code == 503 and "BACKFILL_SECRET_KEY" in posted.text
        assert not set_cookie_headers(posted)
        assert client.get("/console/jobs").status_code == 303


def test_a_malformed_secret_key_stops_the_api_at_start(settings: Settings) -> None:
    bad = settings.model_copy(update={"secret_key": SecretStr("not-a-fernet-key")})
    with pytest.raises(MalformedSecretKey, match="must be a Fernet key"):
        create_app(bad)
    port = processes.free_port()
    result = subprocess.run(
        processes.backfill_command("api", "--port", str(port)),
        env={**os.environ, "DATABASE_URL": settings.require_database_url(),
             "BROKER_URL": settings.require_broker_url(),
             "BACKFILL_SECRET_KEY": "not-a-fernet-key"},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: BACKFILL_SECRET_KEY must be a Fernet")
    assert "not-a-fernet-key" not in result.stderr


def test_rotating_keeps_sessions_open(settings: Settings, admin: keys.NewKey) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = sealer_from_settings(settings.model_copy(update={"secret_key": SecretStr(old)}))
    after = sealer_from_settings(settings.model_copy(
        update={"secret_key": SecretStr(f"{new},{old}")}))
    assert before is not None and after is not None
    session = new_session(admin.key_id)
    assert after.open_session(before.seal_session(session)) == session


# --------------------------------------------------------------------------- CSRF


def test_every_post_needs_the_session_csrf_token(signed: TestClient, db: Database,
                                                 tenant_a: Tenant) -> None:
    job_id = running_job(db, tenant_a, running=(tenant_a.call_ids[1],))
    for action in ("pause", "cancel", "requeue"):
        for token in (None, "", "stale"):
            data = {"confirm": "yes"} | ({} if token is None else {"csrf_token": token})
            response = signed.post(f"/console/jobs/{job_id}/{action}", data=data)
            assert response.status_code == 403, (action, token)
            assert "nothing was changed" in response.text
            assert f'href="/console/jobs/{job_id}"' in response.text
    assert job_state(db, job_id) == "running"
    refused = signed.post("/console/sign-out", data={"csrf_token": "stale"})
    assert refused.status_code == 403
    assert signed.get("/console/jobs").status_code == 200  # still signed in


def test_a_post_without_a_session_changes_nothing(client: TestClient, db: Database,
                                                  tenant_a: Tenant) -> None:
    job_id = running_job(db, tenant_a, running=(tenant_a.call_ids[2],))
    response = client.post(f"/console/jobs/{job_id}/pause", data={"csrf_token": "x"})
    assert response.status_code == 403 and "session has ended" in response.text
    assert job_state(db, job_id) == "running"


# --------------------------------------------------------------------------- actions


def test_actions_act_as_the_admin_key_and_say_what_they_did(
        signed: TestClient, db: Database, tenant_a: Tenant, admin: keys.NewKey) -> None:
    job_id = running_job(db, tenant_a, running=(tenant_a.call_ids[3],),
                         pending=(tenant_a.call_ids[4],))
    job_url = f"/console/jobs/{job_id}"
    response = signed.post(f"{job_url}/pause", data={
        "csrf_token": page_token(signed, job_url), "reason": "provider incident"})
    assert response.status_code == 303
    assert response.headers["location"] == f"{job_url}?done=pause#notice"
    assert "Paused" in signed.get(response.headers["location"]).text
    assert job_state(db, job_id) == "paused"

    conflict = signed.post(f"{job_url}/pause", data={"csrf_token": page_token(signed, job_url)})
    assert conflict.status_code == 409 and "cannot move it to paused" in conflict.text

    token = page_token(signed, job_url)
    asked = signed.post(f"{job_url}/cancel", data={"csrf_token": token})
    assert asked.status_code == 200 and 'data-confirm-action="cancel"' in asked.text
    assert "1 pending or queued session(s) will end as" in asked.text
    assert job_state(db, job_id) == "paused"  # asking changes nothing
    done = signed.post(f"{job_url}/cancel", data={"csrf_token": token, "confirm": "yes"})
    assert done.status_code == 303 and job_state(db, job_id) == "cancelled"

    with db.transaction() as tx:
        events = tx.execute(text("SELECT action, actor, reason FROM audit_events "
                                 "WHERE job_id = :j ORDER BY id"), {"j": job_id}).all()
    assert [(e.action, e.actor, e.reason) for e in events] == [
        ("pause", f"api_key:{admin.key_id}", "provider incident"),
        ("cancel", f"api_key:{admin.key_id}", None)]


def test_requeue_can_take_one_error_kind(signed: TestClient, db: Database,
                                         tenant_a: Tenant) -> None:
    job_id = held_job(db, tenant_a, state="paused", failed=tuple(tenant_a.call_ids[:2]))
    with db.transaction() as tx:
        tx.execute(text("UPDATE backfill_items SET error_kind = 'llm_timeout' "
                        "WHERE job_id = :j AND session_id = :s"),
                   {"j": job_id, "s": tenant_a.call_ids[0]})
    page = signed.get(f"/console/jobs/{job_id}")
    assert 'name="error_kind"' in page.text
    response = signed.post(f"/console/jobs/{job_id}/requeue", data={
        "csrf_token": csrf_token(page.text), "error_kind": "llm_timeout"})
    assert response.headers["location"].endswith("done=requeue&count=1#notice")
    with db.transaction() as tx:
        states = dict(tx.execute(text("SELECT session_id, state FROM backfill_items "
                                      "WHERE job_id = :j"), {"j": job_id}).all())
    assert states == {tenant_a.call_ids[0]: "pending", tenant_a.call_ids[1]: "failed"}


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("path", [
    "/console/jobs/bf_missing", "/console/sessions/call_missing", "/console/nothing-here",
    "/console/jobs/" + "x" * 300, "/console/jobs/bf%00x", "/console/jobs/bf_missing/live"])
def test_unknown_things_are_404_pages(signed: TestClient, path: str) -> None:
    response = signed.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert 'data-error-page="404"' in response.text and 'href="/console/jobs"' in response.text


@pytest.mark.parametrize(("path", "needle"), [
    ("/console/jobs?state=stuck", "state: must be one of"),
    ("/console/jobs?cursor=garbage", "cursor: not a cursor"),
    ("/console/sessions?session_id=", "give a call_id or chat_id"),
])
def test_bad_queries_are_422_pages(signed: TestClient, path: str, needle: str) -> None:
    response = signed.get(path)
    assert response.status_code == 422 and needle in response.text


def test_bad_forms_are_refused(signed: TestClient, db: Database, tenant_a: Tenant) -> None:
    job_id = running_job(db, tenant_a, running=(tenant_a.call_ids[5],))
    url = f"/console/jobs/{job_id}/pause"
    token = page_token(signed, f"/console/jobs/{job_id}")
    as_json = signed.post(url, json={"csrf_token": token})
    assert as_json.status_code == 422 and "expected a form" in as_json.text
    huge = signed.post(url, data={"csrf_token": token, "reason": "x" * 20_000})
    assert huge.status_code == 413
    twice = signed.post(url, content=f"csrf_token={token}&csrf_token={token}",
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert twice.status_code == 422 and "more than once" in twice.text
    unknown = signed.post(f"/console/jobs/{job_id}/explode", data={"csrf_token": token})
    assert unknown.status_code == 404
    assert job_state(db, job_id) == "running"


# --------------------------------------------------------------------------- reading


def test_a_workspace_filter_shows_nothing_of_another_workspace(
        signed: TestClient, db: Database, tenant_a: Tenant, tenant_b: Tenant) -> None:
    job_a = held_job(db, tenant_a, state="paused", pending=(tenant_a.call_ids[0],))
    job_b = held_job(db, tenant_b, state="paused", pending=(tenant_b.call_ids[0],))
    everything = signed.get("/console/jobs").text
    assert job_a in everything and job_b in everything
    only_b = signed.get(f"/console/jobs?workspace={tenant_b.workspace_id}").text
    assert job_b in only_b
    assert job_a not in only_b and tenant_a.workspace_id not in only_b
    paused = signed.get(f"/console/jobs?workspace={tenant_b.workspace_id}&state=completed")
    assert job_b not in paused.text and "No job matches these filters" in paused.text


def test_pages_carry_the_security_headers(signed: TestClient) -> None:
    response = signed.get("/console/jobs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    script = signed.get("/console/static/htmx.min.js")
    assert script.status_code == 200 and "Zero-Clause BSD" in script.text[:400]


def test_polls_get_fragments_and_stop_when_the_job_rests(signed: TestClient, db: Database,
                                                         tenant_a: Tenant) -> None:
    job_id = running_job(db, tenant_a, running=(tenant_a.call_ids[0],))
    hx = {"HX-Request": "true"}
    live = signed.get(f"/console/jobs/{job_id}/live", headers=hx)
    assert live.status_code == 200 and "<html" not in live.text
    assert 'hx-trigger="every 3s"' in live.text and 'data-action="pause"' in live.text
    jobs = signed.get("/console/jobs", headers=hx)
    assert "<html" not in jobs.text and f'data-job-id="{job_id}"' in jobs.text
    assert "hx-trigger" in jobs.text  # a job on the page runs: keep polling
    signed.post(f"/console/jobs/{job_id}/pause",
                data={"csrf_token": page_token(signed, f"/console/jobs/{job_id}")})
    rested = signed.get(f"/console/jobs/{job_id}/live", headers=hx)
    assert "hx-trigger" not in rested.text and 'data-action="resume"' in rested.text


def test_an_expired_session_turns_a_poll_into_a_redirect(client: TestClient) -> None:
    response = client.get("/console/jobs", headers={"HX-Request": "true"})
    assert response.status_code == 200 and response.headers["hx-redirect"] == "/console/sign-in"


def test_throughput_buckets_count_finished_items_by_outcome(signed: TestClient, db: Database,
                                                            tenant_a: Tenant) -> None:
    job_id = held_job(db, tenant_a, state="completed", failed=(tenant_a.call_ids[0],),
                      pending=tuple(tenant_a.call_ids[1:4]))
    start = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
    finishes = {tenant_a.call_ids[0]: ("failed", start + timedelta(seconds=3)),
                tenant_a.call_ids[1]: ("succeeded", start + timedelta(seconds=4)),
                tenant_a.call_ids[2]: ("succeeded", start + timedelta(seconds=95)),
                tenant_a.call_ids[3]: ("skipped", start + timedelta(seconds=96))}
    with db.transaction() as tx:
        for session_id, (state, finished_at) in finishes.items():
            tx.execute(text("UPDATE backfill_items SET state = :s, finished_at = :f "
                            "WHERE job_id = :j AND session_id = :sid"),
                       {"s": state, "f": finished_at, "j": job_id, "sid": session_id})
        throughput = reads.throughput(tx, job_id)
    assert throughput.width_s == 2  # 93 s of finishes, at most 60 bars
    counts = {bucket.start.astimezone(UTC): bucket.counts for bucket in throughput.buckets}
    assert counts[start + timedelta(seconds=2)] == {"failed": 1}
    assert counts[start + timedelta(seconds=4)] == {"succeeded": 1}
    assert counts[start + timedelta(seconds=94)] == {"succeeded": 1}
    assert counts[start + timedelta(seconds=96)] == {"skipped": 1}
    assert sum(bucket.total for bucket in throughput.buckets) == 4
    assert len(throughput.buckets) == 48  # every bucket from 12:00:02 to 12:01:36, quiet ones too
    page = signed.get(f"/console/jobs/{job_id}").text
    bars = re.findall(r'<rect [^>]*data-state="(\w+)" data-n="(\d+)"', page)
    assert sorted(bars) == [("failed", "1"), ("skipped", "1"), ("succeeded", "1"),
                            ("succeeded", "1")]
    assert "4 sessions finished between 2026-01-05 12:00:02 UTC" in page


def test_the_session_page_shows_analysis_provenance_and_history(
        signed: TestClient, db: Database, tenant_a: Tenant) -> None:
    page = signed.get(f"/console/sessions/{tenant_a.call_ids[0]}")
    assert page.status_code == 200
    assert 'data-provenance="imported"' in page.text and "old summary" in page.text
    assert "No run yet" in page.text
    lookup = signed.get(f"/console/sessions?session_id={tenant_a.call_ids[0]}")
    assert lookup.status_code == 303
    assert lookup.headers["location"] == f"/console/sessions/{tenant_a.call_ids[0]}"


def test_a_finished_job_shows_its_change_report_and_reverts_for_the_admin(
        signed: TestClient, db: Database, settings: Settings, pipeline: Any,
        admin: keys.NewKey) -> None:
    """The job page includes the change report's body; revert asks first (with the dry run's
    numbers), then puts every session's before back, audited as the admin key."""
    seeded = safe_support.seed(db, 3, label="console_revert")
    created = operations.create_job(db, settings, seeded.workspace_id, "call", [],
                                    actor="os:pytest")
    assert safe_support.wait_for_job(db, created.job_id).state == "completed"
    job_url = f"/console/jobs/{created.job_id}"
    page = signed.get(job_url)
    analysed = re.search(r'data-sessions="analysed"><span class="cr-stat-n">(\d+)<', page.text)
    assert analysed is not None and analysed.group(1) == "3"
    assert 'data-action="revert"' in page.text

    session_page = signed.get(f"/console/sessions/{seeded.analysable[0]}").text
    assert 'data-side="before"' in session_page and "imported summary" in session_page

    token = page_token(signed, job_url)
    asked = signed.post(f"{job_url}/revert", data={"csrf_token": token})
    assert asked.status_code == 200
    assert re.search(r'data-preview="reverted">3<', asked.text)
    assert safe_support.current(db, seeded.analysable)[seeded.analysable[0]][0] != (
        "imported summary")  # asking changes nothing
    done = signed.post(f"{job_url}/revert", data={"csrf_token": token, "confirm": "yes",
                                                  "reason": "wrong prompt"})
    assert done.status_code == 303
    assert "done=revert" in done.headers["location"] and "count=3" in done.headers["location"]
    restored = safe_support.current(db, seeded.analysable)
    assert {row[0] for row in restored.values()} == {"imported summary"}
    assert [(e.actor, e.reason) for e in safe_support.audit_of(db, created.job_id, "revert")] == [
        (f"api_key:{admin.key_id}", "wrong prompt")]
