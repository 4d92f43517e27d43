"""Registering webhooks through the real CLI (`backfill webhook add|list|remove`, processes of
their own) and the real HTTP app (`/v1/webhooks`): the secret shown once and stored
encrypted, the URL rule, tenancy, and the deployment's key (missing: refused; malformed:
the process stops)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import text
from test_api_support import Tenant, make_tenant

from scheduler.dev import processes
from scheduler.http.app import create_app
from scheduler.webhooks.registry import MAX_WEBHOOKS_PER_WORKSPACE
from scheduler.webhooks.secretbox import (
    MALFORMED_KEY_MESSAGE,
    NO_KEY_MESSAGE,
    SecretBox,
    new_secret_key,
)
from shared.db import Database
from shared.settings import Settings

pytestmark = pytest.mark.integration

KEY = new_secret_key()
# A public address, so the rule passes without a name server; nothing is ever sent to it
# (no job of these workspaces changes state, so no event is made).
PUBLIC_URL = "https://1.1.1.1/backfill-hook"
REFUSED = {
    "ftp://example.com/x": "url: scheme must be https",
    "http://1.1.1.1/x": "url: must use https://",
    "https://user:pw@1.1.1.1/x": "url: credentials",
    "https://127.0.0.1/x": "url: 127.0.0.1 is a loopback address",
    "https://10.1.2.3/x": "url: 10.1.2.3 is a private address",
    "https://169.254.169.254/latest": "url: 169.254.169.254 is a cloud metadata address",
    "https://localhost/x": "url: host localhost resolves to a loopback address",
    "https://" + "a" * 2050 + ".com/": "url: longer than 2048 characters",
    "https://exa mple.com/": "url: contains whitespace",
}


@pytest.fixture(scope="module")
def tenant(db: Database) -> Tenant:
    return make_tenant(db, "hooks", calls=1, chats=0)


@pytest.fixture(scope="module")
def other(db: Database) -> Tenant:
    return make_tenant(db, "hooksb", calls=1, chats=0)


def backfill(settings: Settings, *args: str, key: str | None = KEY, private: bool = True,
             expect: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFILL_")}
    env |= {"DATABASE_URL": settings.require_database_url(),
            "BACKFILL_WEBHOOK_ALLOW_PRIVATE": "true" if private else "false"}
    if key is not None:
        env["BACKFILL_SECRET_KEY"] = key
    result = subprocess.run(processes.backfill_command(*args), env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def stored(db: Database, workspace_id: str) -> list[Any]:
    with db.transaction() as tx:
        return tx.execute(text("""
            SELECT id, url, secret_encrypted, removed_at FROM webhooks
             WHERE workspace_id = :ws ORDER BY created_at
        """), {"ws": workspace_id}).all()


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# --------------------------------------------------------------------------- the key


def test_add_without_a_key_is_refused_saying_how_to_make_one(settings: Settings, db: Database,
                                                            tenant: Tenant) -> None:
    result = backfill(settings, "webhook", "add", "--workspace", tenant.workspace_id,
                      "--url", PUBLIC_URL, key=None, expect=2)
    assert one_line(result) == f"error: {NO_KEY_MESSAGE}"
    assert "backfill secret-key" in result.stderr
    assert stored(db, tenant.workspace_id) == []


def test_a_malformed_key_stops_the_verb_without_showing_it(settings: Settings, db: Database,
                                                          tenant: Tenant) -> None:
    malformed = "zz-not-a-fernet-key-zz"
    result = backfill(settings, "webhook", "add", "--workspace", tenant.workspace_id,
                      "--url", PUBLIC_URL, key=malformed, expect=3)
    assert one_line(result) == f"error: {MALFORMED_KEY_MESSAGE}"
    assert malformed not in result.stderr + result.stdout
    assert stored(db, tenant.workspace_id) == []


def test_a_malformed_key_stops_the_api_and_the_scheduler_at_start(settings: Settings) -> None:
    for verb in ("api", "scheduler"):
        env = {"BACKFILL_SECRET_KEY": "zz-malformed-zz", "BROKER_URL":
               settings.require_broker_url(), "BACKFILL_QUEUE": settings.queue_name}
        result = subprocess.run(processes.backfill_command(verb), capture_output=True,
                                text=True, timeout=120, env={
                                    **os.environ, "DATABASE_URL": settings.require_database_url(),
                                    **env})
        assert result.returncode == 3, (verb, result.stderr)
        assert one_line(result) == f"error: {MALFORMED_KEY_MESSAGE}"
        assert "zz-malformed-zz" not in result.stderr


def test_secret_key_prints_a_key_the_box_accepts(settings: Settings) -> None:
    printed = backfill(settings, "secret-key", key=None).stdout.strip()
    box = SecretBox.from_setting(printed)
    assert box.decrypt(box.encrypt("x")) == "x"


# --------------------------------------------------------------------------- the CLI


def test_add_list_remove_through_the_cli(settings: Settings, db: Database, tenant: Tenant,
                                         other: Tenant) -> None:
    added = json.loads(backfill(settings, "webhook", "add", "--workspace", tenant.workspace_id,
                                "--url", "HTTP://127.0.0.1:8080/Hook?x=1#part", "--json").stdout)
    assert set(added) == {"id", "url", "secret"}
    assert added["id"].startswith("wh_") and added["secret"].startswith("whsec_")
    assert added["url"] == "http://127.0.0.1:8080/Hook?x=1"  # normalised, fragment dropped
    (row,) = stored(db, tenant.workspace_id)
    assert row.secret_encrypted != added["secret"] and added["secret"] not in row.secret_encrypted
    assert SecretBox.from_setting(KEY).decrypt(row.secret_encrypted) == added["secret"]

    plain = backfill(settings, "webhook", "add", "--workspace", tenant.workspace_id,
                     "--url", "http://127.0.0.1:8080/second")
    assert "secret  whsec_" in plain.stdout and "shown once" in plain.stderr

    listed = json.loads(backfill(settings, "webhook", "list", "--workspace",
                                 tenant.workspace_id, "--json").stdout)
    assert [w["id"] for w in listed][0] == added["id"] and len(listed) == 2
    assert all("secret" not in w for w in listed)
    assert listed[0]["deliveries"] == {"pending": 0, "delivered": 0, "gave_up": 0}
    assert json.loads(backfill(settings, "webhook", "list", "--workspace",
                               other.workspace_id, "--json").stdout) == []
    assert added["id"] in backfill(settings, "webhook", "list").stdout

    removed = backfill(settings, "webhook", "remove", added["id"])
    assert f"{added['id']} of workspace {tenant.workspace_id}: removed" in removed.stdout
    listed = json.loads(backfill(settings, "webhook", "list", "--workspace",
                                 tenant.workspace_id, "--json").stdout)
    assert added["id"] not in [w["id"] for w in listed]
    again = backfill(settings, "webhook", "remove", added["id"], expect=2)
    assert one_line(again) == f"error: no webhook {added['id']!r}"


@pytest.mark.parametrize("url", ["ftp://example.com/x", "https://user:pw@1.1.1.1/x",
                                 "https://10.1.2.3/x"])
def test_the_cli_refuses_urls_naming_the_problem(settings: Settings, db: Database,
                                                 other: Tenant, url: str) -> None:
    before = stored(db, other.workspace_id)
    result = backfill(settings, "webhook", "add", "--workspace", other.workspace_id,
                      "--url", url, private=False, expect=2)
    assert one_line(result).startswith(f"error: {REFUSED[url]}")
    assert stored(db, other.workspace_id) == before


def test_the_cli_refuses_an_unknown_workspace_and_id(settings: Settings) -> None:
    result = backfill(settings, "webhook", "add", "--workspace", "ws_nobody_here",
                      "--url", PUBLIC_URL, expect=2)
    assert one_line(result) == "error: workspace: no workspace 'ws_nobody_here'"
    result = backfill(settings, "webhook", "remove", "wh_nothing", expect=2)
    assert one_line(result) == "error: no webhook 'wh_nothing'"


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    keyed = settings.model_copy(update={"secret_key": SecretStr(KEY)})
    with TestClient(create_app(keyed)) as test_client:
        yield test_client


def test_http_add_list_remove_and_tenancy(client: TestClient, db: Database,
                                          other: Tenant) -> None:
    tenant = make_tenant(db, "hookshttp", calls=1, chats=0)
    assert client.post("/v1/webhooks", json={"url": PUBLIC_URL}).status_code == 401
    added = client.post("/v1/webhooks", json={"url": PUBLIC_URL}, headers=tenant.headers)
    assert added.status_code == 201, added.text
    body = added.json()
    assert set(body) == {"id", "url", "secret"} and body["url"] == PUBLIC_URL

    listed = client.get("/v1/webhooks", headers=tenant.headers)
    assert listed.status_code == 200
    assert body["secret"] not in listed.text
    page = listed.json()
    assert page["next_cursor"] is None
    assert [(w["id"], w["workspace_id"], w["url"]) for w in page["items"]] == [
        (body["id"], tenant.workspace_id, PUBLIC_URL)]
    assert client.get("/v1/webhooks", headers=other.headers).json()["items"] == []

    assert client.delete(f"/v1/webhooks/{body['id']}", headers=other.headers).status_code == 404
    assert client.delete("/v1/webhooks/wh_nothing", headers=tenant.headers).status_code == 404
    assert client.delete("/v1/webhooks/" + "x" * 300, headers=tenant.headers).status_code == 404
    removed = client.delete(f"/v1/webhooks/{body['id']}", headers=tenant.headers)
    assert removed.status_code == 204 and removed.content == b""
    assert client.get("/v1/webhooks", headers=tenant.headers).json()["items"] == []
    gone = client.delete(f"/v1/webhooks/{body['id']}", headers=tenant.headers)
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found"
    with db.transaction() as tx:
        actions = tx.execute(text("SELECT action, details FROM audit_events WHERE "
                                  "workspace_id = :ws AND action LIKE 'webhook%' ORDER BY id"),
                             {"ws": tenant.workspace_id}).all()
    assert [(a.action, a.details) for a in actions] == [
        ("webhook_add", {"webhook_id": body["id"]}),
        ("webhook_remove", {"webhook_id": body["id"]})]


@pytest.mark.parametrize("url", sorted(REFUSED))
def test_http_refuses_urls_with_a_422_naming_them(client: TestClient, db: Database,
                                                  other: Tenant, url: str) -> None:
    before = stored(db, other.workspace_id)
    answer = client.post("/v1/webhooks", json={"url": url}, headers=other.headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["message"].startswith(REFUSED[url])
    assert stored(db, other.workspace_id) == before


@pytest.mark.parametrize("body", [{}, {"url": 5}, {"url": PUBLIC_URL, "extra": 1}, [],
                                  {"url": "https://1.1.1.1/\u0000"}])
def test_http_refuses_bodies_that_are_not_a_url(client: TestClient, other: Tenant,
                                                body: Any) -> None:
    answer = client.post("/v1/webhooks", json=body, headers=other.headers)
    assert answer.status_code == 422, answer.text


def test_http_without_a_key_is_503_saying_how_to_make_one(settings: Settings,
                                                          other: Tenant) -> None:
    with TestClient(create_app(settings.model_copy(update={"secret_key": None}))) as keyless:
        answer = keyless.post("/v1/webhooks", json={"url": PUBLIC_URL}, headers=other.headers)
        assert answer.status_code == 503
        assert answer.json()["error"] == {"type": "unavailable", "message": NO_KEY_MESSAGE}
        assert keyless.get("/v1/webhooks", headers=other.headers).status_code == 200


def test_a_workspace_has_at_most_so_many_webhooks(client: TestClient, db: Database) -> None:
    tenant = make_tenant(db, "hooksmax", calls=1, chats=0)
    for _ in range(MAX_WEBHOOKS_PER_WORKSPACE):
        assert client.post("/v1/webhooks", json={"url": PUBLIC_URL},
                           headers=tenant.headers).status_code == 201
    answer = client.post("/v1/webhooks", json={"url": PUBLIC_URL}, headers=tenant.headers)
    assert answer.status_code == 422
    assert "remove one first" in answer.json()["error"]["message"]
